"""Export a policy checkpoint to ONNX, check it against PyTorch, optionally quantize, and report.

The steps: load the checkpoint, record real frames and trace the float32 graph. Then run
``onnx.checker`` with full_check and compare PyTorch with ONNX Runtime at batch sizes 1 and 4.
If requested, quantize to INT8 and compare the INT8 model with the float32 one. Last, write
``export_report.json`` beside the model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from vla_distill import __version__
from vla_distill.export.config import ExportConfig
from vla_distill.export.frames import FrameSet, frames_from_demos, frames_from_rollouts
from vla_distill.export.metadata import ExportMetadata
from vla_distill.export.onnx_policy import OnnxPolicy
from vla_distill.export.parity import ParityError, ParityResult, Runner, compare_runners
from vla_distill.export.quantization import quantize_model
from vla_distill.export.report import float32_report, int8_report, model_size_bytes, write_report
from vla_distill.export.torch_export import check_onnx_file, export_float32, needs_external_data
from vla_distill.policies.io import checkpoint_hash, load_policy

logger = logging.getLogger(__name__)


def policy_metadata(config, tokenizer_json: str, source_hash: str) -> ExportMetadata:
    """Return the metadata of a float32 export of a policy with this config and tokenizer."""
    return ExportMetadata(
        source_hash=source_hash,
        vla_distill_version=__version__,
        policy_kind=config.policy_kind,
        preset=config.preset,
        n_bins=config.n_bins,
        action_low=float(config.action_low),
        action_high=float(config.action_high),
        action_names=tuple(config.action_names),
        image_size=config.image_size,
        image_mean=tuple(float(value) for value in config.image_mean),
        image_std=tuple(float(value) for value in config.image_std),
        state_names=tuple(config.state_names),
        instruction_tokenizer=tokenizer_json,
        max_instruction_length=config.max_instruction_length,
    )


def torch_runner(policy, processor) -> Runner:
    """Return a runner that scores batched observations with the PyTorch policy."""
    action_tokenizer = policy.config.action_tokenizer()

    @torch.no_grad()
    def run(obs: dict):
        logits = policy(processor(obs)).action_logits
        return logits.numpy(), action_tokenizer.decode_logits(logits).numpy()

    return run


def onnx_runner(path: Path) -> Runner:
    """Return a runner that scores batched observations with ONNX Runtime on one thread."""
    policy = OnnxPolicy(path, intra_op_num_threads=1)

    def run(obs: dict):
        outputs = policy.run(obs)
        return outputs["action_logits"], outputs["actions"]

    return run


def load_frames(config: ExportConfig, image_size: int) -> FrameSet:
    """Record the expert rollouts that provide parity (and default calibration) frames."""
    return frames_from_rollouts(config.rollout_tasks, config.rollout_episodes, config.seed, image_size)


def calibration_frames(config: ExportConfig, frames: FrameSet, metadata: ExportMetadata) -> FrameSet | None:
    """Return the frames for static calibration, or None for the other modes.

    They come from the --calibration file if one is given, else from ``frames``.
    """
    if config.quantize != "static":
        return None
    source = frames_from_demos(config.calibration) if config.calibration else frames
    source.check_fits(metadata.image_size, metadata.state_dim)
    return source.subset(config.calibration_frames)


def export_policy(config: ExportConfig, frames: FrameSet | None = None) -> dict[str, Any]:
    """Run every export step for ``config`` and return the report that was written.

    ``frames`` replaces the expert rollouts as the source of parity frames. Raises
    ParityError, after writing the report, if the float32 graph misses the parity bounds.
    """
    policy, processor = load_policy(config.policy, num_threads=config.torch_threads)
    metadata = policy_metadata(policy.config, processor.tokenizer.to_str(), checkpoint_hash(config.policy))
    frames = frames if frames is not None else load_frames(config, policy.config.image_size)
    frames.check_fits(policy.config.image_size, policy.config.state_dim)
    parity_frames = frames.subset(config.parity_frames)
    calibration = calibration_frames(config, frames, metadata)
    external_data = needs_external_data(policy, config.external_data)
    config.out_path.parent.mkdir(parents=True, exist_ok=True)

    # The float32 model of an INT8 export is written next to the output, on the same disk.
    with tempfile.TemporaryDirectory(prefix=".vla-distill-export-", dir=config.out_path.parent) as workdir:
        float_path = config.out_path if config.quantize == "none" else Path(workdir) / "float32.onnx"
        export_float32(policy, processor, parity_frames, float_path, config.opset, metadata, external_data)
        check_onnx_file(float_path)
        parity = compare_runners(torch_runner(policy, processor), onnx_runner(float_path), parity_frames)
        report = float32_report(config, metadata, float_path, parity)
        log_parity("PyTorch vs float32 ONNX", parity)
        if not parity.passed:
            fail_parity(report, config, parity)
        if config.quantize != "none":
            report["int8"] = quantize_and_compare(config, float_path, calibration, parity_frames, external_data)
    report["size_bytes"] = model_size_bytes(config.out_path)
    write_report(report, config.report_path)
    return report


def quantize_and_compare(
    config: ExportConfig,
    float_path: Path,
    calibration: FrameSet | None,
    parity_frames: FrameSet,
    external_data: bool,
) -> dict[str, Any]:
    """Write the INT8 model to ``config.out`` and return its report section."""
    summary = quantize_model(
        float_path, config.out_path, config.quantize, calibration, config.quantize_action_head, external_data
    )
    check_onnx_file(config.out_path)
    parity = compare_runners(onnx_runner(float_path), onnx_runner(config.out_path), parity_frames)
    log_parity(f"float32 vs {config.quantize} INT8 ONNX", parity)
    return int8_report(summary, parity, model_size_bytes(float_path), model_size_bytes(config.out_path))


def log_parity(label: str, parity: ParityResult) -> None:
    logger.info(
        "%s: max abs logit difference %.3g, action agreement %.4f over %d frames at batch sizes %s",
        label,
        parity.max_abs_diff,
        parity.action_agreement,
        parity.frames,
        list(parity.batch_sizes),
    )


def fail_parity(report: dict[str, Any], config: ExportConfig, parity: ParityResult) -> None:
    """Write the failing report and raise ParityError that states by how much each bound was missed."""
    if config.quantize == "none":
        report["size_bytes"] = model_size_bytes(config.out_path)
    write_report(report, config.report_path)
    raise ParityError(
        f"the float32 ONNX graph does not match PyTorch on {parity.frames} frames: "
        + "; ".join(parity.failures())
        + f"; see {config.report_path}"
    )
