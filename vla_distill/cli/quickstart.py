"""``vla-distill quickstart``: the main job on the embedded default, end to end."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vla_distill.quickstart import PRESETS, QuickstartRun, remove_outputs, run_quickstart
from vla_distill.sim.tabletop.tasks import resolve_tasks


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="distill the reference teacher, export, evaluate, benchmark and write a report",
        description="Distill a teacher into the default student on the tabletop suite (with on-policy "
        "rounds), export float32 and INT8 ONNX, evaluate all four on the same seeded episodes, benchmark "
        "their latency and write DIR/report.md, DIR/summary.json and plots. Run it again with the same "
        "--out to continue an interrupted run.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--teacher", default="reference", help="teacher checkpoint folder or 'reference' (default: reference)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="run size; 'demo' evaluates fewer episodes than 'reference' (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of demonstrations and distillation; evaluation uses seed+1000 (default: 0)")
    parser.add_argument("--num-envs", type=int, default=2, help="environments stepped in parallel worker processes (default: 2)")
    parser.add_argument("--tasks", default="all", help="comma-separated tasks or families, or 'all' (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of continuing it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.num_envs < 1:
        raise ValueError(f"--num-envs must be at least 1, got {args.num_envs}")
    tasks = tuple(resolve_tasks(args.tasks))
    out = Path(args.out)
    if args.fresh:
        remove_outputs(out)

    def announce(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    command = (
        f"vla-distill quickstart --out {args.out} --teacher {args.teacher} --preset {args.preset} "
        f"--seed {args.seed} --num-envs {args.num_envs} --tasks {args.tasks}"
    )
    quickstart = QuickstartRun(
        out=out, teacher=args.teacher, preset_name=args.preset, seed=args.seed, num_envs=args.num_envs, tasks=tasks, command=command
    )
    summary = run_quickstart(quickstart, announce)
    keys = ("params_ratio", "speedup_p50", "success_retention")
    print(json.dumps({key: summary[key] for key in keys} | {"report": str(out / "report.md")}))
    return 0
