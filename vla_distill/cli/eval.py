"""``vla-distill eval``: success rate of a policy on seeded episodes."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vla_distill.cli.common import add_suite_options, add_worker_option, check_image_size, progress_bar, require_positive, selected_tasks
from vla_distill.evaluation import evaluate, summarize, write_eval_info
from vla_distill.policy_loading import load_rollout_policy
from vla_distill.video import write_video

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a policy's success rate on seeded episodes",
        description="Run N episodes per task, episode i with seed S+i, and write DIR/eval_info.json "
        "with success rates and Wilson 95% intervals. Every policy evaluated with the same N and S "
        "sees identical episodes.",
    )
    parser.add_argument("--policy", required=True, help="'expert', 'reference', a checkpoint folder or a .onnx file")
    add_suite_options(parser)
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (default: 50)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of episode 0 of every task (default: 1000)")
    parser.add_argument("--out", required=True, help="output folder for eval_info.json and videos")
    parser.add_argument("--videos", type=int, default=0, help="episodes per task saved as MP4 videos (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for policy inference (default: library default)")
    add_worker_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require_positive("--episodes", args.episodes)
    require_positive("--num-envs", args.num_envs)
    check_image_size(args.image_size)
    if args.threads is not None:
        require_positive("--threads", args.threads)
    if args.videos < 0:
        raise ValueError(f"--videos must be >= 0, got {args.videos}")
    tasks = selected_tasks(args)
    policy = load_rollout_policy(args.policy, num_threads=args.threads)
    bar = progress_bar(len(tasks) * args.episodes, "eval")
    records = evaluate(
        policy,
        tasks,
        args.episodes,
        args.seed,
        num_envs=args.num_envs,
        image_size=args.image_size,
        video_episodes=args.videos,
        on_episode=lambda record: bar.update(1),
    )
    bar.close()
    info = summarize(args.policy, args.suite, args.seed, args.episodes, records)
    path = write_eval_info(info, args.out)
    for record in records:
        if record.frames:
            write_video(Path(args.out) / "videos" / f"{record.task}_seed{record.seed}.mp4", record.frames)
    logger.info("success rate %.3f, 95%% CI [%.3f, %.3f]; wrote %s", info["success_rate"], *info["ci95"], path)
    print(json.dumps({"success_rate": info["success_rate"], "ci95": info["ci95"], "per_task": {t: v["success_rate"] for t, v in info["per_task"].items()}}))
    return 0
