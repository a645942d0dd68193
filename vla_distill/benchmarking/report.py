"""Assemble a latency.json report for one policy."""

from __future__ import annotations

import logging

from vla_distill.benchmarking.latency import LATENCY_METHOD, latency_stats, measure_peak_rss, time_calls
from vla_distill.benchmarking.machine import cpu_info, library_versions, single_core_matmul_gflops
from vla_distill.benchmarking.runners import describe, load_predictor

logger = logging.getLogger(__name__)


def benchmark_policy(policy: str, observations: list[dict], threads: list[int], runs: int, warmup: int) -> dict:
    """Measure latency per thread count, plus size, FLOPs, peak memory and the FLOP bound."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    report = {"policy": str(policy), **describe(policy, observations[0])}
    report["threads"] = {}
    for count in threads:
        predict = load_predictor(policy, count)
        stats = latency_stats(time_calls(predict, observations, runs, warmup))
        report["threads"][str(count)] = stats
        logger.info("%s, %d thread(s): p50 %.3f ms, p99 %.3f ms", policy, count, stats["latency_ms_p50"], stats["latency_ms_p99"])

    matmul = single_core_matmul_gflops()
    bound_ms = report["flops"] / (matmul["gflops"] * 1e9) * 1000.0
    one_thread = report["threads"].get("1") or next(iter(report["threads"].values()))
    report.update(
        {
            "peak_rss_bytes": measure_peak_rss(policy, observations, threads[0], min(runs, 50)),
            "matmul_gflops_single_core": matmul,
            "flop_bound_latency_ms": bound_ms,
            "measured_to_bound_ratio": one_thread["latency_ms_p50"] / bound_ms if bound_ms > 0 else None,
            "batch_size": 1,
            "runs": runs,
            "warmup": warmup,
            "method": LATENCY_METHOD,
            "cpu": cpu_info(),
            "versions": library_versions(),
        }
    )
    return report
