"""Behaviour-cloning loss and metrics over discretised actions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRES_TO_DECIMETRES = 10.0


def gaussian_bin_targets(target_bins: torch.Tensor, n_bins: int, sigma_bins: float) -> torch.Tensor:
    """Return target distributions (..., n_bins) of a Gaussian with std ``sigma_bins`` around each bin.

    Neighbouring bins share the probability mass, so the cross-entropy scores bin 101 as a
    smaller error than bin 0 for an expert bin 100 (the HL-Gauss target).
    """
    centres = torch.arange(n_bins, dtype=torch.float32, device=target_bins.device)
    offsets = centres - target_bins.unsqueeze(-1).float()
    return torch.softmax(-0.5 * (offsets / sigma_bins) ** 2, dim=-1)


def behaviour_cloning_loss(
    logits: torch.Tensor, target_bins: torch.Tensor, label_smoothing: float = 0.0, label_sigma_bins: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the cross-entropy between predicted bin scores and expert bins, and its terms.

    loss = mean over samples b and action dimensions a of -sum_k q[b, a, k] log softmax(logits[b, a])[k],
    where q is one-hot at the expert bin, optionally label-smoothed, or with ``label_sigma_bins`` > 0
    a Gaussian over bins (``gaussian_bin_targets``). ``logits`` is (B, action_dim, n_bins),
    ``target_bins`` int64 (B, action_dim).
    """
    n_bins = logits.shape[-1]
    if label_sigma_bins > 0:
        targets = gaussian_bin_targets(target_bins, n_bins, label_sigma_bins)
        loss = -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
    else:
        loss = F.cross_entropy(
            logits.reshape(-1, n_bins), target_bins.reshape(-1), label_smoothing=label_smoothing
        )
    return loss, {"bc_cross_entropy": float(loss.detach())}


def bin_accuracy(logits: torch.Tensor, target_bins: torch.Tensor) -> torch.Tensor:
    """Return the fraction of samples whose highest-scoring bin is the expert bin, per dimension (action_dim,)."""
    return (logits.argmax(dim=-1) == target_bins).float().mean(dim=0)


def target_offset_loss(predicted: torch.Tensor, offsets_m: torch.Tensor) -> torch.Tensor:
    """Return the mean squared error, in decimetres, over the finite entries of ``offsets_m``.

    ``predicted`` (B, K) is in decimetres and ``offsets_m`` (B, K) in metres. An offset that does
    not exist, such as the zone of a reach or lift task, is NaN and adds nothing.
    """
    known = torch.isfinite(offsets_m)
    if not known.any():
        return predicted.sum() * 0.0
    error = predicted.float()[known] - METRES_TO_DECIMETRES * offsets_m[known]
    return (error**2).mean()
