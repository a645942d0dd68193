"""Success-rate evaluation over seeded episodes, with Wilson confidence intervals."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from vla_distill.rollout import EpisodeRecord, run_episodes

logger = logging.getLogger(__name__)

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> list[float]:
    """Return the Wilson score interval [lo, hi] of a binomial proportion (Wilson, 1927)."""
    if trials == 0:
        return [0.0, 1.0]
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    # The bounds are exactly 0 and 1 at the extremes; rounding would otherwise leave ~1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return [low, high]


def episode_seeds(seed: int, n_episodes: int) -> list[int]:
    """Return the seeds of one task's episodes: episode i uses seed + i."""
    return [seed + i for i in range(n_episodes)]


def summarize(policy_name: str, suite: str, seed: int, n_episodes: int, records: Sequence[EpisodeRecord]) -> dict:
    """Build the eval_info dictionary from finished episodes."""
    per_task: dict[str, dict] = {}
    for task in dict.fromkeys(r.task for r in records):
        task_records = [r for r in records if r.task == task]
        wins = sum(r.success for r in task_records)
        per_task[task] = {
            "n_episodes": len(task_records),
            "success_rate": wins / len(task_records),
            "ci95": wilson_interval(wins, len(task_records)),
        }
    wins = sum(r.success for r in records)
    rate = wins / len(records) if records else 0.0
    return {
        "policy": policy_name,
        "suite": suite,
        "n_episodes": n_episodes,
        "seed": seed,
        "success_rate": rate,
        "pc_success": 100.0 * rate,
        "ci95": wilson_interval(wins, len(records)),
        "per_task": per_task,
        "episodes": [{"task": r.task, "seed": r.seed, "success": r.success, "steps": r.steps} for r in records],
    }


def evaluate(
    policy,
    tasks: Sequence[str],
    n_episodes: int,
    seed: int,
    num_envs: int = 1,
    image_size: int = 64,
    video_episodes: int = 0,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:
    """Run ``n_episodes`` seeded episodes of every task; the first ``video_episodes`` keep frames."""
    if n_episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {n_episodes}")
    seeds = episode_seeds(seed, n_episodes)
    episodes = [(task, s) for task in tasks for s in seeds]
    videos = [(task, s) for task in tasks for s in seeds[:video_episodes]]
    return run_episodes(
        policy,
        episodes,
        num_envs=num_envs,
        image_size=image_size,
        video_episodes=videos,
        on_episode=on_episode,
    )


def write_eval_info(info: dict, out_dir: str | Path) -> Path:
    """Write eval_info.json into out_dir and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval_info.json"
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path
