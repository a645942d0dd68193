"""Pooling helpers shared by the policy models."""

from __future__ import annotations

import torch


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average ``tokens`` (B, T, D) over the positions where ``mask`` (B, T) is nonzero.

    A row with no nonzero position (an empty instruction) pools to zeros.
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (tokens * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count
