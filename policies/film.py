"""Feature-wise linear modulation (FiLM) of conv features by an instruction."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """Feature-wise linear modulation: features * (1 + gamma) + beta, per channel.

    Initialise ``projection`` to zero (the policies' ``_init_weights`` do) so the layer starts
    as the identity and learns its modulation.
    """

    def __init__(self, condition_dim: int, channels: int) -> None:
        super().__init__()
        self.projection = nn.Linear(condition_dim, 2 * channels)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Modulate ``features`` (B, C, H, W) with ``condition`` (B, condition_dim)."""
        gamma, beta = self.projection(condition).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return features * (1.0 + gamma) + beta
