"""Entry point of the ``vla-distill`` console script.

Each subcommand lives in its own module of this package and provides two functions:
``add_parser(subparsers)`` registers its options and ``run(args) -> int`` does the work.
User errors (``ValueError``, ``FileNotFoundError``, ``NotImplementedError``) print one line
and exit with code 2; any other exception exits with code 1 and its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from vla_distill import __version__

SUBCOMMANDS = (
    "collect",
    "eval",
    "render",
    "train_teacher",
    "info",
    "distill",
    "export",
    "bench",
    "quickstart",
)
USER_ERRORS = (ValueError, FileNotFoundError, NotImplementedError)
EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(
        prog="vla-distill",
        description="Distill vision-language-action robot policies into small students.",
    )
    parser.add_argument("--version", action="version", version=f"vla-distill {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of log messages on stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"vla_distill.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"vla_distill.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def configure_logging(level: str) -> None:
    """Send log records to stderr in one compact line each."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as error:
        message = str(error)
        print(f"vla-distill {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"vla-distill {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - unexpected failures keep their traceback
        traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
