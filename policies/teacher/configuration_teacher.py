"""Configuration and presets of the transformer teacher policy."""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from vla_distill.policies.configuration_policy import PolicyConfig, check_float, check_int

# Architecture fields of each preset. Every other field keeps its default.
# Parameter counts of each preset are listed in docs/policies.md.
TEACHER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vision_layers": 1,
        "text_layers": 1,
        "fusion_layers": 1,
        "patch_size": 8,
        "stem_channels": [8],
        "keypoint_token": True,
    },
    "small": {
        "hidden_size": 96,
        "num_attention_heads": 3,
        "intermediate_size": 384,
        "vision_layers": 2,
        "text_layers": 1,
        "fusion_layers": 2,
        "patch_size": 16,
        "stem_channels": [16, 32],
        "keypoint_token": True,
    },
    "reference": {
        "hidden_size": 192,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "vision_layers": 4,
        "text_layers": 2,
        "fusion_layers": 2,
        "patch_size": 16,
        "stem_channels": [32, 64],
        "keypoint_token": True,
    },
    "large": {
        "hidden_size": 384,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "vision_layers": 8,
        "text_layers": 4,
        "fusion_layers": 4,
        "patch_size": 8,
        "stem_channels": [32, 64],
        "keypoint_token": True,
    },
    "xl": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vision_layers": 12,
        "text_layers": 6,
        "fusion_layers": 6,
        "patch_size": 8,
        "stem_channels": [64, 128],
        "keypoint_token": True,
    },
}


class TeacherConfig(PolicyConfig):
    """Architecture of the teacher: ViT, text transformer and fusion transformer.

    The defaults are the ``reference`` preset.
    """

    model_type = "vla_distill_teacher"
    policy_kind: ClassVar[str] = "teacher"
    presets: ClassVar[dict[str, dict[str, Any]]] = TEACHER_PRESETS

    hidden_size: int = 192
    """Width of every token in the vision, text and fusion transformers."""
    num_attention_heads: int = 3
    """Attention heads per layer, a divisor of hidden_size."""
    intermediate_size: int = 768
    """Width of the hidden layer of each transformer MLP."""
    vision_layers: int = 4
    """Number of transformer layers of the ViT image encoder."""
    text_layers: int = 2
    """Number of transformer layers over the instruction tokens."""
    fusion_layers: int = 2
    """Number of transformer layers over vision, text, state and action query tokens."""
    patch_size: int = 16
    """Side in pixels of the square image patch behind each vision token, a divisor of image_size."""
    stem_channels: list[int] = field(default_factory=lambda: [32, 64])
    """Output channels of the 3x3 stride-2 convolutions that run before patchifying (empty: none).

    Each halves the image, so patch_size must be a multiple of 2 ** len(stem_channels). The
    stem gives the ViT local features, such as the colour of a cube, before the patches are cut.
    """
    keypoint_token: bool = False
    """Whether one more vision token carries the stem's keypoints: the expected (x, y) of each
    stem channel under a softmax over its feature map (spatial softmax), projected to hidden_size.

    Mean-pooled or patch features locate a named cube only slowly; the keypoints give its
    position directly once a FiLM-modulated channel responds to that cube. False keeps the
    layout of checkpoints saved before the field existed.
    """
    dropout: float = 0.0
    """Dropout probability on attention weights and MLP outputs during training."""
    layer_norm_eps: float = 1e-6
    """Epsilon of every LayerNorm."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_architecture_fields()

    def validate_architecture_fields(self) -> None:
        """Raise ValueError if an architecture field is out of range or inconsistent."""
        check_int("hidden_size", self.hidden_size, 1)
        check_int("num_attention_heads", self.num_attention_heads, 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        check_int("intermediate_size", self.intermediate_size, 1)
        check_int("vision_layers", self.vision_layers, 1)
        check_int("text_layers", self.text_layers, 1)
        check_int("fusion_layers", self.fusion_layers, 1)
        check_int("patch_size", self.patch_size, 1)
        if not isinstance(self.stem_channels, (list, tuple)):
            raise ValueError(f"stem_channels must be a list of integers, got {self.stem_channels!r}")
        for value in self.stem_channels:
            check_int("stem_channels entry", value, 1)
        if not isinstance(self.keypoint_token, bool):
            raise ValueError(f"keypoint_token must be true or false, got {self.keypoint_token!r}")
        if self.patch_size % 2 ** len(self.stem_channels):
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of 2 ** len(stem_channels) "
                f"= {2 ** len(self.stem_channels)}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}"
            )
        check_float("dropout", self.dropout, 0.0, 1.0)
        check_float("layer_norm_eps", self.layer_norm_eps, 0.0)

    @property
    def num_patches(self) -> int:
        """Number of image patch tokens."""
        return (self.image_size // self.patch_size) ** 2
