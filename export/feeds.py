"""Turn environment observations into the input arrays of an exported policy graph.

This is the numpy counterpart of ``vla_distill.policies.processor.PolicyProcessor``: it
validates an observation and tokenizes its instruction, but leaves the image as raw uint8
pixels because the exported graph normalises them itself. It imports neither torch nor
transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from vla_distill.export.metadata import (
    ATTENTION_MASK_INPUT,
    IMAGE_INPUT,
    INPUT_IDS_INPUT,
    STATE_INPUT,
    ExportMetadata,
)

OBSERVATION_KEYS = ("image", "state", "instruction")


def load_instruction_tokenizer(metadata: ExportMetadata) -> Tokenizer:
    """Build the instruction tokenizer stored in the metadata and check its fixed length."""
    try:
        tokenizer = Tokenizer.from_str(metadata.instruction_tokenizer)
    except Exception as error:  # tokenizers raises a bare Exception on invalid JSON
        raise ValueError(f"the model's instruction tokenizer metadata is invalid: {error}") from error
    padding = tokenizer.padding or {}
    if padding.get("length") != metadata.max_instruction_length:
        raise ValueError(
            f"the model's instruction tokenizer pads to {padding.get('length')} tokens but its "
            f"metadata says max_instruction_length={metadata.max_instruction_length}; export it again"
        )
    return tokenizer


def is_batched(obs: Mapping[str, Any]) -> bool:
    """Return whether ``obs`` is a batched observation (image of rank 4)."""
    return np.ndim(obs["image"]) == 4


def observation_feeds(
    obs: Any, metadata: ExportMetadata, tokenizer: Tokenizer
) -> tuple[dict[str, np.ndarray], bool]:
    """Validate a single or batched observation and return ``(feeds, batched)``.

    ``feeds`` maps every graph input name to an array with a leading batch axis. Raises
    ValueError that names the offending key, the shape received and the shape expected.
    """
    check_keys(obs)
    batched = is_batched(obs)
    images = image_batch(obs["image"], batched, metadata.image_size)
    states = state_batch(obs["state"], batched, metadata.state_dim)
    instructions = instruction_list(obs["instruction"], batched)
    if not len(images) == len(states) == len(instructions):
        raise ValueError(
            f"batched observation has {len(images)} images, {len(states)} states and "
            f"{len(instructions)} instructions; all must have the same batch size"
        )
    if len(images) == 0:
        raise ValueError("batched observation is empty; it needs at least one image")
    input_ids, attention_mask = tokenize(tokenizer, instructions)
    feeds = {
        IMAGE_INPUT: images,
        STATE_INPUT: states,
        INPUT_IDS_INPUT: input_ids,
        ATTENTION_MASK_INPUT: attention_mask,
    }
    return feeds, batched


def check_keys(obs: Any) -> None:
    """Raise ValueError unless ``obs`` is a mapping with image, state and instruction."""
    if not isinstance(obs, Mapping):
        raise ValueError(f"observation must be a dict, got {type(obs).__name__}")
    missing = [key for key in OBSERVATION_KEYS if key not in obs]
    if missing:
        raise ValueError(f"observation is missing keys {missing}; got keys {sorted(obs)}")


def image_batch(image: Any, batched: bool, image_size: int) -> np.ndarray:
    """Return uint8 images (B, H, W, 3), adding the batch axis to a single image."""
    array = np.asarray(image)
    expected = (image_size, image_size, 3)
    if array.dtype != np.uint8:
        raise ValueError(f"observation image must be uint8 RGB, got dtype {array.dtype}")
    if array.shape[-3:] != expected or array.ndim not in (3, 4):
        raise ValueError(
            f"observation image must have shape {expected} (or (B, *{expected}) for a batch), "
            f"got {array.shape}; this model was exported for image_size={image_size}"
        )
    batch = array if batched else array[None]
    return np.ascontiguousarray(batch)


def state_batch(state: Any, batched: bool, state_dim: int) -> np.ndarray:
    """Return float32 states (B, state_dim), adding the batch axis to a single state."""
    array = np.asarray(state, dtype=np.float32)
    expected_ndim = 2 if batched else 1
    if array.ndim != expected_ndim or array.shape[-1] != state_dim:
        expected = f"(B, {state_dim}) for a batched" if batched else f"({state_dim},) for a single"
        raise ValueError(f"observation state must have shape {expected} observation, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("observation state contains NaN or infinite values")
    batch = array if batched else array[None]
    return np.ascontiguousarray(batch)


def instruction_list(instruction: Any, batched: bool) -> list[str]:
    """Return the instructions of an observation as a list of str."""
    if not batched:
        if not isinstance(instruction, str):
            raise ValueError(
                f"instruction of a single observation must be str, got {type(instruction).__name__}"
            )
        return [instruction]
    if isinstance(instruction, str) or not isinstance(instruction, (Sequence, np.ndarray)):
        raise ValueError(
            f"instruction of a batched observation must be a sequence of str, got {type(instruction).__name__}"
        )
    values = list(instruction)
    for value in values:
        if not isinstance(value, (str, np.str_)):
            raise ValueError(f"every instruction must be str, got {type(value).__name__}: {value!r}")
    return [str(value) for value in values]


def tokenize(tokenizer: Tokenizer, instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return int64 ``input_ids`` and ``attention_mask`` of shape (B, max_instruction_length)."""
    encodings = tokenizer.encode_batch(list(instructions))
    input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
    return input_ids, attention_mask
