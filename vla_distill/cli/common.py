"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from vla_distill.sim import SUITES, suite_tasks
from vla_distill.sim.tabletop.tasks import resolve_tasks


def add_suite_options(parser: argparse.ArgumentParser, tasks: bool = True) -> None:
    parser.add_argument(
        "--suite", default="tabletop", help=f"simulated suite; one of {', '.join(SUITES)} (default: tabletop)"
    )
    if tasks:
        parser.add_argument(
            "--tasks",
            default="all",
            help="comma-separated task names (e.g. lift-red), families (e.g. push) or 'all' (default: all)",
        )
    parser.add_argument("--image-size", type=int, default=64, help="camera image height and width in pixels (default: 64)")


def add_worker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-envs",
        type=int,
        default=1,
        help="environments stepped in parallel worker processes; 1 runs in this process (default: 1)",
    )


def selected_tasks(args: argparse.Namespace) -> list[str]:
    """Return the task names chosen by --suite and --tasks."""
    available = suite_tasks(args.suite)
    tasks = resolve_tasks(args.tasks)
    unknown = [task for task in tasks if task not in available]
    if unknown:
        raise ValueError(f"tasks {unknown} are not part of suite {args.suite!r}")
    return tasks


def progress_bar(total: int, description: str) -> tqdm:
    """Return a tqdm bar on stderr; it stays quiet when stderr is not a terminal."""
    return tqdm(total=total, desc=description, unit="episode", file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def require_positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def check_image_size(size: int) -> int:
    if not 16 <= size <= 512:
        raise ValueError(f"--image-size must be between 16 and 512 pixels, got {size}")
    return size
