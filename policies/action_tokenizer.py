"""Uniform binning of continuous actions into discrete tokens.

Each action dimension is split into ``n_bins`` equal-width bins over ``[low, high]``, the
discretisation used by RT-2 and OpenVLA (256 bins over [-1, 1]). Encoding clips an action to
the range and returns its bin index. Decoding returns the centre of a bin.

This module imports neither torch nor transformers, so numpy-only runtimes can use it. The
methods also accept torch tensors and then return torch tensors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np


def _is_torch_tensor(value: Any) -> bool:
    # A torch tensor can only exist if torch is already imported, so this check never imports it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


@dataclass(frozen=True)
class ActionTokenizer:
    """Map actions in ``[low, high]`` to bin indices ``0 .. n_bins - 1`` and back."""

    n_bins: int = 256
    """Number of bins per action dimension."""
    low: float = -1.0
    """Lower edge of the first bin, in action units."""
    high: float = 1.0
    """Upper edge of the last bin, in action units."""

    def __post_init__(self) -> None:
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"action range must be finite with low < high, got low={self.low!r} high={self.high!r}"
            )

    @property
    def bin_width(self) -> float:
        """Width of one bin in action units: (high - low) / n_bins."""
        return (self.high - self.low) / self.n_bins

    def bin_centers(self) -> np.ndarray:
        """Return the centre of every bin as a float32 array of shape (n_bins,)."""
        return (self.low + (np.arange(self.n_bins) + 0.5) * self.bin_width).astype(np.float32)

    def encode(self, actions):
        """Return the int64 bin index of each action value, after clipping it to [low, high].

        The value ``high`` falls into the last bin. NaN or infinite values raise ValueError
        because they have no bin.
        """
        if _is_torch_tensor(actions):
            return self._encode_torch(actions)
        values = np.asarray(actions, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("cannot encode actions that contain NaN or infinite values")
        clipped = np.clip(values, self.low, self.high)
        indices = np.floor((clipped - self.low) / self.bin_width).astype(np.int64)
        return np.minimum(indices, self.n_bins - 1)

    def _encode_torch(self, actions):
        import torch

        values = actions.to(torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise ValueError("cannot encode actions that contain NaN or infinite values")
        clipped = values.clamp(self.low, self.high)
        indices = torch.floor((clipped - self.low) / self.bin_width).to(torch.int64)
        return indices.clamp(max=self.n_bins - 1)

    def decode(self, indices):
        """Return the float32 bin centre of each index.

        Raises ValueError for a non-integer input or an index outside ``0 .. n_bins - 1``.
        Indices are never clipped, because an out-of-range index means the caller used
        logits or labels of another tokenizer.
        """
        if _is_torch_tensor(indices):
            return self._decode_torch(indices)
        values = np.asarray(indices)
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"bin indices must be integers, got dtype {values.dtype}")
        self._check_index_range(int(values.min(initial=0)), int(values.max(initial=0)))
        return (self.low + (values.astype(np.float64) + 0.5) * self.bin_width).astype(np.float32)

    def _decode_torch(self, indices):
        import torch

        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"bin indices must be integers, got dtype {indices.dtype}")
        if indices.numel() > 0:
            self._check_index_range(int(indices.min()), int(indices.max()))
        return (self.low + (indices.to(torch.float64) + 0.5) * self.bin_width).to(torch.float32)

    def _check_index_range(self, smallest: int, largest: int) -> None:
        if smallest < 0 or largest >= self.n_bins:
            raise ValueError(
                f"bin index out of range: got values in [{smallest}, {largest}], "
                f"valid indices are 0 .. {self.n_bins - 1}; check that the logits or labels "
                f"come from a tokenizer with n_bins={self.n_bins}"
            )

    def decode_logits(self, logits):
        """Return the bin centre of the highest logit along the last axis, as float32 actions.

        Accepts a torch tensor of shape (..., n_bins) and returns shape (...). Its only branch
        checks a static shape, so ``torch.onnx.export`` can trace it into a graph.
        """
        import torch

        if logits.shape[-1] != self.n_bins:
            raise ValueError(
                f"logits have {logits.shape[-1]} bins in the last axis, expected n_bins={self.n_bins}"
            )
        indices = logits.argmax(dim=-1)
        return self.low + (indices.to(torch.float32) + 0.5) * self.bin_width

    def to_dict(self) -> dict[str, float | int]:
        """Return the parameters as stored in a checkpoint config."""
        return {"n_bins": self.n_bins, "low": self.low, "high": self.high}
