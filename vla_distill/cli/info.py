"""``vla-distill info``: print a JSON summary of a policy checkpoint."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a JSON summary of a policy checkpoint",
        description="Print kind, preset, parameter count, size on disk in bytes, action space, image "
        "size, state layout, instruction tokenizer and, if recorded, the command and data that "
        "produced the checkpoint.",
    )
    parser.add_argument(
        "--policy",
        required=True,
        help="checkpoint folder (with config.json, model.safetensors, tokenizer.json) or 'reference'",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vla_distill.policies.checkpoint_info import describe_checkpoint

    print(json.dumps(describe_checkpoint(args.policy), indent=2))
    return 0
