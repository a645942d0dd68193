"""Feature adapter that maps student features to the teacher's feature width.

The feature-matching loss compares ``adapter(student_features)`` with the teacher's features,
so the adapter is trained together with the student. The trainer adds its parameters to the
optimizer, and the exporter leaves it out because the deployed student never runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)


class FeatureAdapter(nn.Module):
    """Linear projection from the student feature width to the teacher feature width.

    With ``layer_norm=True`` a LayerNorm over the student features runs before the projection.
    It normalises the scale of the student features, and the projection stays free to match
    the scale of the teacher features.
    """

    def __init__(self, student_dim: int, teacher_dim: int, layer_norm: bool = False) -> None:
        super().__init__()
        _check_width(student_dim, "student_dim")
        _check_width(teacher_dim, "teacher_dim")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.norm: nn.Module = nn.LayerNorm(student_dim) if layer_norm else nn.Identity()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_features: torch.Tensor) -> torch.Tensor:
        """Project features of shape (..., student_dim) to shape (..., teacher_dim)."""
        return self.proj(self.norm(student_features))


def build_adapter(
    student_features: Mapping[str, torch.Tensor] | torch.Tensor,
    teacher_features: Mapping[str, torch.Tensor] | torch.Tensor,
    key: str = "visual",
    layer_norm: bool = False,
) -> FeatureAdapter:
    """Create a FeatureAdapter sized from the features of one batch.

    The caller runs student and teacher once on the same batch (a dry forward pass, for example
    under ``torch.no_grad()``) and passes their ``features`` here, either as the dict of the
    policy outputs or as the feature tensor itself. The widths are the last dimension of
    ``features[key]``. The adapter is created in float32 on the device of the student features.
    """
    student_tensor = _select_features(student_features, key, "student")
    teacher_tensor = _select_features(teacher_features, key, "teacher")
    student_dim = student_tensor.shape[-1]
    teacher_dim = teacher_tensor.shape[-1]

    adapter = FeatureAdapter(student_dim, teacher_dim, layer_norm=layer_norm)
    adapter = adapter.to(device=student_tensor.device, dtype=torch.float32)
    logger.info(
        "Built feature adapter for %r features: student width %d -> teacher width %d, "
        "layer_norm=%s",
        key,
        student_dim,
        teacher_dim,
        layer_norm,
    )
    return adapter


def _select_features(
    features: Mapping[str, torch.Tensor] | torch.Tensor, key: str, role: str
) -> torch.Tensor:
    if isinstance(features, Mapping):
        if key not in features:
            raise ValueError(
                f"{role} features have no {key!r} entry (keys: {sorted(features)}). "
                f"Pass the features dict of the policy outputs or choose another key"
            )
        features = features[key]
    if not isinstance(features, torch.Tensor):
        raise ValueError(
            f"{role} features must be a tensor or a dict of tensors, got {type(features).__name__}"
        )
    if features.dim() < 2:
        raise ValueError(
            f"{role} features must have shape (batch, ..., width), "
            f"got shape {tuple(features.shape)}"
        )
    return features


def _check_width(width: int, name: str) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ValueError(f"{name} must be a positive int, got {width!r}")
