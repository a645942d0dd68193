"""The module that is traced into ONNX: raw camera pixels in, logits and decoded actions out."""

from __future__ import annotations

import torch
from torch import nn

from vla_distill.policies.contract import ATTENTION_MASK, IMAGE, INPUT_IDS, STATE
from vla_distill.policies.image_normalization import ImageNormalizer


class ExportModule(nn.Module):
    """Policy wrapper whose graph starts from uint8 (B, H, W, 3) images and ends with actions.

    Inside the graph the image is scaled to [0, 1], normalised with the policy's mean and
    std and transposed to (B, 3, H, W). The decoded actions are the centres of the
    highest-scoring bins, as ``ActionTokenizer.decode_logits`` computes them.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.normalizer = ImageNormalizer.from_config(policy.config)
        self.action_tokenizer = policy.config.action_tokenizer()

    def forward(
        self,
        image: torch.Tensor,
        state: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``action_logits`` (B, action_dim, n_bins) and ``actions`` float32 (B, action_dim)."""
        batch = {
            IMAGE: self.normalizer(image),
            STATE: state,
            INPUT_IDS: input_ids,
            ATTENTION_MASK: attention_mask,
        }
        logits = self.policy(batch).action_logits
        return logits, self.action_tokenizer.decode_logits(logits)
