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
from vla_distill.rollout import ExpertLabelledPolicy, ExpertPolicy, run_episodes
from vla_distill.sim import SUITES
from vla_distill.sim.tabletop.env import ACTION_NAMES, STATE_NAMES

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record scripted-expert demonstrations to an HDF5 file",
        description="Run the scripted expert on seeded episodes and append each finished episode to "
        "an HDF5 file. With --driver, a policy drives instead and the expert labels every state it "
        "visits (DAgger). An interrupted run keeps every finished episode; --resume completes it.",
    )
    add_suite_options(parser)
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 of every task; episode i uses seed+i (default: 0)")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. demos.h5")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to the executed expert actions, in action units; the clean action is recorded (default: 0.0)")
    parser.add_argument("--driver", help="policy that drives the episodes while the expert labels them: 'reference', a checkpoint folder or a .onnx file (default: the expert drives)")
    parser.add_argument("--expert-share", type=float, default=0.0, help="with --driver, probability that the expert's action is executed instead of the driver's on each step (default: 0.0)")
    parser.add_argument("--resume", action="store_true", help="append to an existing file, skipping the (task, seed) pairs it already contains")
    add_worker_option(parser)
    parser.set_defaults(run=run)


def collection_policy(args: argparse.Namespace):
    """Return the noisy expert, or the driver labelled by the expert when --driver is given."""
    if args.driver is None:
        return ExpertPolicy(args.noise)
    if args.noise != 0.0:
        raise ValueError("--noise applies to the expert driving; with --driver use --expert-share instead")
    if args.driver == "expert":
        raise ValueError("--driver expert is the default; leave --driver out")
    from vla_distill.policy_loading import load_rollout_policy  # noqa: PLC0415  torch loads only when needed

    return ExpertLabelledPolicy(load_rollout_policy(args.driver), args.expert_share, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    require_positive("--episodes", args.episodes)
    require_positive("--num-envs", args.num_envs)
    check_image_size(args.image_size)
    if args.noise < 0:
        raise ValueError(f"--noise must be >= 0 (a standard deviation in action units), got {args.noise}")
    if args.driver is None and args.expert_share != 0.0:
        raise ValueError("--expert-share requires --driver")
    tasks = selected_tasks(args)
    policy = collection_policy(args)
    config = {"suite": args.suite, "tasks": tasks, "episodes": args.episodes, "seed": args.seed, "noise": args.noise, "image_size": args.image_size, "driver": args.driver, "expert_share": args.expert_share}
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

        records = run_episodes(policy, todo, num_envs=args.num_envs, image_size=args.image_size, record_steps=True, on_episode=save)
        bar.close()
        total = writer.n_episodes
    successes = sum(r.success for r in records)
    logger.info("wrote %d new episodes (%d successful); %s now contains %d episodes", len(records), successes, args.out, total)
    print(json.dumps({"out": str(args.out), "new_episodes": len(records), "new_successes": successes, "total_episodes": total}))
    return 0

