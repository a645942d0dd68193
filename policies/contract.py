"""The interface that every policy model and its processor implement.

Environment observation
    One step is a dict with ``image`` uint8 (H, W, 3), ``state`` float32 (4,) =
    [ee_x, ee_y, ee_z, gripper_opening], all in metres, and ``instruction`` str. A batched
    observation from a Gymnasium vector env has ``image`` (B, H, W, 3), ``state`` (B, 4) and
    ``instruction`` as a sequence of B strings. Other keys are ignored.

Processor (``vla_distill.policies.processor.PolicyProcessor``)
    Turns a single or batched observation into a batch dict of CPU tensors:

    ================  =======  ============  ==================================================
    key               dtype    shape         content
    ================  =======  ============  ==================================================
    image             float32  (B, 3, H, W)  pixels / 255, then (x - image_mean) / image_std
    input_ids         int64    (B, L)        instruction token ids, padded with [PAD] = 0
    attention_mask    int64    (B, L)        1 for real tokens, 0 for padding
    state             float32  (B, 4)        the observation's state, unchanged
    ================  =======  ============  ==================================================

    L is the config's ``max_instruction_length``. Image normalisation is the pure torch
    function ``normalize_images``, so an exported graph can start from uint8 pixels. The
    tokenizer runs only in the processor, never inside ``forward``.

Model ``forward(batch) -> PolicyOutput``
    ``action_logits`` float32 (B, action_dim, n_bins): unnormalised scores over the uniform
    action bins of ``config.action_tokenizer()``. A policy that predicts a chunk of future
    steps would return (B, chunk, action_dim, n_bins), but no policy in this package does yet.
    ``features``: named float32 tensors for feature-matching losses. Every policy returns
    ``visual`` (B, D), its pooled visual features (mean-pooled ViT tokens for the teacher,
    globally pooled CNN features for a student). ``forward`` has no data-dependent Python
    branches, so ``torch.onnx.export`` can trace it.

Env stepping
    ``predict_action(obs)`` runs processor, forward and decoding (argmax by default) and
    returns float32 actions: shape (7,) for a single observation, (B, 7) for a batch.
    ``reset()`` clears per-episode state at the start of an episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils import ModelOutput

IMAGE = "image"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
STATE = "state"
BATCH_KEYS = (IMAGE, INPUT_IDS, ATTENTION_MASK, STATE)
VISUAL_FEATURES = "visual"


@dataclass
class PolicyOutput(ModelOutput):
    """Output of a policy's forward pass."""

    action_logits: torch.Tensor | None = None
    """Scores over action bins, float32 (B, action_dim, n_bins)."""
    features: dict[str, torch.Tensor] | None = None
    """Named intermediate features for feature matching, always including ``visual`` (B, D)."""


def validate_batch(batch: Mapping[str, torch.Tensor], config) -> None:
    """Raise ValueError unless ``batch`` has every key of the contract with the config's shapes."""
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing}; a policy batch needs {list(BATCH_KEYS)}")

    size = config.image_size
    length = config.max_instruction_length
    expected = {
        IMAGE: (torch.float32, (3, size, size)),
        INPUT_IDS: (torch.int64, (length,)),
        ATTENTION_MASK: (torch.int64, (length,)),
        STATE: (torch.float32, (config.state_dim,)),
    }
    batch_size = batch[IMAGE].shape[0]
    for key, (dtype, shape) in expected.items():
        tensor = batch[key]
        if tensor.dtype != dtype or tuple(tensor.shape) != (batch_size, *shape):
            raise ValueError(
                f"batch[{key!r}] must be {dtype} of shape {(batch_size, *shape)}, "
                f"got {tensor.dtype} of shape {tuple(tensor.shape)}"
            )


class PolicyMixin:
    """Env-facing methods shared by the teacher and student models.

    ``predict_action`` needs a processor, which ``load_policy`` attaches. A model built in
    code gets one with ``attach_processor(PolicyProcessor.from_config(model.config))``.
    """

    _processor: Any = None

    def attach_processor(self, processor) -> None:
        """Set the processor that ``predict_action`` uses to turn observations into batches."""
        self._processor = processor

    @property
    def processor(self):
        """The attached processor. Raises ValueError if none is attached."""
        if self._processor is None:
            raise ValueError(
                "this policy has no processor attached; load it with load_policy or call "
                "attach_processor(PolicyProcessor.from_config(model.config))"
            )
        return self._processor

    def reset(self) -> None:
        """Clear per-episode state. Current policies act on one step and keep none."""

    @torch.no_grad()
    def predict_action(
        self, obs: Mapping[str, Any], greedy: bool = True, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """Return float32 actions for one observation (shape (7,)) or a batch (shape (B, 7)).

        With ``greedy`` the action is the centre of the highest-scoring bin. Otherwise a bin is
        sampled from the softmax of the logits with ``generator``. The model runs in its
        current mode, so call ``eval()`` first if it was training.
        """
        batch = self.processor(obs)
        device = next(self.parameters()).device
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = self(batch).action_logits
        tokenizer = self.config.action_tokenizer()
        if greedy:
            actions = tokenizer.decode_logits(logits)
        else:
            actions = sample_actions(logits, tokenizer, generator)
        actions = actions.float().cpu().numpy()
        return actions if self.processor.is_batched(obs) else actions[0]


def sample_actions(logits: torch.Tensor, tokenizer, generator: torch.Generator | None) -> torch.Tensor:
    """Sample one bin per action dimension from softmax(logits) and return the bin centres."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    flat = probabilities.reshape(-1, probabilities.shape[-1])  # (B * action_dim, n_bins)
    indices = torch.multinomial(flat.cpu(), num_samples=1, generator=generator)
    indices = indices.reshape(probabilities.shape[:-1])
    return tokenizer.decode(indices)
