"""Pre-LayerNorm transformer encoder layers used by the teacher.

Attention uses ``torch.nn.functional.scaled_dot_product_attention``, which both ONNX
exporters of torch 2.13 translate into standard operators. Padding is masked with an
additive bias of the lowest float value instead of -inf, so a query whose keys are all
masked (an empty instruction) gets uniform weights instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a key mask (B, T), True to attend, into an additive bias (B, 1, 1, T)."""
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    bias = bias.masked_fill(~key_mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional key padding mask."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Attend over ``tokens`` (B, T, D), adding ``bias`` (B, 1, 1, T) to the attention scores."""
        batch_size, length, hidden_size = tokens.shape
        qkv = self.qkv(tokens).reshape(batch_size, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        attended = attended.transpose(1, 2).reshape(batch_size, length, hidden_size)
        return self.out_proj(attended)


class FeedForward(nn.Module):
    """Two-layer MLP with GELU applied to every token."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.activation(self.up(tokens))))


class TransformerLayer(nn.Module):
    """One pre-LayerNorm layer: tokens + attention(norm(tokens)), then + mlp(norm(tokens))."""

    def __init__(self, config) -> None:
        super().__init__()
        size = config.hidden_size
        self.attention_norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.attention = SelfAttention(size, config.num_attention_heads, config.dropout)
        self.mlp_norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(size, config.intermediate_size, config.dropout)

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        tokens = tokens + self.attention(self.attention_norm(tokens), bias)
        return tokens + self.mlp(self.mlp_norm(tokens))


class TransformerEncoder(nn.Module):
    """A stack of transformer layers followed by a final LayerNorm."""

    def __init__(self, config, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``tokens`` (B, T, D), attending only to tokens where ``key_mask`` (B, T) is True."""
        bias = None if key_mask is None else attention_bias(key_mask, tokens.dtype)
        for layer in self.layers:
            tokens = layer(tokens, bias)
        return self.final_norm(tokens)
