"""``vla-distill collect``: record scripted-expert demonstrations to HDF5."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from vla_distill import __version__
from vla_distill.cli.common import add_suite_options, add_worker_option, check_image_size, progress_bar, require_positive, selected_tasks
from vla_distill.data.demos import Episode, EpisodeWriter
from vla_distill.evaluation import episode_seeds
from vla_distill.rollout import ExpertPolicy, run_episodes
from vla_distill.sim import SUITES
from vla_distill.sim.tabletop.env import ACTION_NAMES, STATE_NAMES

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record scripted-expert demonstrations to an HDF5 file",
        description="Run the scripted expert on seeded episodes and append each finished episode to "
        "an HDF5 file. An interrupted run keeps every finished episode; --resume completes it.",
    )
    add_suite_options(parser)
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 of every task; episode i uses seed+i (default: 0)")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. demos.h5")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to the executed expert actions, in action units; the clean action is recorded (default: 0.0)")
    parser.add_argument("--resume", action="store_true", help="append to an existing file, skipping the (task, seed) pairs it already contains")
    add_worker_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require_positive("--episodes", args.episodes)
    require_positive("--num-envs", args.num_envs)
    check_image_size(args.image_size)
    if args.noise < 0:
        raise ValueError(f"--noise must be >= 0 (a standard deviation in action units), got {args.noise}")
    tasks = selected_tasks(args)
    config = {"suite": args.suite, "tasks": tasks, "episodes": args.episodes, "seed": args.seed, "noise": args.noise, "image_size": args.image_size}
    attrs = {"env_id": SUITES[args.suite], "config": config, "state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES), "vla_distill_version": __version__}
    with EpisodeWriter(args.out, args.image_size, len(STATE_NAMES), attrs, resume=args.resume) as writer:
        done = writer.recorded()
        todo = [(t, s) for t in tasks for s in episode_seeds(args.seed, args.episodes) if (t, s) not in done]
        logger.info("collecting %d episodes into %s (%d already there)", len(todo), args.out, len(done))
        bar = progress_bar(len(todo), "collect")

        def save(record):
            writer.append(Episode(record.task, record.instruction, record.seed, record.success, np.stack(record.images), np.stack(record.states), np.stack(record.actions)))
            bar.update(1)
            logger.debug("saved episode %s seed %d (%d steps)", record.task, record.seed, record.steps)

        records = run_episodes(ExpertPolicy(args.noise), todo, num_envs=args.num_envs, image_size=args.image_size, record_steps=True, on_episode=save)
        bar.close()
        total = writer.n_episodes
    successes = sum(r.success for r in records)
    logger.info("wrote %d new episodes (%d successful); %s now contains %d episodes", len(records), successes, args.out, total)
    print(json.dumps({"out": str(args.out), "new_episodes": len(records), "new_successes": successes, "total_episodes": total}))
    return 0

