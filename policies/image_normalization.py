"""Image normalisation as a pure torch function, usable in a processor and in an exported graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images (B, H, W, 3) to normalised float32 images (B, 3, H, W).

    Each pixel is scaled to [0, 1] by dividing by 255, then ``(x - mean) / std`` is applied
    per channel. ``mean`` and ``std`` are float tensors of shape (3,).
    """
    scaled = images.to(torch.float32) / 255.0
    channels_first = scaled.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    return (channels_first - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class ImageNormalizer(nn.Module):
    """Module form of ``normalize_images`` with mean and std stored as buffers.

    The buffers are not persistent, so a model that contains this module keeps the same
    state dict keys. The values come from the policy config (``image_mean``, ``image_std``).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise uint8 images (B, H, W, 3) into float32 images (B, 3, H, W)."""
        return normalize_images(images, self.mean, self.std)

    @classmethod
    def from_config(cls, config) -> "ImageNormalizer":
        """Build the normaliser of a policy config."""
        return cls(config.image_mean, config.image_std)
