"""``vla-distill collect``: record scripted-expert demonstrations to HDF5."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from vla_distill import __version__
from vla_distill.cli.common import add_suite_options, add_worker_option, check_image_size, progress_bar, require_positive, selected_tasks
from vla_distill.data.demos import Episode, EpisodeWriter, read_attrs
from vla_distill.evaluation import episode_seeds
from vla_distill.rollout import ExpertLabelledPolicy, ExpertPolicy, run_episodes
from vla_distill.sim import SUITES
from vla_distill.sim.tabletop.env import ACTION_NAMES, STATE_NAMES

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record expert demonstrations (or expert-labelled policy rollouts) to an HDF5 file",
        description="Run the scripted expert on seeded episodes and append each finished episode to "
        "an HDF5 file. With --driver, a policy drives instead and the expert labels every state it "
        "visits (DAgger). An interrupted run keeps every finished episode; --resume completes it.",
    )
    add_suite_options(parser)
    parser.add_argument("--episodes", type=int, required=True, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 of every task; episode i uses seed+i (default: 0)")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. demos.h5")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to the executed actions (the expert's, or with --driver the driver's), in action units; the clean expert action is recorded (default: 0.0)")
    parser.add_argument("--driver", help="policy that drives the episodes while the expert labels them: 'reference', a checkpoint folder or a .onnx file built for --image-size (default: the expert drives)")
    parser.add_argument("--expert-share", type=float, default=0.0, help="with --driver, probability that the expert's action is executed instead of the driver's on each step (default: 0.0)")
    parser.add_argument("--resume", action="store_true", help="append to an existing file, skipping the (task, seed) pairs it already contains")
    add_worker_option(parser)
    parser.set_defaults(run=run)


def check_driver_options(args: argparse.Namespace) -> None:
    """Raise ValueError for --driver and --expert-share values that cannot work together."""
    if args.driver is None:
        if args.expert_share != 0.0:
            raise ValueError("--expert-share requires --driver")
        return
    if args.driver == "expert":
        raise ValueError("the expert drives by default; leave out --driver (use --noise for a noisy expert)")
    if not 0.0 <= args.expert_share <= 1.0:
        raise ValueError(f"--expert-share must be in [0, 1], got {args.expert_share}")


def collection_policy(args: argparse.Namespace):
    """Return the noisy expert, or the driver labelled by the expert when --driver is given."""
    if args.driver is None:
        return ExpertPolicy(args.noise)
    from vla_distill.policy_loading import load_rollout_policy  # noqa: PLC0415  torch loads only when needed

    return ExpertLabelledPolicy(load_rollout_policy(args.driver), args.expert_share, args.noise)


def check_same_driver(path: Path, config: dict) -> None:
    """Raise ValueError if a file being resumed was collected with another driver, share or noise."""
    if not path.is_file():
        return
    stored = json.loads(read_attrs(path).get("config", "{}"))
    for key in ("driver", "expert_share", "noise"):
        before, now = stored.get(key), config[key]
        if (before or None) != (now or None):
            raise ValueError(f"cannot resume: {path} was collected with {key} {before!r}, requested {now!r}")


def remove_if_empty(path: Path) -> None:
    """Delete a file that this run created and that contains no finished episode."""
    if path.is_file() and read_attrs(path).get("n_episodes") == 0:
        path.unlink()


def run(args: argparse.Namespace) -> int:
    require_positive("--episodes", args.episodes)
    require_positive("--num-envs", args.num_envs)
    check_image_size(args.image_size)
    if not (np.isfinite(args.noise) and args.noise >= 0):
        raise ValueError(f"--noise must be >= 0 (a standard deviation in action units), got {args.noise}")
    check_driver_options(args)
    tasks = selected_tasks(args)
    config = {"suite": args.suite, "tasks": tasks, "episodes": args.episodes, "seed": args.seed, "noise": args.noise, "image_size": args.image_size, "driver": args.driver, "expert_share": args.expert_share}
    attrs = {"env_id": SUITES[args.suite], "config": config, "state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES), "vla_distill_version": __version__}
    out = Path(args.out)
    if args.resume:
        check_same_driver(out, config)
    created = not out.exists()
    try:
        records, total = collect_into(out, args, tasks, attrs)
    except BaseException:
        if created:
            remove_if_empty(out)
        raise
    successes = sum(r.success for r in records)
    logger.info("wrote %d new episodes (%d successful); %s now contains %d episodes", len(records), successes, out, total)
    print(json.dumps({"out": str(out), "new_episodes": len(records), "new_successes": successes, "total_episodes": total}))
    return 0


def episode_of(record) -> Episode:
    """Turn a recorded rollout into an Episode for the writer."""
    steps = {name: np.stack(getattr(record, name)) for name in ("images", "states", "actions", "target_offsets")}
    return Episode(record.task, record.instruction, record.seed, record.success, **steps)


def collect_into(out: Path, args: argparse.Namespace, tasks: list[str], attrs: dict):
    """Run the episodes that ``out`` lacks and append each one; return the new records and the total."""
    with EpisodeWriter(out, args.image_size, len(STATE_NAMES), attrs, resume=args.resume) as writer:
        policy = collection_policy(args)
        done = writer.recorded()
        todo = [(t, s) for t in tasks for s in episode_seeds(args.seed, args.episodes) if (t, s) not in done]
        logger.info("collecting %d episodes into %s (%d already there)", len(todo), out, len(done))
        bar = progress_bar(len(todo), "collect")

        def save(record):
            writer.append(episode_of(record))
            bar.update(1)
            logger.debug("saved episode %s seed %d (%d steps)", record.task, record.seed, record.steps)

        records = run_episodes(policy, todo, num_envs=args.num_envs, image_size=args.image_size, record_steps=True, on_episode=save)
        bar.close()
        return records, writer.n_episodes
