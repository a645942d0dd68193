"""Measure tabletop env steps per second with 64x64 rendering, in one process and in K workers.

Usage: python benchmarks/env_throughput.py --steps 2000 --workers 1,2 --repeats 3 --out throughput.json

Every step renders the front camera (the observation), with random actions so the number
does not depend on a policy. Reported figures are medians over ``--repeats`` runs; the
worker processes' start-up is excluded from the timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

from vla_distill import __version__
from vla_distill.rollout import make_vector_env  # selects the OpenGL backend before mujoco loads

import mujoco  # noqa: E402  isort: skip


def measure(num_envs: int, steps: int, image_size: int) -> float:
    """Return environment steps per second (summed over the workers) for one run."""
    envs = make_vector_env(num_envs, image_size)
    try:
        envs.reset(seed=list(range(num_envs)))
        rng = np.random.default_rng(0)
        n_calls = max(1, steps // num_envs)
        start = time.perf_counter()
        for _ in range(n_calls):
            actions = rng.uniform(-1, 1, size=(num_envs, 7)).astype(np.float32)
            _, _, terminated, truncated, _ = envs.step(actions)
            ended = terminated | truncated
            if ended.any():
                envs.reset(options={"reset_mask": ended})
        elapsed = time.perf_counter() - start
    finally:
        envs.close()
    return n_calls * num_envs / elapsed


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="env steps per run (default: 2000)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count; the median is reported (default: 3)")
    parser.add_argument("--image-size", type=int, default=64, help="camera image size in pixels (default: 64)")
    parser.add_argument("--out", default=None, help="optional JSON output file")
    args = parser.parse_args()

    results = {}
    for workers in (int(w) for w in args.workers.split(",")):
        runs = [measure(workers, args.steps, args.image_size) for _ in range(args.repeats)]
        results[str(workers)] = {"steps_per_s_median": statistics.median(runs), "steps_per_s_runs": runs}
        print(f"workers={workers}: {statistics.median(runs):.0f} steps/s (median of {args.repeats})", flush=True)
    report = {
        "results": results,
        "steps_per_run": args.steps,
        "image_size": args.image_size,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "versions": {"vla_distill": __version__, "mujoco": mujoco.__version__, "gymnasium": gym.__version__, "python": platform.python_version()},
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
