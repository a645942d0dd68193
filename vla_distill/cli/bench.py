"""``vla-distill bench``: batch-1 latency, size, FLOPs and peak memory of a policy."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vla_distill.benchmarking.observations import suite_observations
from vla_distill.benchmarking.report import benchmark_policy
from vla_distill.sim import suite_tasks

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure batch-1 latency, size, FLOPs and peak memory of a policy",
        description="Time predict_action on real suite observations at each thread count and write "
        "latency percentiles, parameters, size, FLOPs, peak RSS and the FLOP-bound latency to JSON.",
    )
    parser.add_argument("--policy", required=True, help="'reference', a checkpoint folder or a .onnx file")
    parser.add_argument("--suite", default="tabletop", help="suite whose observations are fed (default: tabletop)")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (default: 1,2)")
    parser.add_argument("--runs", type=int, default=500, help="timed calls per thread count (default: 500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before timing (default: 50)")
    parser.add_argument("--out", required=True, help="output JSON file, e.g. latency.json")
    parser.set_defaults(run=run)


def parse_threads(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise ValueError(f"--threads must be comma-separated integers, got {text!r}") from error
    if any(count < 1 for count in counts):
        raise ValueError(f"--threads must be at least 1 each, got {text!r}")
    return counts


def run(args: argparse.Namespace) -> int:
    threads = parse_threads(args.threads)
    suite_tasks(args.suite)
    if args.policy != "reference" and not Path(args.policy).exists():
        raise FileNotFoundError(f"policy {args.policy!r} not found; pass 'reference', a checkpoint folder or a .onnx file")
    observations = suite_observations()
    report = benchmark_policy(args.policy, observations, threads, args.runs, args.warmup)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: round(v["latency_ms_p50"], 4) for k, v in report["threads"].items()}
    print(json.dumps({"out": str(out), "latency_ms_p50_by_threads": summary, "params": report["params"], "flops": report["flops"]}))
    return 0
