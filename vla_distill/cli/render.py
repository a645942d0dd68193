"""``vla-distill render``: write a rollout video of one episode."""

from __future__ import annotations

import argparse
import json
import logging

from vla_distill.cli.common import require_positive
from vla_distill.policy_loading import load_rollout_policy
from vla_distill.rollout import run_episodes
from vla_distill.sim import suite_tasks
from vla_distill.sim.tabletop.tasks import parse_task
from vla_distill.video import check_video_path, write_video

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="write a rollout video of one episode",
        description="Run one seeded episode of a task and write the front camera to MP4 or GIF.",
    )
    parser.add_argument("--suite", default="tabletop", help="simulated suite (default: tabletop)")
    parser.add_argument("--task", required=True, help="task name, e.g. lift-red")
    parser.add_argument("--policy", default="expert", help="'expert', 'reference', a checkpoint folder or a .onnx file (default: expert)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    parser.add_argument("--out", required=True, help="output video file ending in .mp4 or .gif")
    parser.add_argument("--size", type=int, default=256, help="video height and width in pixels (default: 256)")
    parser.add_argument("--fps", type=int, default=20, help="video frame rate; 20 is real time (default: 20)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_video_path(args.out)
    require_positive("--fps", args.fps)
    if not 16 <= args.size <= 512:
        raise ValueError(f"--size must be between 16 and 512 pixels, got {args.size}")
    suite_tasks(args.suite)
    task = parse_task(args.task).name
    policy = load_rollout_policy(args.policy)
    (record,) = run_episodes(policy, [(task, args.seed)], video_episodes=[(task, args.seed)], render_size=args.size)
    path = write_video(args.out, record.frames, fps=args.fps)
    logger.info("%s seed %d: success=%s in %d steps; wrote %s", task, args.seed, record.success, record.steps, path)
    print(json.dumps({"out": str(path), "task": task, "seed": args.seed, "success": record.success, "steps": record.steps, "instruction": record.instruction}))
    return 0
