"""Pixel coordinate grids and the spatial softmax shared by the policies."""

from __future__ import annotations

import torch
from torch import nn


def coordinate_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Return (2, height, width) pixel-centre coordinates in [-1, 1]: x (columns), then y (rows).

    Models build the grid in ``forward`` instead of keeping a buffer: ``from_pretrained``
    creates modules on the meta device and leaves non-persistent buffers uninitialised.
    """
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])


def append_coordinates(images: torch.Tensor) -> torch.Tensor:
    """Append the two coordinate channels to images (B, C, H, W), giving (B, C + 2, H, W)."""
    grid = coordinate_grid(*images.shape[2:], device=images.device)
    return torch.cat([images, grid.unsqueeze(0).expand(images.shape[0], -1, -1, -1)], dim=1)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) position of each channel's softmax over its feature map."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map features (B, C, H, W) to keypoints (B, 2 * C), x and y per channel."""
        grid = coordinate_grid(*features.shape[2:], device=features.device).flatten(1).T  # (H*W, 2)
        weights = torch.softmax(features.flatten(2), dim=-1)  # (B, C, H*W)
        return (weights @ grid).flatten(1)
