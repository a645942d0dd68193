"""The ``source.json`` record of how a checkpoint was produced."""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers

from vla_distill import __version__
from vla_distill.policies.io import SOURCE_FILE, TRAIN_CONFIG_FILE, checkpoint_hash

__all__ = ["SOURCE_FILE", "TRAIN_CONFIG_FILE", "build_source_record", "data_file_records", "file_sha256", "software_versions"]


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Return the versions of vla-distill, torch, transformers and Python of this process."""
    return {
        "vla_distill": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def data_file_records(paths: list[str | Path]) -> list[dict[str, str]]:
    """Return the absolute path and sha256 of each data file, in order."""
    return [{"path": str(Path(path).resolve()), "sha256": file_sha256(path)} for path in paths]


def build_source_record(
    data_paths: list[str | Path], seed: int, command: str | None, init_from: str | None = None
) -> dict[str, Any]:
    """Return the command, data files with their sha256, seed, starting weights and software versions of a run."""
    record = {
        "command": command or "vla_distill.training.train_teacher (Python API)",
        "data": data_file_records(data_paths),
        "seed": seed,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(),
    }
    if init_from is not None:
        record["init_from"] = {"policy": init_from, "sha256": checkpoint_hash(init_from)}
    return record
