"""Entry point of the child process that measures a policy's peak memory.

Usage: python -m vla_distill.benchmarking.peak_rss POLICY OBSERVATIONS.npz THREADS RUNS
Prints one JSON line with ``peak_rss_bytes`` (ru_maxrss of this process, Linux reports KiB).
"""

import json
import resource
import sys
from pathlib import Path

from vla_distill.benchmarking.observations import load_observations
from vla_distill.benchmarking.runners import load_predictor


def main() -> None:
    policy, observations_path, threads, runs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    observations = load_observations(observations_path)
    predict = load_predictor(policy, threads)
    for i in range(runs):
        predict(observations[i % len(observations)])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_bytes": peak_kib * 1024}))


if __name__ == "__main__":
    main()
