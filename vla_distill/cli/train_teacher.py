"""``vla-distill train-teacher``: behaviour cloning of a transformer teacher on demonstrations."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# Options that override one TrainConfig field each: (flag, field, type, metavar, help).
FIELD_OPTIONS = (
    ("--steps", "total_steps", int, "N", "total optimizer steps; the cosine schedule ends here"),
    ("--seed", "seed", int, "N", "seed of initialisation, data order, augmentation and dropout"),
    ("--batch-size", "batch_size", int, "N", "samples per optimizer step"),
    ("--lr", "lr", float, "LR", "peak AdamW learning rate after warm-up"),
    ("--num-threads", "num_threads", int, "N", "torch intra-op CPU threads"),
    ("--init-from", "init_from", str, "POLICY", "policy folder or 'reference' whose weights start the run (fine-tuning)"),
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-teacher",
        help="train a teacher policy by behaviour cloning on demonstrations",
        description="Train a transformer teacher with cross-entropy on binned expert actions "
        "(AdamW, linear warm-up then cosine decay, gradient clipping). The run folder gets "
        "checkpoints/, metrics.csv, tb/ (TensorBoard) and, at the end, final/ with the policy.",
    )
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="PATH",
        help="demonstration HDF5 files written by `vla-distill collect`; several files are joined into one dataset",
    )
    parser.add_argument(
        "--config",
        metavar="NAME_OR_JSON",
        help="training preset (teacher-tiny, teacher-small, teacher-reference, teacher-large) or a JSON "
        "file of TrainConfig fields; required unless --resume, which defaults to OUT/train_config.json",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder for checkpoints, metrics and the final policy")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints"
    )
    for flag, field_name, value_type, metavar, text in FIELD_OPTIONS:
        parser.add_argument(
            flag,
            dest=field_name,
            type=value_type,
            metavar=metavar,
            help=f"{text} (default: the value in --config)",
        )
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="STEP",
        help="stop with a checkpoint after STEP optimizer steps, keeping the schedule of --steps; "
        "continue later with --resume (default: run to the end)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vla_distill.training import load_train_config, train_teacher

    config_source = resolve_config_source(args)
    overrides = {field_name: getattr(args, field_name) for _, field_name, _, _, _ in FIELD_OPTIONS}
    config = load_train_config(config_source, **overrides)
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")

    result = train_teacher(
        config,
        args.data,
        args.out,
        resume=args.resume,
        stop_after_step=args.stop_after,
        command=command_line(args),
        progress=sys.stderr.isatty(),
    )
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "final": str(result.final_dir) if result.final_dir else None,
        "metrics": result.metrics,
    }
    print(json.dumps(summary, indent=2))
    return 0


def resolve_config_source(args: argparse.Namespace) -> str:
    """Return --config, or the saved config of the run when resuming without --config."""
    if args.config is not None:
        return args.config
    if not args.resume:
        raise ValueError("--config is required unless --resume continues an existing run")
    from vla_distill.policies.io import TRAIN_CONFIG_FILE

    saved = Path(args.out) / TRAIN_CONFIG_FILE
    if not saved.is_file():
        raise FileNotFoundError(f"cannot resume without --config: {saved} not found")
    return str(saved)


def command_line(args: argparse.Namespace) -> str:
    """Rebuild the command line of this run from its parsed options."""
    parts = ["vla-distill", "train-teacher", "--data", *args.data, "--out", args.out]
    if args.config is not None:
        parts += ["--config", args.config]
    if args.resume:
        parts.append("--resume")
    for flag, field_name, _, _, _ in FIELD_OPTIONS:
        if getattr(args, field_name) is not None:
            parts += [flag, str(getattr(args, field_name))]
    if args.stop_after is not None:
        parts += ["--stop-after", str(args.stop_after)]
    return shlex.join(parts)
