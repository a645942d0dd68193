"""Turn a ``--policy`` value into something the rollout runner can drive.

Accepted values: ``expert`` (the scripted expert), a ``.onnx`` file, a policy checkpoint
folder, or ``reference`` (the shipped reference teacher).
"""

from __future__ import annotations

from pathlib import Path

from vla_distill.rollout import ExpertPolicy, ObservationPolicy


def load_rollout_policy(spec: str, expert_noise_std: float = 0.0, num_threads: int | None = None):
    """Return a policy object with ``act(envs, obs)`` and a ``name``."""
    if spec == "expert":
        return ExpertPolicy(expert_noise_std)
    if spec.endswith(".onnx"):
        from vla_distill.export import OnnxPolicy  # noqa: PLC0415  onnxruntime loads only when needed

        return ObservationPolicy(OnnxPolicy(spec, intra_op_num_threads=num_threads or 1), name=spec)
    path = Path(spec)
    if spec != "reference" and not path.exists():
        raise FileNotFoundError(
            f"policy {spec!r} not found; pass 'expert', 'reference', a checkpoint folder or a .onnx file"
        )
    from vla_distill.policies import load_policy  # noqa: PLC0415  torch loads only when needed

    model, _ = load_policy(spec, num_threads=num_threads)
    return ObservationPolicy(model, name=spec)
