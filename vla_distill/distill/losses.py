"""Distillation losses for policies that predict discretised actions.

A policy output contains ``action_logits`` of shape (B, action_dim, bins), or
(B, chunk, action_dim, bins) for a chunked policy, and a ``features`` dict whose ``visual``
entry contains pooled visual features of shape (B, D). The teacher width D_t may differ from
the student width D_s.

Every loss function returns ``(loss, loss_dict)``. ``loss`` is a float32 scalar tensor that
keeps the autograd graph of the student inputs, and ``loss_dict`` maps each term name to its
detached value. All terms run in float32 with autocast disabled, so a bfloat16 forward pass
under ``torch.autocast`` does not lower their precision. Teacher tensors are detached, so no
gradient reaches the teacher.

Terms:

- ``kd``: soft-label loss, ``T^2 * D(teacher, student)`` over the bins of each action entry,
  where D is the forward KL, the reverse KL or the generalized Jensen-Shannon divergence.
- ``feature``: MSE or cosine distance between ``adapter(student visual features)`` and the
  teacher visual features.
- ``relation``: relational KD over the batch (RKD distance and angle terms, or
  similarity-preserving Gram matrices).
- ``hard``: cross-entropy to expert action bins and/or to the teacher's argmax bins.
- ``offset``: mean squared error of an offset head on the student's ``trunk`` features against
  the recorded target offsets (``vla_distill.training.losses.target_offset_loss``).

``DistillationLoss`` returns ``total = sum_i weight_i * term_i`` over the terms whose weight in
``DistillLossConfig`` is positive.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla_distill.training.losses import target_offset_loss

logger = logging.getLogger(__name__)

LossDict = dict[str, torch.Tensor]

KL_DIRECTIONS = ("forward", "reverse", "jsd")
FEATURE_LOSS_KINDS = ("mse", "cosine")
RELATION_KINDS = ("distance", "angle", "distance_angle", "similarity")
HARD_LABEL_TARGETS = ("expert", "teacher", "both")
OFFSET_FEATURE = "trunk"

# Squared norms and distances at or below this value are treated as zero. Such a pair gets a
# zero distance or unit vector with a zero gradient, because d sqrt(x)/dx is infinite at x = 0.
_ZERO_NORM_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class DistillLossConfig:
    """Weights and options of the distillation loss terms."""

    temperature: float = 2.0
    """Softmax temperature T applied to teacher and student logits in the soft-label term."""
    kd_loss_weight: float = 1.0
    """Weight of the soft-label term ``kd``, where 0 skips the term."""
    kl_direction: str = "forward"
    """Divergence of the soft-label term: 'forward' KL(t||s), 'reverse' KL(s||t) or 'jsd'."""
    jsd_beta: float = 0.5
    """Mixture weight beta in (0, 1) of the teacher in JSD_beta, used when kl_direction is 'jsd'."""
    feature_loss_weight: float = 0.0
    """Weight of the feature-matching term ``feature``, where 0 skips it and needs no adapter."""
    feature_loss_kind: str = "mse"
    """Distance of the feature term: 'mse' or 'cosine' (1 - cosine similarity)."""
    relation_loss_weight: float = 0.0
    """Weight of the relational term ``relation``, where 0 skips the term."""
    relation_kind: str = "distance"
    """Relational term: 'distance', 'angle', 'distance_angle' (RKD) or 'similarity' (SP)."""
    relation_angle_weight: float = 2.0
    """Weight of the RKD angle term relative to the distance term for 'distance_angle'."""
    hard_label_weight: float = 0.0
    """Weight of the cross-entropy term ``hard``, where 0 skips the term."""
    hard_label_target: str = "expert"
    """Targets of the hard-label term: 'expert' action bins, 'teacher' argmax bins, or 'both'."""
    target_offset_weight: float = 0.0
    """Weight of the auxiliary term ``offset``, where 0 skips it: a linear head on the student's
    ``trunk`` features predicts where the named cube and zone are (the data's target offsets)."""

    def __post_init__(self) -> None:
        _check_positive("temperature", self.temperature)
        for name in (
            "kd_loss_weight",
            "feature_loss_weight",
            "relation_loss_weight",
            "relation_angle_weight",
            "hard_label_weight",
            "target_offset_weight",
        ):
            _check_non_negative(name, getattr(self, name))
        _check_choice("kl_direction", self.kl_direction, KL_DIRECTIONS)
        _check_choice("feature_loss_kind", self.feature_loss_kind, FEATURE_LOSS_KINDS)
        _check_choice("relation_kind", self.relation_kind, RELATION_KINDS)
        _check_choice("hard_label_target", self.hard_label_target, HARD_LABEL_TARGETS)
        _check_open_unit_interval("jsd_beta", self.jsd_beta)
        if not any(weight > 0 for weight in self.term_weights().values()):
            raise ValueError(
                "all loss weights are 0 (kd_loss_weight, feature_loss_weight, relation_loss_weight, "
                "hard_label_weight, target_offset_weight). Set at least one of them above 0"
            )

    def term_weights(self) -> dict[str, float]:
        """Return the weight of each term, keyed by its name in loss_dict."""
        return {
            "kd": self.kd_loss_weight,
            "feature": self.feature_loss_weight,
            "relation": self.relation_loss_weight,
            "hard": self.hard_label_weight,
            "offset": self.target_offset_weight,
        }


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_positive(name: str, value: Any) -> None:
    if _check_number(name, value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}. Use a value such as 1.0 or 2.0")


def _check_non_negative(name: str, value: Any) -> None:
    if _check_number(name, value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}. Use 0 to turn the term off")


def _check_open_unit_interval(name: str, value: Any) -> None:
    if not 0 < _check_number(name, value) < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"invalid {name} {value!r}. Choose one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _autocast_disabled(reference: torch.Tensor) -> Iterator[None]:
    """Disable autocast on the device of ``reference`` so the enclosed ops run in float32."""
    with torch.autocast(device_type=reference.device.type, enabled=False):
        yield


def _expand_mask(mask: torch.Tensor | None, shape: torch.Size, name: str) -> torch.Tensor | None:
    """Broadcast a bool mask whose shape is a prefix of ``shape`` over the trailing dims."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape[: mask.dim()]):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not match the leading dims of "
            f"{tuple(shape)}. Pass a mask of shape {tuple(shape)} or a prefix of it such as (B,)"
        )
    trailing = (1,) * (len(shape) - mask.dim())
    return mask.reshape(*mask.shape, *trailing).expand(shape)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Average ``values`` over the entries where ``mask`` is True, or 0 if no entry is True.

    ``torch.where`` is used instead of multiplying by the mask, because an infinite value in a
    masked-out entry times 0 would give NaN.
    """
    if mask is None:
        return values.mean()
    mask = mask.to(values.device)
    selected = torch.where(mask, values, torch.zeros_like(values))
    return selected.sum() / mask.sum().clamp_min(1)


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, tensor_name: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher {tensor_name} must have the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if logits.dim() < 2:
        raise ValueError(
            f"{name} must have shape (B, action_dim, bins) or (B, chunk, action_dim, bins), "
            f"got {tuple(logits.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# Soft-label term
# ---------------------------------------------------------------------------------------------


def soft_label_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    direction: str = "forward",
    jsd_beta: float = 0.5,
    valid_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossDict]:
    """Compute the soft-label distillation loss over action bins.

    With ``p_t = softmax(teacher_logits / T)`` and ``p_s = softmax(student_logits / T)`` over
    the last (bin) dimension, each action entry gets a divergence D summed over its bins:

    - ``forward``: ``KL(p_t || p_s) = sum_k p_t[k] * (log p_t[k] - log p_s[k])``. This is the
      soft-target loss of Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".
    - ``reverse``: ``KL(p_s || p_t)``.
    - ``jsd``: ``JSD_beta(P || Q) = beta * KL(P || M) + (1 - beta) * KL(Q || M)`` with
      ``P = p_t`` (teacher), ``Q = p_s`` (student) and ``M = beta * P + (1 - beta) * Q``, the
      generalized JSD of Agarwal et al. 2024, "On-Policy Distillation of Language Models" (GKD).
      It is bounded by the binary entropy of beta (log 2 at beta = 0.5), and swapping teacher
      and student equals replacing beta by 1 - beta.

    Loss = ``T^2 * mean over valid entries of D``, where an entry is one (sample, chunk step,
    action dimension). The T^2 factor keeps gradient magnitudes roughly independent of T.

    Bins with probability 0 contribute nothing, with 0 * log 0 taken as 0. A bin set to -inf in
    both logits therefore gives a finite loss and finite gradients. A bin that is -inf only in
    the student while the teacher gives it mass makes the forward KL infinite, as it should be.

    Args:
        student_logits: (B, ..., bins) student logits.
        teacher_logits: teacher logits of the same shape, detached before use.
        temperature: softmax temperature T > 0.
        direction: 'forward', 'reverse' or 'jsd'.
        jsd_beta: mixture weight beta in (0, 1) of the teacher for 'jsd'.
        valid_mask: optional bool mask of shape ``logits.shape[:-1]`` or a prefix of it, True
            for entries that count. With no True entry the loss is 0.

    Returns:
        ``(loss, {"kd": loss.detach()})``.
    """
    _check_positive("temperature", temperature)
    _check_choice("direction", direction, KL_DIRECTIONS)
    if direction == "jsd":
        _check_open_unit_interval("jsd_beta", jsd_beta)
    _check_logits(student_logits, "student_logits")
    _check_same_shape(student_logits, teacher_logits, "action_logits")
    mask = _expand_mask(valid_mask, student_logits.shape[:-1], "valid_mask")

    with _autocast_disabled(student_logits):
        log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
        per_entry = _divergence_per_entry(log_p_teacher, log_p_student, direction, jsd_beta)
        loss = temperature**2 * _masked_mean(per_entry, mask)
    return loss, {"kd": loss.detach()}


def _divergence_per_entry(
    log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, direction: str, beta: float
) -> torch.Tensor:
    """Sum the chosen divergence over the last (bin) dimension."""
    if direction == "forward":
        per_bin = _kl_per_bin(log_p_teacher, log_p_student)
    elif direction == "reverse":
        per_bin = _kl_per_bin(log_p_student, log_p_teacher)
    else:
        per_bin = _jsd_per_bin(log_p_teacher, log_p_student, beta)
    return per_bin.sum(dim=-1)


def _kl_per_bin(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Return ``p * (log p - log q)`` per bin, with 0 wherever p == 0.

    ``log p - log q`` is NaN where both are -inf, so it is replaced by 0 before the product
    instead of after it. Masking only the product would still send NaN into the backward pass.
    """
    p = log_p.exp()
    support = p > 0
    log_ratio = torch.where(support, log_p - log_q, torch.zeros_like(log_p))
    return p * log_ratio


def _jsd_per_bin(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """Return ``beta * KL(P || M) + (1 - beta) * KL(Q || M)`` per bin, M = beta*P + (1-beta)*Q."""
    mixture = beta * log_p.exp() + (1.0 - beta) * log_q.exp()
    # M == 0 only where P == Q == 0, and those bins contribute 0, so log(1) = 0 is a safe filler.
    log_mixture = torch.log(torch.where(mixture > 0, mixture, torch.ones_like(mixture)))
    return beta * _kl_per_bin(log_p, log_mixture) + (1.0 - beta) * _kl_per_bin(log_q, log_mixture)


# ---------------------------------------------------------------------------------------------
# Feature term
# ---------------------------------------------------------------------------------------------


def feature_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    adapter: nn.Module | None = None,
    kind: str = "mse",
) -> tuple[torch.Tensor, LossDict]:
    """Compute the feature-matching loss between adapted student and teacher features.

    With ``h_s = adapter(student_features)`` of shape (B, D_t) and ``h_t = teacher_features``:

    - ``mse``: ``mean over all B * D_t elements of (h_s - h_t)^2``, as in FitNets
      (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets") with a linear regressor.
    - ``cosine``: ``mean over samples of 1 - cos(h_s, h_t)``, which ignores feature scale.

    The adapter runs in float32 inside this function. Without an adapter the student and
    teacher features must already have the same width.

    Returns:
        ``(loss, {"feature": loss.detach()})``.
    """
    _check_choice("kind", kind, FEATURE_LOSS_KINDS)
    with _autocast_disabled(student_features):
        projected = student_features.float()
        if adapter is not None:
            projected = adapter(projected)
        target = teacher_features.detach().float()
        _check_adapted_shape(projected, target, adapter)

        if kind == "mse":
            loss = F.mse_loss(projected, target, reduction="mean")
        else:
            cosine = F.cosine_similarity(projected, target, dim=-1)
            loss = (1.0 - cosine).mean()
    return loss, {"feature": loss.detach()}


def _check_adapted_shape(
    projected: torch.Tensor, target: torch.Tensor, adapter: nn.Module | None
) -> None:
    if projected.shape == target.shape:
        return
    hint = "Pass an adapter" if adapter is None else "Rebuild the adapter"
    raise ValueError(
        f"adapted student features of shape {tuple(projected.shape)} do not match teacher "
        f"features of shape {tuple(target.shape)}. {hint} with build_adapter(student_features, "
        f"teacher_features) from one batch"
    )


# ---------------------------------------------------------------------------------------------
# Relational term
# ---------------------------------------------------------------------------------------------


def relation_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    kind: str = "distance",
    angle_weight: float = 2.0,
) -> tuple[torch.Tensor, LossDict]:
    """Compute a relational KD loss that compares sample-to-sample structure within the batch.

    Student and teacher features of shape (B, ...) are flattened to (B, D_s) and (B, D_t).
    The widths may differ because each side is compared only with itself.

    - ``distance`` (RKD-D, Park et al. 2019, "Relational Knowledge Distillation"): pairwise
      Euclidean distances divided by their mean over the B * (B - 1) pairs i != j, compared with
      the Huber loss (smooth L1, threshold 1) and averaged over those pairs.
    - ``angle`` (RKD-A, same paper): for each anchor j the cosine of the angle between
      ``x_i - x_j`` and ``x_k - x_j``, compared with the Huber loss and averaged over the
      B * (B - 1)^2 triplets with i != j and k != j.
    - ``distance_angle``: ``distance + angle_weight * angle``. The RKD authors' metric-learning
      example uses distance and angle weights of 1 and 2.
    - ``similarity`` (SP, Tung and Mori 2019, "Similarity-Preserving Knowledge Distillation"):
      Gram matrices ``G = X X^T`` with L2-normalised rows, loss ``||G_s - G_t||_F^2 / B^2``.

    Coincident samples give a zero distance and a zero difference vector, with zero gradient
    through them instead of the infinite gradient of sqrt at 0. A batch of one sample has no
    pairs and returns 0, still connected to the student graph.

    NOTE: the distance and angle terms build a (B, B, D) tensor of differences and the angle
    term a (B, B, B) tensor, so memory grows as B^2 * D and B^3.

    Returns:
        ``(loss, loss_dict)`` with ``relation`` and, for RKD kinds, ``relation_distance`` and/or
        ``relation_angle`` (unweighted).
    """
    _check_choice("kind", kind, RELATION_KINDS)
    _check_non_negative("angle_weight", angle_weight)
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"student and teacher features must have the same batch size, got "
            f"{student_features.shape[0]} and {teacher_features.shape[0]}"
        )

    with _autocast_disabled(student_features):
        student = student_features.float().flatten(start_dim=1)
        teacher = teacher_features.detach().float().flatten(start_dim=1)
        if student.shape[0] < 2:
            loss = student.sum() * 0.0
            return loss, {"relation": loss.detach()}
        parts = _relation_parts(student, teacher, kind)

    if kind == "distance_angle":
        loss = parts["relation_distance"] + angle_weight * parts["relation_angle"]
    else:
        loss = next(iter(parts.values()))
    loss_dict = {name: value.detach() for name, value in parts.items() if name != "relation"}
    loss_dict["relation"] = loss.detach()
    return loss, loss_dict


def _relation_parts(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> LossDict:
    """Compute the unweighted relational terms that ``kind`` names."""
    if kind == "similarity":
        return {"relation": _similarity_loss(student, teacher)}
    parts: LossDict = {}
    if kind in ("distance", "distance_angle"):
        parts["relation_distance"] = _rkd_distance_loss(student, teacher)
    if kind in ("angle", "distance_angle"):
        parts["relation_angle"] = _rkd_angle_loss(student, teacher)
    return parts


def _safe_norm(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return L2 norms over the last dim and the mask of norms above ~0.

    A norm of ~0 is returned as exactly 0 with a zero gradient.
    """
    squared = vectors.pow(2).sum(dim=-1)
    nonzero = squared > _ZERO_NORM_EPS
    safe_squared = torch.where(nonzero, squared, torch.ones_like(squared))
    norms = torch.where(nonzero, safe_squared.sqrt(), torch.zeros_like(squared))
    return norms, nonzero


def _safe_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Scale vectors to unit L2 norm over the last dim. Vectors with norm ~0 become exactly 0.

    ``F.normalize`` divides a zero vector by eps, which gives a gradient of order 1/eps.
    """
    norms, nonzero = _safe_norm(vectors)
    safe_norms = torch.where(nonzero, norms, torch.ones_like(norms)).unsqueeze(-1)
    return torch.where(nonzero.unsqueeze(-1), vectors / safe_norms, torch.zeros_like(vectors))


def _pairwise_differences(features: torch.Tensor) -> torch.Tensor:
    """Return ``diff[j, i] = x_i - x_j`` of shape (B, B, D)."""
    return features.unsqueeze(0) - features.unsqueeze(1)


def _normalised_distances(features: torch.Tensor) -> torch.Tensor:
    """Return pairwise distances divided by their mean over pairs i != j."""
    batch_size = features.shape[0]
    distances, _ = _safe_norm(_pairwise_differences(features))
    mean_distance = distances.sum() / (batch_size * (batch_size - 1))
    return distances / mean_distance.clamp_min(_ZERO_NORM_EPS)


def _rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    batch_size = student.shape[0]
    student_distances = _normalised_distances(student)
    teacher_distances = _normalised_distances(teacher)
    # Both diagonals are exactly 0 and add 0 to the sum, so dividing the sum by the number
    # of off-diagonal pairs gives the mean over pairs i != j.
    total = F.smooth_l1_loss(student_distances, teacher_distances, reduction="sum")
    return total / (batch_size * (batch_size - 1))


def _angle_cosines(features: torch.Tensor) -> torch.Tensor:
    """Return ``cos[j, i, k]``, the cosine between ``x_i - x_j`` and ``x_k - x_j``."""
    unit = _safe_normalize(_pairwise_differences(features))
    return torch.bmm(unit, unit.transpose(1, 2))


def _rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    batch_size = student.shape[0]
    # Entries with i == j or k == j use the zero vector x_j - x_j on both sides, so they are
    # 0 in both tensors and the sum divided by B * (B - 1)^2 is the mean over valid triplets.
    total = F.smooth_l1_loss(_angle_cosines(student), _angle_cosines(teacher), reduction="sum")
    return total / (batch_size * (batch_size - 1) ** 2)


def _similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    batch_size = student.shape[0]
    student_gram = _safe_normalize(student @ student.T)
    teacher_gram = _safe_normalize(teacher @ teacher.T)
    return (student_gram - teacher_gram).pow(2).sum() / batch_size**2


# ---------------------------------------------------------------------------------------------
# Hard-label term
# ---------------------------------------------------------------------------------------------


def hard_label_loss(
    student_logits: torch.Tensor,
    expert_actions: torch.Tensor | None = None,
    has_expert: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    target: str = "expert",
    valid_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossDict]:
    """Compute the cross-entropy of the student logits to hard action-bin targets.

    - ``expert``: ``CE(student_logits, expert_actions)`` averaged over the valid entries of
      the samples with ``has_expert`` True. Without such samples the term is 0.
    - ``teacher``: ``CE(student_logits, argmax(teacher_logits))`` averaged over valid entries.
      The argmax does not depend on the temperature, so none is applied.
    - ``both``: the sum of the two.

    Args:
        student_logits: (B, ..., bins) student logits.
        expert_actions: int64 bin indices of shape ``student_logits.shape[:-1]``. Entries of
            samples without expert data are ignored and may contain any placeholder value.
        has_expert: optional bool tensor of shape (B,). None means every sample has expert data.
        teacher_logits: teacher logits of the same shape as the student's, needed for 'teacher'.
        target: 'expert', 'teacher' or 'both'.
        valid_mask: optional bool mask of shape ``logits.shape[:-1]`` or a prefix of it.

    Returns:
        ``(loss, loss_dict)`` with ``hard`` and, for 'both', ``hard_expert`` and ``hard_teacher``.
    """
    _check_choice("target", target, HARD_LABEL_TARGETS)
    _check_logits(student_logits, "student_logits")
    entry_shape = student_logits.shape[:-1]
    mask = _expand_mask(valid_mask, entry_shape, "valid_mask")

    parts: LossDict = {}
    with _autocast_disabled(student_logits):
        log_probs = F.log_softmax(student_logits.float(), dim=-1)
        if target in ("expert", "both"):
            parts["hard_expert"] = _expert_cross_entropy(
                log_probs, expert_actions, has_expert, mask
            )
        if target in ("teacher", "both"):
            parts["hard_teacher"] = _teacher_cross_entropy(log_probs, teacher_logits, mask)
        loss = sum(parts.values())

    loss_dict = {"hard": loss.detach()}
    if target == "both":
        loss_dict.update({name: value.detach() for name, value in parts.items()})
    return loss, loss_dict


def _expert_cross_entropy(
    log_probs: torch.Tensor,
    expert_actions: torch.Tensor | None,
    has_expert: torch.Tensor | None,
    valid_mask: torch.Tensor | None,
) -> torch.Tensor:
    entry_shape = log_probs.shape[:-1]
    if expert_actions is None:
        raise ValueError(
            "hard-label target 'expert' needs expert_actions of shape "
            f"{tuple(entry_shape)}. Pass them or set hard_label_target='teacher'"
        )
    sample_mask = _expand_mask(has_expert, entry_shape, "has_expert")
    mask = _combine_masks(sample_mask, valid_mask)
    _check_action_bins(expert_actions, entry_shape, log_probs.shape[-1], mask)
    return _masked_cross_entropy(log_probs, expert_actions, mask)


def _teacher_cross_entropy(
    log_probs: torch.Tensor, teacher_logits: torch.Tensor | None, valid_mask: torch.Tensor | None
) -> torch.Tensor:
    if teacher_logits is None:
        raise ValueError(
            "hard-label target 'teacher' needs teacher_logits. Pass them or set "
            "hard_label_target='expert'"
        )
    _check_same_shape(log_probs, teacher_logits, "action_logits")
    teacher_bins = teacher_logits.detach().argmax(dim=-1)
    return _masked_cross_entropy(log_probs, teacher_bins, valid_mask)


def _combine_masks(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    if first is None:
        return second
    if second is None:
        return first
    return first & second.to(first.device)


def _check_action_bins(
    actions: torch.Tensor, entry_shape: torch.Size, num_bins: int, mask: torch.Tensor | None
) -> None:
    if actions.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(
            f"expert_actions must contain integer bin indices, got dtype {actions.dtype}"
        )
    if actions.shape != entry_shape:
        raise ValueError(
            f"expert_actions must have shape {tuple(entry_shape)} (logits shape without the bin "
            f"dim), got {tuple(actions.shape)}"
        )
    # NOTE: min() and max() copy to the host, so on an accelerator this check synchronises
    # the device once per call.
    checked = actions if mask is None else actions[mask.to(actions.device)]
    if checked.numel() and (checked.min() < 0 or checked.max() >= num_bins):
        raise ValueError(
            f"expert_actions must lie in [0, {num_bins}), got values in "
            f"[{int(checked.min())}, {int(checked.max())}]. Discretise actions into {num_bins} bins"
        )


def _masked_cross_entropy(
    log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Return ``-log p[target]`` averaged over the entries where ``mask`` is True."""
    targets = targets.to(device=log_probs.device, dtype=torch.int64)
    if mask is not None:
        # Masked-out entries may contain placeholder bins such as -1, which gather cannot index.
        targets = torch.where(mask, targets, torch.zeros_like(targets))
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return _masked_mean(-picked, mask)


# ---------------------------------------------------------------------------------------------
# Combined loss
# ---------------------------------------------------------------------------------------------


class DistillationLoss(nn.Module):
    """Weighted sum of the distillation terms that ``DistillLossConfig`` enables.

    ``total = kd_loss_weight * kd + feature_loss_weight * feature
    + relation_loss_weight * relation + hard_label_weight * hard + target_offset_weight * offset``.

    A term with weight 0 is not computed, and its key is absent from loss_dict. The module owns
    the feature adapter and the offset head, so ``DistillationLoss.parameters()`` are the
    parameters that the trainer adds to the optimizer. Neither is part of the exported student.
    """

    def __init__(
        self, config: DistillLossConfig, adapter: nn.Module | None = None, offset_head: nn.Module | None = None
    ) -> None:
        super().__init__()
        if config.target_offset_weight > 0 and offset_head is None:
            raise ValueError(
                f"target_offset_weight is {config.target_offset_weight} but no offset head was given. "
                "Pass a linear layer from the student's trunk features to 5 offsets or set target_offset_weight=0"
            )
        self.offset_head = offset_head
        if config.feature_loss_weight > 0 and adapter is None:
            raise ValueError(
                f"feature_loss_weight is {config.feature_loss_weight} but no adapter was given. "
                "Build one with build_adapter(student_features, teacher_features) or set "
                "feature_loss_weight=0"
            )
        self.config = config
        self.adapter = adapter
        enabled = {name: weight for name, weight in config.term_weights().items() if weight > 0}
        logger.info("Distillation loss terms and weights: %s", enabled)

    def forward(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        expert_actions: torch.Tensor | None = None,
        has_expert: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
        target_offsets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LossDict]:
        """Compute the total loss and the detached value of every computed term.

        Args:
            student_outputs: a mapping or an object with ``action_logits`` and, for the feature
                and relation terms, ``features`` (a dict with ``visual`` or the visual tensor).
            teacher_outputs: the same for the teacher, for example cached tensors
                ``{"action_logits": logits, "features": {"visual": features}}``. A bare tensor
                is taken as the teacher action logits.
            expert_actions: int64 expert action bins of shape ``action_logits.shape[:-1]``.
            has_expert: bool tensor of shape (B,), True for samples with expert actions.
            valid_mask: bool mask of shape ``action_logits.shape[:-1]`` or a prefix of it.
            target_offsets: float32 (B, 5) offsets in metres, NaN where unknown, for the offset term.

        Returns:
            ``(total, loss_dict)``. loss_dict contains the unweighted terms ``kd``, ``feature``,
            ``relation`` and ``hard`` that were computed, their sub-terms, and the weighted
            ``total``, all as detached float32 scalar tensors.
        """
        terms, loss_dict = self._compute_terms(
            student_outputs, teacher_outputs, expert_actions, has_expert, valid_mask
        )
        if self.config.target_offset_weight > 0:
            terms["offset"] = self._offset_term(student_outputs, target_offsets)
            loss_dict["offset"] = terms["offset"].detach()
        weights = self.config.term_weights()
        total = sum(weights[name] * value for name, value in terms.items())
        loss_dict["total"] = total.detach()
        return total, loss_dict

    def _compute_terms(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        expert_actions: torch.Tensor | None,
        has_expert: torch.Tensor | None,
        valid_mask: torch.Tensor | None,
    ) -> tuple[LossDict, LossDict]:
        config = self.config
        terms: LossDict = {}
        loss_dict: LossDict = {}

        def record(name: str, result: tuple[torch.Tensor, LossDict]) -> None:
            terms[name], parts = result
            loss_dict.update(parts)

        if config.kd_loss_weight > 0:
            record("kd", self._soft_label_term(student_outputs, teacher_outputs, valid_mask))
        if config.feature_loss_weight > 0:
            record("feature", self._feature_term(student_outputs, teacher_outputs))
        if config.relation_loss_weight > 0:
            record("relation", self._relation_term(student_outputs, teacher_outputs))
        if config.hard_label_weight > 0:
            record(
                "hard",
                self._hard_label_term(
                    student_outputs, teacher_outputs, expert_actions, has_expert, valid_mask
                ),
            )
        return terms, loss_dict

    def _offset_term(self, student_outputs: Any, target_offsets: torch.Tensor | None) -> torch.Tensor:
        features = _output_field(student_outputs, "features")
        trunk = features.get(OFFSET_FEATURE) if isinstance(features, Mapping) else None
        if trunk is None or target_offsets is None:
            raise ValueError(
                f"the offset term needs the student's features[{OFFSET_FEATURE!r}] and target_offsets. "
                "Set target_offset_weight=0 for a student or data without them"
            )
        with _autocast_disabled(trunk):
            return target_offset_loss(self.offset_head(trunk.float()), target_offsets.float())

    def _soft_label_term(
        self, student_outputs: Any, teacher_outputs: Any, valid_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, LossDict]:
        return soft_label_loss(
            _action_logits(student_outputs, "student"),
            _action_logits(teacher_outputs, "teacher"),
            temperature=self.config.temperature,
            direction=self.config.kl_direction,
            jsd_beta=self.config.jsd_beta,
            valid_mask=valid_mask,
        )

    def _feature_term(
        self, student_outputs: Any, teacher_outputs: Any
    ) -> tuple[torch.Tensor, LossDict]:
        return feature_loss(
            _visual_features(student_outputs, "student"),
            _visual_features(teacher_outputs, "teacher"),
            adapter=self.adapter,
            kind=self.config.feature_loss_kind,
        )

    def _relation_term(
        self, student_outputs: Any, teacher_outputs: Any
    ) -> tuple[torch.Tensor, LossDict]:
        return relation_loss(
            _visual_features(student_outputs, "student"),
            _visual_features(teacher_outputs, "teacher"),
            kind=self.config.relation_kind,
            angle_weight=self.config.relation_angle_weight,
        )

    def _hard_label_term(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        expert_actions: torch.Tensor | None,
        has_expert: torch.Tensor | None,
        valid_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, LossDict]:
        target = self.config.hard_label_target
        needs_teacher = target in ("teacher", "both")
        return hard_label_loss(
            _action_logits(student_outputs, "student"),
            expert_actions=expert_actions,
            has_expert=has_expert,
            teacher_logits=_action_logits(teacher_outputs, "teacher") if needs_teacher else None,
            target=target,
            valid_mask=valid_mask,
        )


def _output_field(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _action_logits(outputs: Any, role: str) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        logits = outputs
    else:
        logits = _output_field(outputs, "action_logits")
    if not isinstance(logits, torch.Tensor):
        raise ValueError(
            f"{role} outputs have no 'action_logits' tensor (got {type(outputs).__name__}). "
            "Pass a mapping or object with action_logits of shape (B, action_dim, bins)"
        )
    return logits


def _visual_features(outputs: Any, role: str) -> torch.Tensor:
    features = None if isinstance(outputs, torch.Tensor) else _output_field(outputs, "features")
    if isinstance(features, Mapping):
        features = features.get("visual")
    if not isinstance(features, torch.Tensor):
        raise ValueError(
            f"{role} outputs have no visual features. Pass features={{'visual': tensor}} with "
            "the outputs, or set feature_loss_weight and relation_loss_weight to 0"
        )
    return features
