"""CNN student policy for edge CPUs.

The instruction is a mean of word embeddings. Together with the state it forms a
conditioning vector that modulates the last ``film_stages`` conv stages (every stage by
default) through FiLM (per-channel scale and shift, Perez et al. 2018), so the feature maps
can light up where the named cube is.
Two constant channels with the pixel coordinates are appended to the image (CoordConv), and
a spatial softmax turns each final feature map into the expected image position of its
activation. Mean-pooled features, these keypoints, the conditioning vector
and the state form a trunk feature. Each action dimension adds its learned query to the trunk
feature, and one Linear(hidden_size, n_bins) shared by all dimensions scores the bins. The
graph uses only convolution, linear, ReLU, softmax, LayerNorm, gather, mean and concat
operators, so it exports cleanly to ONNX.
"""

from __future__ import annotations

import torch
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
from vla_distill.policies.film import FiLM
from vla_distill.policies.coordinates import SpatialSoftmax, append_coordinates
from vla_distill.policies.pooling import masked_mean
from vla_distill.policies.student.configuration_student import StudentConfig


class StudentPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading settings of the student."""

    config_class = StudentConfig
    base_model_prefix = "student"
    main_input_name = IMAGE

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            # He initialisation keeps activations from shrinking through the ReLU stages.
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, FiLM):
            # Zero projection: FiLM starts as the identity and learns its modulation.
            init.zeros_(module.projection.weight)
            init.zeros_(module.projection.bias)
        elif isinstance(module, nn.Embedding):
            # Unit-scale word vectors: at the default std of 0.02 the colour word barely changes the
            # conditioning vector, and a probe that regressed the named cube's position learned slower.
            init.normal_(module.weight, mean=0.0, std=1.0)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])


class StudentPolicy(PolicyMixin, StudentPreTrainedModel):
    """FiLM-conditioned CNN that scores every action bin (see ``contract``)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        channels = [3 + 2, *config.conv_channels]  # RGB and the two coordinate channels
        self.conv_stages = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel_size=3, stride=config.conv_strides[i], padding=1)
            for i in range(len(config.conv_channels))
        )
        self.keypoints = SpatialSoftmax()
        self.first_film_stage = len(config.conv_channels) - config.film_stages
        self.films = nn.ModuleList(
            FiLM(config.condition_dim, width) for width in config.conv_channels[self.first_film_stage :]
        )

        self.token_embedding = nn.Embedding(
            config.vocab_size, config.text_embedding_dim, padding_idx=config.pad_token_id
        )
        self.condition = nn.Linear(config.text_embedding_dim + config.state_dim, config.condition_dim)
        visual_width = 3 * channels[-1]  # pooled features and an (x, y) keypoint per channel
        self.trunk = nn.Sequential(
            nn.Linear(visual_width + config.condition_dim + config.state_dim, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        self.action_queries = nn.Embedding(config.action_dim, config.hidden_size)
        self.query_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bin_head = nn.Linear(config.hidden_size, config.n_bins)
        self.post_init()

    def forward(self, batch: dict[str, torch.Tensor]) -> PolicyOutput:
        """Score the action bins of a batch of the policy contract."""
        instruction = masked_mean(self.token_embedding(batch[INPUT_IDS]), batch[ATTENTION_MASK])
        condition = torch.relu(self.condition(torch.cat([instruction, batch[STATE]], dim=1)))
        visual = self.encode_image(batch[IMAGE], condition)
        trunk = torch.relu(self.trunk(torch.cat([visual, condition, batch[STATE]], dim=1)))  # (B, hidden_size)

        per_dimension = torch.relu(trunk.unsqueeze(1) + self.action_queries.weight)  # (B, action_dim, hidden)
        logits = self.bin_head(self.query_norm(per_dimension))  # (B, action_dim, n_bins)
        features = {VISUAL_FEATURES: visual, "trunk": trunk, "condition": condition}
        return PolicyOutput(action_logits=logits, features=features)

    def encode_image(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Run the conv stages on images (B, 3, H, W) and return pooled features and keypoints (B, 3C)."""
        features = append_coordinates(image)
        for index, stage in enumerate(self.conv_stages):
            features = stage(features)
            if index >= self.first_film_stage:
                features = self.films[index - self.first_film_stage](features, condition)
            features = torch.relu(features)
        return torch.cat([features.mean(dim=(2, 3)), self.keypoints(features)], dim=1)
