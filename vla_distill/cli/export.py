"""``vla-distill export``: write a policy as a self-contained ONNX file with a parity report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from vla_distill.export.config import QUANTIZATION_MODES, REPORT_FILE, ExportConfig
from vla_distill.export.parity import MAX_ABS_LOGIT_DIFF, MIN_ACTION_AGREEMENT, ParityError

EXIT_PARITY_FAILURE = 1
DEFAULTS = {field.name: field.default for field in dataclasses.fields(ExportConfig)}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a policy to ONNX, check it against PyTorch and optionally quantize it to INT8",
        description="Trace a teacher or student checkpoint into one ONNX file that takes raw uint8 "
        "camera images and returns action logits and decoded actions. The file carries the "
        "instruction tokenizer and the interface in its metadata. The command runs onnx.checker, "
        "compares PyTorch with ONNX Runtime on real frames from expert rollouts at batch sizes 1 "
        f"and 4, and writes {REPORT_FILE} beside the model. It exits with code 1 if the float32 "
        f"graph misses the parity bounds (max abs logit difference {MAX_ABS_LOGIT_DIFF:g}, "
        f"decoded-action agreement {MIN_ACTION_AGREEMENT:.1%}).",
    )
    add_model_options(parser)
    add_frame_options(parser)
    parser.add_argument(
        "--threads", type=int, default=None, help="PyTorch CPU threads during the export (default: torch's default)"
    )
    parser.set_defaults(run=run)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the source policy and the written model's format."""
    parser.add_argument(
        "--policy", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json) or 'reference'"
    )
    parser.add_argument("--out", required=True, help="output ONNX file, e.g. model.onnx")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATION_MODES,
        default=DEFAULTS["quantize"],
        help="'none' keeps float32, 'dynamic' stores MatMul/Gemm weights as int8, 'static' inserts "
        f"calibrated per-channel int8 QDQ around Conv/MatMul/Gemm (default: {DEFAULTS['quantize']})",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULTS["opset"], help=f"ONNX opset of the default domain (default: {DEFAULTS['opset']})"
    )
    parser.add_argument(
        "--external-data",
        action="store_true",
        help="store the weights in <out>.data beside the model (default: one self-contained file "
        "unless the weights exceed 2 GiB)",
    )


def add_frame_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the real frames for the parity check and calibration."""
    parser.add_argument(
        "--calibration",
        default=None,
        help="episode HDF5 file from `vla-distill collect` whose frames calibrate --quantize static "
        "(default: frames of the expert rollouts)",
    )
    parser.add_argument(
        "--parity-frames",
        type=int,
        default=DEFAULTS["parity_frames"],
        help=f"real frames compared between PyTorch and ONNX Runtime (default: {DEFAULTS['parity_frames']})",
    )
    parser.add_argument(
        "--calibration-frames",
        type=int,
        default=DEFAULTS["calibration_frames"],
        help=f"maximum frames used for static calibration (default: {DEFAULTS['calibration_frames']})",
    )
    parser.add_argument(
        "--tasks",
        default=DEFAULTS["rollout_tasks"],
        help="comma-separated tasks (e.g. lift-red) or families (e.g. push) of the expert rollouts "
        f"that provide parity and calibration frames, or 'all' (default: {DEFAULTS['rollout_tasks']})",
    )
    parser.add_argument(
        "--rollout-episodes",
        type=int,
        default=DEFAULTS["rollout_episodes"],
        help=f"expert episodes per task in those rollouts (default: {DEFAULTS['rollout_episodes']})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS["seed"],
        help="reset seed of the first expert episode of each task, and episode i uses seed + i "
        f"(default: {DEFAULTS['seed']})",
    )


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """Build the export config from parsed options."""
    return ExportConfig(
        policy=args.policy,
        out=args.out,
        quantize=args.quantize,
        calibration=args.calibration,
        opset=args.opset,
        external_data=args.external_data,
        parity_frames=args.parity_frames,
        calibration_frames=args.calibration_frames,
        rollout_tasks=args.tasks,
        rollout_episodes=args.rollout_episodes,
        seed=args.seed,
        torch_threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from vla_distill.export.exporter import export_policy  # noqa: PLC0415  torch loads only here

    try:
        report = export_policy(config)
    except ParityError as error:
        print(f"vla-distill export: parity check failed: {error}", file=sys.stderr)
        return EXIT_PARITY_FAILURE
    print(json.dumps(summary(report)))
    return 0


def summary(report: dict) -> dict:
    """Return the report fields printed on stdout."""
    keys = ("model", "quantization", "size_bytes", "max_abs_diff", "action_agreement", "batch_sizes_checked")
    result = {key: report[key] for key in keys}
    if report["int8"] is not None:
        result["int8_action_agreement_vs_float32"] = report["int8"]["action_agreement_vs_float32"]
    return result
