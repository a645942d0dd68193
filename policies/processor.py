"""Processor that turns environment observations into the batch dict of the policy contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from vla_distill.policies.contract import ATTENTION_MASK, IMAGE, INPUT_IDS, STATE
from vla_distill.policies.image_normalization import normalize_images
from vla_distill.policies.instruction_tokenizer import (
    build_instruction_tokenizer,
    load_instruction_tokenizer,
    save_instruction_tokenizer,
    tokenizer_max_length,
)


class PolicyProcessor:
    """Convert single or batched observations into policy batches (see ``contract``).

    The processor contains the instruction tokenizer and the image normalisation constants of a
    checkpoint. It is separate from the model, so exported graphs contain no tokenisation.
    """

    def __init__(self, tokenizer: Tokenizer, config) -> None:
        check_tokenizer_fits(tokenizer, config)
        self.tokenizer = tokenizer
        self.image_size = config.image_size
        self.state_dim = config.state_dim
        self.mean = torch.tensor(config.image_mean, dtype=torch.float32)
        self.std = torch.tensor(config.image_std, dtype=torch.float32)

    @classmethod
    def from_config(cls, config, words: list[str] | None = None) -> "PolicyProcessor":
        """Build a processor with a new tokenizer over ``words`` (default: the suite vocabulary)."""
        tokenizer = build_instruction_tokenizer(words, max_length=config.max_instruction_length)
        return cls(tokenizer, config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, config) -> "PolicyProcessor":
        """Load the processor of a checkpoint folder, whose config the caller has read."""
        return cls(load_instruction_tokenizer(folder), config)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the processor's tokenizer into a checkpoint folder."""
        save_instruction_tokenizer(self.tokenizer, folder)

    @staticmethod
    def is_batched(obs: Mapping[str, Any]) -> bool:
        """Return whether ``obs`` is a batched observation (image of rank 4)."""
        return np.ndim(obs[IMAGE]) == 4

    def __call__(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Return the batch dict for a single or batched observation."""
        check_observation_keys(obs)
        batched = self.is_batched(obs)
        images = self.prepare_images(obs[IMAGE] if batched else np.asarray(obs[IMAGE])[None])
        states = self.prepare_states(obs[STATE] if batched else np.asarray(obs[STATE])[None])
        instructions = instruction_list(obs["instruction"], batched)
        if not len(images) == len(states) == len(instructions):
            raise ValueError(
                f"batched observation has {len(images)} images, {len(states)} states and "
                f"{len(instructions)} instructions; all must have the same batch size"
            )
        input_ids, attention_mask = self.tokenize(instructions)
        return {IMAGE: images, INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask, STATE: states}

    def prepare_images(self, images: Any) -> torch.Tensor:
        """Validate uint8 images (B, H, W, 3) and return them normalised as (B, 3, H, W)."""
        array = np.asarray(images)
        expected = (self.image_size, self.image_size, 3)
        if array.dtype != np.uint8:
            raise ValueError(f"observation image must be uint8 RGB, got dtype {array.dtype}")
        if array.ndim != 4 or array.shape[1:] != expected:
            raise ValueError(
                f"observation image must have shape {expected} (or (B, *{expected}) for a batch), "
                f"got {array.shape}; this policy was built for image_size={self.image_size}"
            )
        return normalize_images(torch.from_numpy(np.ascontiguousarray(array)), self.mean, self.std)

    def prepare_states(self, states: Any) -> torch.Tensor:
        """Validate states (B, state_dim) and return them as float32."""
        array = np.asarray(states, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.state_dim:
            raise ValueError(
                f"observation state must have shape ({self.state_dim},) (or (B, {self.state_dim}) "
                f"for a batch), got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError("observation state contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(array))

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return int64 ``input_ids`` and ``attention_mask`` of shape (B, max_length)."""
        encodings = self.tokenizer.encode_batch(list(instructions))
        input_ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.int64)
        attention_mask = torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.int64)
        return input_ids, attention_mask

    @property
    def max_length(self) -> int:
        """Number of tokens of every tokenized instruction."""
        return tokenizer_max_length(self.tokenizer)


def check_observation_keys(obs: Any) -> None:
    """Raise ValueError unless ``obs`` is a mapping with image, state and instruction."""
    if not isinstance(obs, Mapping):
        raise ValueError(f"observation must be a dict, got {type(obs).__name__}")
    missing = [key for key in (IMAGE, STATE, "instruction") if key not in obs]
    if missing:
        raise ValueError(f"observation is missing keys {missing}; got keys {sorted(obs)}")


def instruction_list(instruction: Any, batched: bool) -> list[str]:
    """Return the instructions of an observation as a list of str."""
    if not batched:
        if not isinstance(instruction, str):
            raise ValueError(f"instruction of a single observation must be str, got {type(instruction).__name__}")
        return [instruction]
    if isinstance(instruction, str):
        raise ValueError("instruction of a batched observation must be a sequence of str, got one str")
    values = list(instruction)
    for value in values:
        if not isinstance(value, (str, np.str_)):
            raise ValueError(f"every instruction must be str, got {type(value).__name__}: {value!r}")
    return [str(value) for value in values]


def check_tokenizer_fits(tokenizer: Tokenizer, config) -> None:
    """Raise ValueError if the tokenizer's ids or length do not fit the model config."""
    vocab_size = tokenizer.get_vocab_size()
    if vocab_size > config.vocab_size:
        raise ValueError(
            f"instruction tokenizer has {vocab_size} tokens but the model embeds only "
            f"vocab_size={config.vocab_size}; use the tokenizer.json saved with the model"
        )
    length = tokenizer_max_length(tokenizer) if tokenizer.padding else None
    if length != config.max_instruction_length:
        raise ValueError(
            f"instruction tokenizer pads to {length} tokens but the model expects "
            f"max_instruction_length={config.max_instruction_length}"
        )
