"""Load a policy for benchmarking with a given thread count, and describe its size."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def is_onnx(policy: str) -> bool:
    return str(policy).endswith(".onnx")


def load_predictor(policy: str, threads: int):
    """Return ``predict_action`` of the policy, running on ``threads`` intra-op threads."""
    if threads < 1:
        raise ValueError(f"thread counts must be at least 1, got {threads}")
    if is_onnx(policy):
        from vla_distill.export import OnnxPolicy  # noqa: PLC0415

        return OnnxPolicy(policy, intra_op_num_threads=threads).predict_action
    import torch  # noqa: PLC0415

    from vla_distill.policies import load_policy  # noqa: PLC0415

    torch.set_num_threads(threads)
    model, _ = load_policy(policy)
    return model.predict_action


def describe(policy: str, observation: dict) -> dict:
    """Return backend, parameter count, size on disk and FLOPs per batch-1 call."""
    from vla_distill.benchmarking.flops import onnx_flops, torch_flops  # noqa: PLC0415

    if is_onnx(policy):
        import onnx  # noqa: PLC0415

        from vla_distill.export import OnnxPolicy  # noqa: PLC0415

        OnnxPolicy(policy)  # raises one clear error for a missing or corrupted file
        model = onnx.load(policy, load_external_data=False)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) >= 1)
        return {"backend": "onnxruntime", "params": params, "size_bytes": onnx_size_bytes(policy), "flops": onnx_flops(policy)}
    from vla_distill.policies import load_policy  # noqa: PLC0415
    from vla_distill.policies.io import resolve_checkpoint  # noqa: PLC0415

    model, processor = load_policy(policy)
    weights = resolve_checkpoint(policy) / "model.safetensors"
    return {
        "backend": "torch",
        "params": sum(p.numel() for p in model.parameters()),
        "size_bytes": weights.stat().st_size,
        "flops": torch_flops(model, processor(observation)),
    }


def onnx_size_bytes(path: str) -> int:
    """Return the size of an ONNX file plus every external data file it references."""
    import onnx  # noqa: PLC0415

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in locations)
