"""Summary of a policy checkpoint folder, as printed by ``vla-distill info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from vla_distill.policies.instruction_tokenizer import load_instruction_tokenizer, tokenizer_max_length
from vla_distill.policies.io import (
    POLICY_CLASSES,
    SOURCE_FILE,
    WEIGHTS_FILE,
    checkpoint_hash,
    read_policy_config,
    resolve_checkpoint,
)


def count_parameters(config) -> int:
    """Return the parameter count of the model that ``config`` describes, without allocating weights."""
    _, model_class = POLICY_CLASSES[config.model_type]
    with torch.device("meta"):
        model = model_class(config)
    return sum(parameter.numel() for parameter in model.parameters())


def folder_size_bytes(folder: Path) -> int:
    """Return the total size in bytes of the regular files directly inside ``folder``."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def stored_weight_dtypes(path: Path) -> list[str]:
    """Return the sorted safetensors dtype names (e.g. "F32") of the stored weights."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            return sorted({weights.get_slice(name).get_dtype() for name in weights.keys()})
    except SafetensorError as error:
        raise ValueError(f"corrupted or truncated weights file {path}: {error}") from error


def read_source(folder: Path) -> dict[str, Any] | None:
    """Return the ``source.json`` record of a checkpoint, or None if it has none."""
    path = folder / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON in {path}: {error}") from error


def describe_checkpoint(path_or_name: str | Path) -> dict[str, Any]:
    """Return kind, preset, sizes, action space, image, state, tokenizer and source of a checkpoint."""
    folder = resolve_checkpoint(path_or_name)
    config = read_policy_config(folder)
    tokenizer = load_instruction_tokenizer(folder)
    return {
        "path": str(folder),
        "kind": config.policy_kind,
        "model_type": config.model_type,
        "preset": config.preset,
        "parameters": count_parameters(config),
        "size_bytes": folder_size_bytes(folder),
        "weights_dtypes": stored_weight_dtypes(folder / WEIGHTS_FILE),
        "sha256": checkpoint_hash(folder),
        "action_space": {
            "dim": config.action_dim,
            "names": list(config.action_names),
            "bins": config.n_bins,
            "low": config.action_low,
            "high": config.action_high,
        },
        "image": {
            "height": config.image_size,
            "width": config.image_size,
            "channels": 3,
            "mean": list(config.image_mean),
            "std": list(config.image_std),
        },
        "state": {"dim": config.state_dim, "names": list(config.state_names)},
        "instruction_tokenizer": {
            "vocab_size": tokenizer.get_vocab_size(),
            "max_length": tokenizer_max_length(tokenizer),
        },
        "source": read_source(folder),
    }
