"""Training checkpoints: model, optimizer, scheduler, RNG states and step in one file.

Files are written to a temporary name in the same folder and then renamed with
``os.replace``, so a crash during a write never leaves a partial checkpoint under the
final name. Checkpoints are read with ``torch.load(weights_only=True)``, which accepts
only tensors and plain containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    """Return the path of the checkpoint of ``step`` in ``folder``."""
    return folder / f"step_{step:08d}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Return the states of Python's, numpy's and torch's global random generators."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states returned by ``capture_rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` with torch.save to ``path`` through a temporary file and os.replace."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and os.replace."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_training_checkpoint(
    folder: Path, step: int, model, optimizer, scheduler, train_config: dict[str, Any], extra_state: dict | None = None
) -> Path:
    """Write the training state after ``step`` optimizer steps and return the file path.

    ``extra_state`` contains further state dicts by name, such as the weights of an auxiliary head.
    """
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        "train_config": train_config,
        **(extra_state or {}),
    }
    path = checkpoint_path(folder, step)
    atomic_torch_save(payload, path)
    logger.info("saved training checkpoint %s", path)
    return path


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Return (step, path) of every checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_training_checkpoint``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(f"cannot read training checkpoint {path}: {error}") from error


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, or none when ``keep`` is 0."""
    if keep == 0:
        return
    for _, path in list_checkpoints(folder)[:-keep]:
        path.unlink()
        logger.info("deleted old training checkpoint %s", path)
