"""``vla-distill distill``: distill a teacher into a student with on-policy (DAgger) rounds."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

# Options that override one DistillConfig field each: (flag, field, type, metavar, help).
FIELD_OPTIONS = (
    ("--suite", "suite", str, "NAME", "simulated suite whose tasks are rolled out, e.g. tabletop"),
    ("--tasks", "tasks", str, "LIST", "comma-separated task names or families, or 'all'"),
    ("--rounds", "rounds", int, "R", "on-policy rounds after round 0"),
    ("--seed", "seed", int, "N", "seed of student initialisation, sample order, augmentation and action mixing"),
    ("--num-envs", "num_envs", int, "K", "environments stepped in parallel worker processes during rollouts"),
    ("--num-threads", "num_threads", int, "N", "torch intra-op CPU threads"),
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distill a teacher policy into a small student",
        description="Label round 0 (a demonstration file, or teacher rollouts) with the teacher, train the "
        "student on the cached labels, then run on-policy rounds: roll out the student with a decaying "
        "share of teacher actions, label every visited state with the teacher and train on all rounds. "
        "OUT gets labels-<key>.h5, checkpoints/, metrics.csv, rounds.csv, tb/ and, at the end, student/.",
    )
    parser.add_argument("--teacher", required=True, metavar="PATH", help="teacher checkpoint folder, or 'reference'")
    parser.add_argument(
        "--student-config",
        metavar="NAME_OR_JSON",
        help="distillation preset (student-small, student-tiny, student-reference, distill-test) or a JSON file of DistillConfig "
        "fields; required unless --resume, which defaults to OUT/distill_config.json",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder for labels, checkpoints, metrics and the student")
    parser.add_argument(
        "--demos",
        nargs="+",
        metavar="PATH",
        help="demonstration HDF5 files for round 0, joined into one dataset (default: round 0 rolls out the teacher)",
    )
    parser.add_argument(
        "--round0-from",
        metavar="RUN",
        help="copy round 0's labels from an earlier run folder of the same teacher whose round 0 labelled "
        "the same --demos files, instead of labelling them again (default: label them)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT from its newest checkpoint")
    for flag, field_name, value_type, metavar, text in FIELD_OPTIONS:
        parser.add_argument(flag, dest=field_name, type=value_type, metavar=metavar, help=f"{text} (default: the value in --student-config)")
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="STEP",
        help="stop with a checkpoint after STEP optimizer steps, keeping the schedule of the whole run; "
        "continue later with --resume (default: run to the end)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vla_distill.distill.config import load_distill_config
    from vla_distill.distill.pipeline import distill

    overrides = {field_name: getattr(args, field_name) for _, field_name, _, _, _ in FIELD_OPTIONS}
    config = load_distill_config(resolve_config_source(args), **overrides)
    result = distill(
        args.teacher,
        config,
        args.out,
        resume=args.resume,
        demos=args.demos,
        stop_after_step=args.stop_after,
        command=command_line(args),
        progress=sys.stderr.isatty(),
        round0_from=args.round0_from,
    )
    summary = {
        "out": str(result.out_dir),
        "finished": result.finished,
        "step": result.step,
        "student": None if result.student_dir is None else str(result.student_dir),
        "labels": str(result.label_path),
        "rounds": result.rounds,
    }
    print(json.dumps(summary, indent=2))
    return 0


def resolve_config_source(args: argparse.Namespace) -> str:
    """Return --student-config, or the saved config of the run when resuming without it."""
    if args.student_config is not None:
        return args.student_config
    if not args.resume:
        raise ValueError("--student-config is required unless --resume continues an existing run")
    from vla_distill.distill.pipeline import CONFIG_FILE

    saved = Path(args.out) / CONFIG_FILE
    if not saved.is_file():
        raise FileNotFoundError(f"cannot resume without --student-config: {saved} not found")
    return str(saved)


def command_line(args: argparse.Namespace) -> str:
    """Rebuild the command line of this run from its parsed options."""
    parts = ["vla-distill", "distill", "--teacher", args.teacher, "--out", args.out]
    if args.student_config is not None:
        parts += ["--student-config", args.student_config]
    if args.demos is not None:
        parts += ["--demos", *args.demos]
    if args.round0_from is not None:
        parts += ["--round0-from", args.round0_from]
    if args.resume:
        parts.append("--resume")
    for flag, field_name, _, _, _ in FIELD_OPTIONS:
        if getattr(args, field_name) is not None:
            parts += [flag, str(getattr(args, field_name))]
    if args.stop_after is not None:
        parts += ["--stop-after", str(args.stop_after)]
    return shlex.join(parts)
