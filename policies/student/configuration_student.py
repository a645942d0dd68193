"""Configuration and presets of the CNN student policy."""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from vla_distill.policies.configuration_policy import PolicyConfig, check_float, check_int

# Architecture fields of each preset. Every other field keeps its default.
# Parameter counts of each preset are listed in docs/policies.md.
STUDENT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "conv_channels": [8, 16, 24, 32],
        "conv_strides": [2, 2, 2, 1],
        "film_stages": 4,
        "text_embedding_dim": 16,
        "condition_dim": 32,
        "hidden_size": 32,
    },
    "small": {
        "conv_channels": [16, 32, 48, 48],
        "conv_strides": [2, 2, 2, 1],
        "film_stages": 4,
        "text_embedding_dim": 32,
        "condition_dim": 48,
        "hidden_size": 48,
    },
}


class StudentConfig(PolicyConfig):
    """Architecture of the student: strided CNN with FiLM, bag-of-words instruction encoder.

    The defaults are the ``small`` preset.
    """

    model_type = "vla_distill_student"
    policy_kind: ClassVar[str] = "student"
    presets: ClassVar[dict[str, dict[str, Any]]] = STUDENT_PRESETS

    conv_channels: list[int] = field(default_factory=lambda: [16, 32, 48, 48])
    """Output channels of each 3x3 convolution stage."""
    conv_strides: list[int] = field(default_factory=lambda: [2, 2, 2, 1])
    """Stride (1 or 2) of each convolution stage. The last feature map feeds the spatial softmax."""
    film_stages: int = 4
    """Number of final conv stages whose features are modulated by FiLM."""
    text_embedding_dim: int = 32
    """Width of the word embeddings that are mean-pooled into the instruction vector."""
    condition_dim: int = 48
    """Width of the conditioning vector computed from instruction and state."""
    hidden_size: int = 48
    """Width of the trunk feature and of each action query."""
    layer_norm_eps: float = 1e-5
    """Epsilon of the LayerNorm before the bin head."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_architecture_fields()

    def validate_architecture_fields(self) -> None:
        """Raise ValueError if an architecture field is out of range or inconsistent."""
        channels = self.conv_channels
        if not isinstance(channels, (list, tuple)) or not channels:
            raise ValueError(f"conv_channels must be a non-empty list of integers, got {channels!r}")
        for value in channels:
            check_int("conv_channels entry", value, 1)
        strides = self.conv_strides
        if not isinstance(strides, (list, tuple)) or len(strides) != len(channels):
            raise ValueError(
                f"conv_strides must list one stride per conv stage ({len(channels)}), got {strides!r}"
            )
        if any(stride not in (1, 2) for stride in strides):
            raise ValueError(f"every conv_strides entry must be 1 or 2, got {strides!r}")
        downsampling = 2 ** sum(stride == 2 for stride in strides)
        if self.image_size < 2 * downsampling:
            raise ValueError(
                f"image_size {self.image_size} is too small for {downsampling}x downsampling; "
                f"use at least {2 * downsampling} pixels or fewer stride-2 stages"
            )
        check_int("film_stages", self.film_stages, 0)
        if self.film_stages > len(channels):
            raise ValueError(
                f"film_stages {self.film_stages} exceeds the {len(channels)} conv stages"
            )
        check_int("text_embedding_dim", self.text_embedding_dim, 1)
        check_int("condition_dim", self.condition_dim, 1)
        check_int("hidden_size", self.hidden_size, 1)
        check_float("layer_norm_eps", self.layer_norm_eps, 0.0)
