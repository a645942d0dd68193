"""Batch-1 latency of a policy's ``predict_action`` on real suite observations.

What is timed: one call of ``predict_action(obs)`` for one observation, from the env's raw
observation dict (uint8 image, state, instruction string) to the decoded float32 action, so
tokenisation, image normalisation, the forward pass and decoding are all included. Each
call is timed alone with ``time.perf_counter``; thread counts are set through the runtime's
API (``torch.set_num_threads``, ONNX Runtime intra-op threads with inter-op 1).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vla_distill.benchmarking.observations import save_observations

logger = logging.getLogger(__name__)

LATENCY_METHOD = (
    "batch-1 predict_action(obs) from raw observation to decoded action, including "
    "tokenisation and image normalisation; each call timed alone with time.perf_counter"
)

def latency_stats(times_s: list[float]) -> dict:
    """Summarise per-call times in seconds as milliseconds and the control rate they allow."""
    times_ms = np.asarray(times_s) * 1000.0
    p50 = float(np.percentile(times_ms, 50))
    return {
        "latency_ms_p50": p50,
        "latency_ms_p90": float(np.percentile(times_ms, 90)),
        "latency_ms_p99": float(np.percentile(times_ms, 99)),
        "latency_ms_mean": float(times_ms.mean()),
        "control_hz_p50": 1000.0 / p50,
    }


def time_calls(predict: Callable[[dict], np.ndarray], observations: list[dict], runs: int, warmup: int) -> list[float]:
    """Call ``predict`` on observations in turn; return the times of the last ``runs`` calls."""
    for i in range(warmup):
        predict(observations[i % len(observations)])
    times = []
    for i in range(runs):
        obs = observations[i % len(observations)]
        start = time.perf_counter()
        predict(obs)
        times.append(time.perf_counter() - start)
    return times


def measure_peak_rss(policy: str, observations: list[dict], threads: int, runs: int) -> int:
    """Return the peak resident set size, in bytes, of a fresh process that loads and runs the policy."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "observations.npz"
        save_observations(observations, path)
        command = [sys.executable, "-m", "vla_distill.benchmarking.peak_rss", policy, str(path), str(threads), str(runs)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    if result.returncode != 0:
        raise RuntimeError(f"measuring peak memory of {policy} failed:\n{result.stderr[-2000:]}")
    return int(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_bytes"])
