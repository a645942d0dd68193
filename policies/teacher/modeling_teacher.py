"""Transformer teacher policy.

The instruction tokens go through a text transformer first. The image, with two
pixel-coordinate channels appended, passes a small convolutional stem whose stages are
modulated by the pooled instruction through FiLM, so the vision tokens can already mark the
named cube. The stem output is cut into patches, one vision token each (a hybrid ViT). With
``keypoint_token`` a spatial softmax over the stem output adds one token with the expected
position of each stem channel. A ViT encodes these vision tokens. A fusion transformer then
attends over the vision tokens, text tokens, one state token and one learned query token per
action dimension. Each query's output feeds that dimension's own linear head over the action
bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from vla_distill.policies.contract import (
    ATTENTION_MASK,
    IMAGE,
    INPUT_IDS,
    STATE,
    VISUAL_FEATURES,
    PolicyMixin,
    PolicyOutput,
)
from vla_distill.policies.coordinates import SpatialSoftmax, append_coordinates
from vla_distill.policies.film import FiLM
from vla_distill.policies.pooling import masked_mean
from vla_distill.policies.teacher.configuration_teacher import TeacherConfig
from vla_distill.policies.teacher.transformer_layers import TransformerEncoder

# Rows of the modality embedding table, added to the tokens of each input in the fusion.
VISION_ROW, TEXT_ROW, STATE_ROW, QUERY_ROW = range(4)


class PerDimensionBinHead(nn.Module):
    """A separate linear map from hidden_size to n_bins for each action dimension."""

    def __init__(self, action_dim: int, hidden_size: int, n_bins: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(action_dim, hidden_size, n_bins))
        self.bias = nn.Parameter(torch.empty(action_dim, n_bins))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """Map query outputs (B, action_dim, D) to logits (B, action_dim, n_bins)."""
        return torch.einsum("bad,adn->ban", queries, self.weight) + self.bias


class FilmConvStem(nn.Module):
    """3x3 stride-2 convolutions, each followed by FiLM from the instruction and GELU."""

    def __init__(self, in_channels: int, widths: list[int], condition_dim: int) -> None:
        super().__init__()
        inputs = [in_channels, *widths[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1) for a, b in zip(inputs, widths)
        )
        self.films = nn.ModuleList(FiLM(condition_dim, width) for width in widths)

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Map images (B, C, H, W) and the condition (B, condition_dim) to stem features."""
        features = images
        for conv, film in zip(self.convs, self.films):
            features = F.gelu(film(conv(features), condition))
        return features


class TeacherPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading settings of the teacher."""

    config_class = TeacherConfig
    base_model_prefix = "teacher"
    main_input_name = IMAGE

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PerDimensionBinHead):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, FiLM):
            init.zeros_(module.projection.weight)
            init.zeros_(module.projection.bias)
        elif isinstance(module, nn.Conv2d):
            # The transformers default (normal, std 0.02) shrinks the image by about 100x over
            # the stem and patch embedding, below the position embeddings, and the stem then
            # barely learns. He initialisation keeps the activation scale from layer to layer.
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)


class TeacherPolicy(PolicyMixin, TeacherPreTrainedModel):
    """Vision-language-action transformer that scores every action bin (see ``contract``)."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__(config)
        size = config.hidden_size
        self.stem = FilmConvStem(3 + 2, config.stem_channels, size)  # RGB and the two coordinate channels
        patch = config.patch_size // 2 ** len(config.stem_channels)
        stem_width = config.stem_channels[-1] if config.stem_channels else 3 + 2
        self.patch_embedding = nn.Conv2d(stem_width, size, kernel_size=patch, stride=patch)
        self.patch_position = nn.Embedding(config.num_patches, size)
        if config.keypoint_token:
            self.keypoints = SpatialSoftmax()
            self.keypoint_projection = nn.Linear(2 * stem_width, size)
        self.vision_encoder = TransformerEncoder(config, config.vision_layers)

        self.token_embedding = nn.Embedding(config.vocab_size, size, padding_idx=config.pad_token_id)
        self.token_position = nn.Embedding(config.max_instruction_length, size)
        self.text_encoder = TransformerEncoder(config, config.text_layers)

        self.state_projection = nn.Linear(config.state_dim, size)
        self.modality_embedding = nn.Embedding(4, size)
        self.action_queries = nn.Embedding(config.action_dim, size)
        self.fusion_encoder = TransformerEncoder(config, config.fusion_layers)
        self.action_head = PerDimensionBinHead(config.action_dim, size, config.n_bins)
        self.post_init()

    def forward(self, batch: dict[str, torch.Tensor]) -> PolicyOutput:
        """Score the action bins of a batch of the policy contract."""
        attention_mask = batch[ATTENTION_MASK]
        text_tokens = self.encode_instruction(batch[INPUT_IDS], attention_mask)
        instruction = masked_mean(text_tokens, attention_mask)
        vision_tokens = self.encode_image(batch[IMAGE], instruction)
        query_outputs = self.fuse(vision_tokens, text_tokens, attention_mask, batch[STATE])
        features = {
            VISUAL_FEATURES: vision_tokens.mean(dim=1),
            "text": instruction,
            "fused": query_outputs.mean(dim=1),
        }
        return PolicyOutput(action_logits=self.action_head(query_outputs), features=features)

    def encode_image(self, image: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """Encode normalised images (B, 3, H, W) into vision tokens (B, num_patches [+ 1], D).

        ``instruction`` (B, D) is the pooled text encoding that conditions the stem.
        """
        stem_features = self.stem(append_coordinates(image), instruction)
        patches = self.patch_embedding(stem_features).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)
        tokens = patches + self.patch_position.weight
        if self.config.keypoint_token:
            keypoint_token = self.keypoint_projection(self.keypoints(stem_features)).unsqueeze(1)
            tokens = torch.cat([tokens, keypoint_token], dim=1)
        return self.vision_encoder(tokens)

    def encode_instruction(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode instruction tokens (B, L) into contextual tokens (B, L, D)."""
        tokens = self.token_embedding(input_ids) + self.token_position.weight
        return self.text_encoder(tokens, attention_mask.bool())

    def fuse(
        self,
        vision_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> torch.Tensor:
        """Run the fusion transformer and return the action query outputs (B, action_dim, D)."""
        modality = self.modality_embedding.weight
        batch_size = vision_tokens.shape[0]
        queries = self.action_queries.weight.unsqueeze(0).expand(batch_size, -1, -1)
        tokens = torch.cat(
            [
                vision_tokens + modality[VISION_ROW],
                text_tokens + modality[TEXT_ROW],
                self.state_projection(state).unsqueeze(1) + modality[STATE_ROW],
                queries + modality[QUERY_ROW],
            ],
            dim=1,
        )  # (B, num_patches + L + 1 + action_dim, D)

        text_mask = attention_mask.bool()
        always = text_mask.new_ones((batch_size, vision_tokens.shape[1]))
        trailing = text_mask.new_ones((batch_size, 1 + queries.shape[1]))
        key_mask = torch.cat([always, text_mask, trailing], dim=1)

        outputs = self.fusion_encoder(tokens, key_mask)
        return outputs[:, -queries.shape[1] :]
