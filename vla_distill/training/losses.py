"""Behaviour-cloning loss and metrics over discretised actions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def behaviour_cloning_loss(
    logits: torch.Tensor, target_bins: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the cross-entropy between predicted bin scores and expert bins, and its terms.

    loss = mean over samples b and action dimensions a of -log softmax(logits[b, a])[target[b, a]],
    with optional label smoothing. ``logits`` is (B, action_dim, n_bins), ``target_bins``
    int64 (B, action_dim).
    """
    n_bins = logits.shape[-1]
    loss = F.cross_entropy(
        logits.reshape(-1, n_bins), target_bins.reshape(-1), label_smoothing=label_smoothing
    )
    return loss, {"bc_cross_entropy": float(loss.detach())}


def bin_accuracy(logits: torch.Tensor, target_bins: torch.Tensor) -> torch.Tensor:
    """Return the fraction of samples whose highest-scoring bin is the expert bin, per dimension (action_dim,)."""
    return (logits.argmax(dim=-1) == target_bins).float().mean(dim=0)
