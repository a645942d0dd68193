"""Tests of the distillation losses and the feature adapter.

Golden values are computed by hand in the comments beside them, in nats.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vla_distill.distill.adapter import FeatureAdapter, build_adapter
from vla_distill.distill.losses import (
    DistillationLoss,
    DistillLossConfig,
    feature_loss,
    hard_label_loss,
    relation_loss,
    soft_label_loss,
)

NEG_INF = float("-inf")
ACTION_DIM = 3
NUM_BINS = 8


class TinyPolicy(nn.Module):
    """Conv encoder plus linear action head with the project's policy output layout."""

    def __init__(self, width: int, action_dim: int = ACTION_DIM, num_bins: int = NUM_BINS):
        super().__init__()
        self.action_dim = action_dim
        self.num_bins = num_bins
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, action_dim * num_bins)

    def forward(self, images: torch.Tensor) -> dict:
        visual = self.encoder(images)
        logits = self.head(visual).reshape(-1, self.action_dim, self.num_bins)
        return {"action_logits": logits, "features": {"visual": visual}}


def reference_kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) in nats from plain Python floats, skipping bins where p is 0."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax_list(logits: list[float]) -> list[float]:
    exps = [math.exp(value) for value in logits]
    return [value / sum(exps) for value in exps]


# ---------------------------------------------------------------------------------------------
# Soft-label term: golden values
# ---------------------------------------------------------------------------------------------


def test_forward_kl_golden_value():
    teacher = torch.tensor([[2.0, 1.0, 0.0]])
    student = torch.zeros(1, 3)

    loss, loss_dict = soft_label_loss(student, teacher, temperature=1.0, direction="forward")

    # lse = log(e^2 + e + 1) = log(11.1073) = 2.40761, so p_t = exp([2, 1, 0] - lse)
    # = [0.66524, 0.24473, 0.09003] and p_s = 1/3 everywhere.
    # KL(p_t || p_s) = sum p_t * z - lse + log 3 = (2 * 0.66524 + 0.24473) - 2.40761 + 1.09861
    # = 1.57521 - 2.40761 + 1.09861 = 0.26621.
    assert loss.item() == pytest.approx(0.2662, abs=1e-4)
    assert loss_dict["kd"].item() == pytest.approx(0.2662, abs=1e-4)
    # Averaging over the 3 bins instead of summing would give 0.26621 / 3 = 0.08874.
    assert loss.item() != pytest.approx(0.2662 / 3, abs=1e-3)


def test_reverse_kl_golden_value():
    teacher = torch.tensor([[2.0, 1.0, 0.0]])
    student = torch.zeros(1, 3)

    loss, _ = soft_label_loss(student, teacher, temperature=1.0, direction="reverse")

    # KL(p_s || p_t) = sum (1/3) * (log(1/3) - log p_t) = -log 3 - mean(z - lse)
    # = -1.09861 - (1 - 2.40761) = 0.30900.
    assert loss.item() == pytest.approx(0.3090, abs=1e-4)


def test_kl_from_log_probabilities():
    teacher = torch.tensor([[0.9, 0.1]]).log()
    student = torch.tensor([[0.5, 0.5]]).log()

    forward, _ = soft_label_loss(student, teacher, temperature=1.0, direction="forward")
    reverse, _ = soft_label_loss(student, teacher, temperature=1.0, direction="reverse")

    # forward = 0.9 * log(0.9 / 0.5) + 0.1 * log(0.1 / 0.5) = 0.9 * 0.58779 - 0.1 * 1.60944
    # = 0.52901 - 0.16094 = 0.36807.
    assert forward.item() == pytest.approx(0.3681, abs=1e-4)
    # reverse = 0.5 * log(0.5 / 0.9) + 0.5 * log(0.5 / 0.1) = 0.5 * (-0.58779 + 1.60944) = 0.51083.
    assert reverse.item() == pytest.approx(0.5108, abs=1e-4)


def test_jsd_golden_values_fix_teacher_as_p():
    teacher = torch.tensor([[0.9, 0.1]]).log()
    student = torch.tensor([[0.5, 0.5]]).log()

    half, _ = soft_label_loss(student, teacher, 1.0, direction="jsd", jsd_beta=0.5)
    tenth, _ = soft_label_loss(student, teacher, 1.0, direction="jsd", jsd_beta=0.1)

    # beta = 0.5: M = [0.7, 0.3].
    # KL(P || M) = 0.9 * log(9/7) + 0.1 * log(1/3) = 0.22618 - 0.10986 = 0.11632.
    # KL(Q || M) = 0.5 * log(5/7) + 0.5 * log(5/3) = -0.16824 + 0.25541 = 0.08718.
    # JSD = 0.5 * 0.11632 + 0.5 * 0.08718 = 0.10175.
    assert half.item() == pytest.approx(0.10175, abs=1e-4)
    # beta = 0.1 with P = teacher: M = 0.1 * [0.9, 0.1] + 0.9 * [0.5, 0.5] = [0.54, 0.46].
    # KL(P || M) = 0.9 * log(0.9/0.54) + 0.1 * log(0.1/0.46) = 0.45974 - 0.15261 = 0.30714.
    # KL(Q || M) = 0.5 * log(0.5/0.54) + 0.5 * log(0.5/0.46) = -0.03848 + 0.04169 = 0.00321.
    # JSD = 0.1 * 0.30714 + 0.9 * 0.00321 = 0.03071 + 0.00289 = 0.03360.
    assert tenth.item() == pytest.approx(0.03360, abs=1e-4)
    # With P = student instead, M = [0.86, 0.14] and the value would be
    # 0.1 * KL([0.5, 0.5] || M) + 0.9 * KL([0.9, 0.1] || M)
    # = 0.1 * 0.36532 + 0.9 * 0.00727 = 0.04307.
    assert tenth.item() != pytest.approx(0.04307, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Soft-label term: properties
# ---------------------------------------------------------------------------------------------


def _soft_loss_grad_norm(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    student = student.clone().requires_grad_(True)
    loss, _ = soft_label_loss(student, teacher, temperature=temperature)
    loss.backward()
    return student.grad.norm().item()


def test_soft_loss_gradient_scale_with_temperature():
    generator = torch.Generator().manual_seed(0)
    teacher = 2.0 * torch.randn(4, 7, 256, generator=generator)
    student = 2.0 * torch.randn(4, 7, 256, generator=generator)

    grad_t4 = _soft_loss_grad_norm(student, teacher, 4.0)
    grad_t20 = _soft_loss_grad_norm(student, teacher, 20.0)

    # For large T the gradient of KL w.r.t. the logits is about (z_s - z_t) / (T^2 * bins), so
    # T^2 * KL keeps it of the same order. Measured ratio for this seed: 1.07.
    assert 0.5 < grad_t4 / grad_t20 < 2.0
    # Dividing by T^2 removes the factor, so the ratio becomes about (20 / 4)^2 = 25.
    unscaled_ratio = (grad_t4 / 4.0**2) / (grad_t20 / 20.0**2)
    assert 12.0 < unscaled_ratio < 50.0


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_soft_loss_masked_bin(direction):
    teacher = torch.tensor([[1.0, 2.0, 0.5, NEG_INF]])
    student = torch.tensor([[0.0, 0.3, 1.0, NEG_INF]], requires_grad=True)

    loss, _ = soft_label_loss(student, teacher, temperature=1.0, direction=direction)
    loss.backward()

    # Bin 3 has probability 0 on both sides, so the loss is the KL over the first three bins.
    p_teacher = softmax_list([1.0, 2.0, 0.5])
    p_student = softmax_list([0.0, 0.3, 1.0])
    if direction == "forward":
        expected = reference_kl(p_teacher, p_student)
    else:
        expected = reference_kl(p_student, p_teacher)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert torch.isfinite(student.grad).all()
    assert student.grad[0, 3].item() == 0.0


def test_jsd_masked_bin_finite():
    teacher = torch.tensor([[1.0, 2.0, 0.5, NEG_INF]])
    student = torch.tensor([[0.0, 0.3, 1.0, NEG_INF]], requires_grad=True)

    loss, _ = soft_label_loss(student, teacher, 1.0, direction="jsd", jsd_beta=0.3)
    loss.backward()

    assert math.isfinite(loss.item())
    assert torch.isfinite(student.grad).all()


def test_jsd_symmetric_at_half_beta():
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(2, 5, 16, generator=generator)
    second = torch.randn(2, 5, 16, generator=generator)

    forward_order, _ = soft_label_loss(first, second, 1.0, direction="jsd", jsd_beta=0.5)
    swapped_order, _ = soft_label_loss(second, first, 1.0, direction="jsd", jsd_beta=0.5)

    assert forward_order.item() == pytest.approx(swapped_order.item(), rel=1e-5)


def test_jsd_swap_equals_complementary_beta():
    generator = torch.Generator().manual_seed(2)
    first = torch.randn(2, 5, 16, generator=generator)
    second = torch.randn(2, 5, 16, generator=generator)

    loss, _ = soft_label_loss(first, second, 1.0, direction="jsd", jsd_beta=0.2)
    swapped, _ = soft_label_loss(second, first, 1.0, direction="jsd", jsd_beta=0.8)

    # M = 0.2 * P + 0.8 * Q is the same mixture after swapping P, Q and beta, 1 - beta.
    assert loss.item() == pytest.approx(swapped.item(), rel=1e-5)


def test_jsd_bounds():
    # Nearly disjoint distributions reach the bound, which is the binary entropy of beta.
    teacher = torch.tensor([[30.0, -30.0]])
    student = torch.tensor([[-30.0, 30.0]])

    half, _ = soft_label_loss(student, teacher, 1.0, direction="jsd", jsd_beta=0.5)
    fifth, _ = soft_label_loss(student, teacher, 1.0, direction="jsd", jsd_beta=0.2)

    assert half.item() <= math.log(2) + 1e-6
    assert half.item() == pytest.approx(math.log(2), abs=1e-4)
    # Binary entropy of 0.2 = -0.2 * log 0.2 - 0.8 * log 0.8 = 0.32189 + 0.17851 = 0.50040.
    assert fifth.item() <= 0.50041
    assert fifth.item() == pytest.approx(0.50040, abs=1e-4)


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
def test_soft_loss_zero_for_identical_inputs(direction):
    logits = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(3))

    loss, _ = soft_label_loss(logits.clone(), logits, temperature=2.0, direction=direction)

    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_soft_loss_valid_mask_averages_valid_entries():
    teacher = torch.tensor([[[2.0, 1.0, 0.0], [5.0, -5.0, 0.0]]])
    student = torch.zeros(1, 2, 3)
    valid_mask = torch.tensor([[True, False]])

    loss, _ = soft_label_loss(student, teacher, temperature=1.0, valid_mask=valid_mask)

    # Only the first entry counts, and its forward KL is 0.26621 (see the golden test).
    assert loss.item() == pytest.approx(0.2662, abs=1e-4)


def test_soft_loss_masked_out_infinite_entry():
    # In entry 1 the student gives bin 0 no mass while the teacher does, so its forward KL is
    # infinite. Masking the entry out must drop it instead of computing inf * 0 = NaN.
    teacher = torch.tensor([[[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]])
    student = torch.tensor([[[0.0, 0.0, 0.0], [NEG_INF, 0.0, 0.0]]], requires_grad=True)

    loss, _ = soft_label_loss(student, teacher, valid_mask=torch.tensor([[True, False]]))
    loss.backward()

    assert loss.item() == pytest.approx(0.2662, abs=1e-4)
    assert torch.isfinite(student.grad).all()


def test_soft_loss_all_invalid_is_zero():
    teacher = torch.randn(2, 3, 8)
    student = torch.randn(2, 3, 8, requires_grad=True)

    loss, _ = soft_label_loss(student, teacher, valid_mask=torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()

    assert loss.item() == 0.0
    assert torch.count_nonzero(student.grad) == 0


def test_soft_loss_chunked_with_sample_mask():
    generator = torch.Generator().manual_seed(4)
    teacher = torch.randn(3, 4, 2, 16, generator=generator)
    student = torch.randn(3, 4, 2, 16, generator=generator)
    has_sample = torch.tensor([True, False, True])

    masked, _ = soft_label_loss(student, teacher, valid_mask=has_sample)
    subset, _ = soft_label_loss(student[has_sample], teacher[has_sample])

    # A (B,) mask covers every chunk step and action dimension of its sample.
    assert masked.item() == pytest.approx(subset.item(), rel=1e-6)


def test_soft_loss_teacher_detached():
    teacher = torch.randn(2, 3, 8, requires_grad=True)
    student = torch.randn(2, 3, 8, requires_grad=True)

    loss, _ = soft_label_loss(student, teacher, temperature=2.0)
    loss.backward()

    assert teacher.grad is None
    assert student.grad is not None


def test_soft_loss_rejects_bad_arguments():
    logits = torch.zeros(2, 3, 8)

    with pytest.raises(ValueError, match="temperature"):
        soft_label_loss(logits, logits, temperature=0.0)
    with pytest.raises(ValueError, match="direction"):
        soft_label_loss(logits, logits, direction="backward")
    with pytest.raises(ValueError, match="same shape"):
        soft_label_loss(logits, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="valid_mask"):
        soft_label_loss(logits, logits, valid_mask=torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Feature term and adapter
# ---------------------------------------------------------------------------------------------


def test_feature_loss_golden_values():
    student = torch.tensor([[1.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0]])

    mse, loss_dict = feature_loss(student, teacher, kind="mse")
    cosine, _ = feature_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]), kind="cosine")

    # (1^2 + 2^2) / 2 elements = 2.5.
    assert mse.item() == pytest.approx(2.5)
    assert loss_dict["feature"].item() == pytest.approx(2.5)
    # Orthogonal vectors have cosine 0, so 1 - cos = 1.
    assert cosine.item() == pytest.approx(1.0)


def test_feature_loss_width_mismatch_without_adapter():
    with pytest.raises(ValueError, match="build_adapter"):
        feature_loss(torch.zeros(2, 4), torch.zeros(2, 6))


def test_build_adapter_sizes_from_dry_pass():
    torch.manual_seed(0)
    student = TinyPolicy(width=4)
    teacher = TinyPolicy(width=10)
    images = torch.randn(2, 3, 6, 6)

    with torch.no_grad():
        student_features = student(images)["features"]
        teacher_features = teacher(images)["features"]
    adapter = build_adapter(student_features, teacher_features, layer_norm=True)

    assert isinstance(adapter, FeatureAdapter)
    assert adapter.proj.in_features == 4
    assert adapter.proj.out_features == 10
    assert isinstance(adapter.norm, nn.LayerNorm)
    assert adapter(student_features["visual"]).shape == (2, 10)


def test_build_adapter_missing_key():
    with pytest.raises(ValueError, match="'visual'"):
        build_adapter({"proprio": torch.zeros(2, 4)}, {"visual": torch.zeros(2, 8)})


# ---------------------------------------------------------------------------------------------
# Relational term
# ---------------------------------------------------------------------------------------------


def test_relation_distance_golden_value():
    # Student points 0, 1, 2 lie on a line, and teacher points lie on an equilateral
    # triangle of side 1.
    student = torch.tensor([[0.0], [1.0], [2.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])

    loss, _ = relation_loss(student, teacher, kind="distance")

    # Student distances (1, 2, 1) have mean 4/3 and normalise to (0.75, 1.5, 0.75), and the teacher
    # normalises to (1, 1, 1). Huber with threshold 1 is 0.5 * d^2 for |d| < 1:
    # 0.5 * (0.0625 + 0.25 + 0.0625) / 3 pairs = 0.0625.
    assert loss.item() == pytest.approx(0.0625, abs=1e-6)


@pytest.mark.parametrize("kind", ["distance", "angle", "distance_angle", "similarity"])
def test_relation_loss_coincident_rows_finite(kind):
    generator = torch.Generator().manual_seed(5)
    student = torch.randn(5, 6, generator=generator)
    student[1] = student[0]
    student.requires_grad_(True)
    teacher = torch.randn(5, 12, generator=generator)

    loss, _ = relation_loss(student, teacher, kind=kind)
    loss.backward()

    assert math.isfinite(loss.item())
    assert loss.item() > 0.0
    assert torch.isfinite(student.grad).all()
    # A unit vector taken as x / eps would give gradients of order 1 / eps = 1e12.
    assert student.grad.abs().max() < 1e3


@pytest.mark.parametrize("kind", ["distance", "angle", "distance_angle", "similarity"])
def test_relation_loss_single_sample_is_zero(kind):
    student = torch.randn(1, 6, requires_grad=True)

    loss, loss_dict = relation_loss(student, torch.randn(1, 9), kind=kind)
    loss.backward()

    assert loss.item() == 0.0
    assert loss_dict["relation"].item() == 0.0
    assert torch.count_nonzero(student.grad) == 0


@pytest.mark.parametrize("kind", ["distance", "angle", "distance_angle", "similarity"])
def test_relation_loss_invariant_to_rotation_and_scale(kind):
    generator = torch.Generator().manual_seed(6)
    student = torch.randn(6, 4, generator=generator)
    # Columns of `basis` are orthonormal, so x -> 3 * x @ basis.T keeps every distance ratio,
    # angle and normalised Gram row while widening the features from 4 to 9.
    basis, _ = torch.linalg.qr(torch.randn(9, 4, generator=generator))
    teacher = 3.0 * student @ basis.T

    loss, _ = relation_loss(student, teacher, kind=kind)

    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_relation_distance_angle_weighting():
    generator = torch.Generator().manual_seed(7)
    student = torch.randn(4, 5, generator=generator)
    teacher = torch.randn(4, 7, generator=generator)

    loss, loss_dict = relation_loss(student, teacher, kind="distance_angle", angle_weight=2.0)

    expected = loss_dict["relation_distance"] + 2.0 * loss_dict["relation_angle"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Hard-label term
# ---------------------------------------------------------------------------------------------


def test_hard_label_expert_with_has_expert():
    logits = torch.zeros(2, 2, 4)
    logits[1] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    # Sample 1 has no expert data and contains the placeholder bin -1.
    expert_actions = torch.tensor([[0, 3], [-1, -1]])
    has_expert = torch.tensor([True, False])

    loss, loss_dict = hard_label_loss(logits, expert_actions, has_expert=has_expert)

    # Sample 0 has uniform logits over 4 bins, so CE = log 4 = 1.38629 for both entries.
    assert loss.item() == pytest.approx(math.log(4), abs=1e-6)
    assert loss_dict["hard"].item() == pytest.approx(math.log(4), abs=1e-6)


def test_hard_label_no_expert_samples_is_zero():
    logits = torch.zeros(2, 3, 4, requires_grad=True)
    expert_actions = torch.zeros(2, 3, dtype=torch.int64)

    loss, _ = hard_label_loss(logits, expert_actions, has_expert=torch.tensor([False, False]))
    loss.backward()

    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_hard_label_teacher_and_both():
    student = torch.tensor([[[0.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[0.1, 3.0, 0.2]]])
    expert_actions = torch.tensor([[0]])

    teacher_loss, _ = hard_label_loss(student, teacher_logits=teacher, target="teacher")
    both, loss_dict = hard_label_loss(
        student, expert_actions, teacher_logits=teacher, target="both"
    )

    # Uniform student over 3 bins: CE to any bin is log 3 = 1.09861, and 'both' adds two of them.
    assert teacher_loss.item() == pytest.approx(math.log(3), abs=1e-6)
    assert both.item() == pytest.approx(2 * math.log(3), abs=1e-6)
    assert loss_dict["hard_expert"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert loss_dict["hard_teacher"].item() == pytest.approx(math.log(3), abs=1e-6)


def test_hard_label_teacher_argmax_target():
    student = torch.tensor([[[2.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0, 9.0]]])

    loss, _ = hard_label_loss(student, teacher_logits=teacher, target="teacher")

    # Target bin 2: CE = lse([2, 0, 0]) - 0 = log(e^2 + 2) = log(9.38906) = 2.23954.
    assert loss.item() == pytest.approx(2.23954, abs=1e-5)


def test_hard_label_rejects_bad_targets():
    logits = torch.zeros(2, 3, 4)

    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        hard_label_loss(logits, torch.full((2, 3), 4))
    with pytest.raises(ValueError, match="shape"):
        hard_label_loss(logits, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        hard_label_loss(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="expert_actions"):
        hard_label_loss(logits, None)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"kd_loss_weight": -0.1},
        {"feature_loss_weight": -1.0},
        {"relation_loss_weight": -1.0},
        {"hard_label_weight": -1.0},
        {"relation_angle_weight": -1.0},
        {"jsd_beta": 0.0},
        {"jsd_beta": 1.0},
        {"kl_direction": "backward"},
        {"feature_loss_kind": "l1"},
        {"relation_kind": "triplet"},
        {"hard_label_target": "oracle"},
        {"kd_loss_weight": 0.0},
    ],
)
def test_config_rejects_invalid_values(overrides):
    with pytest.raises(ValueError):
        DistillLossConfig(**overrides)


def test_config_error_names_value_and_choices():
    with pytest.raises(ValueError, match="'backward'.*forward, reverse, jsd"):
        DistillLossConfig(kl_direction="backward")


def test_distillation_loss_requires_adapter_for_feature_term():
    with pytest.raises(ValueError, match="build_adapter"):
        DistillationLoss(DistillLossConfig(feature_loss_weight=1.0))


# ---------------------------------------------------------------------------------------------
# Combined loss
# ---------------------------------------------------------------------------------------------


def _policy_outputs(batch_size: int, width: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "action_logits": torch.randn(batch_size, ACTION_DIM, NUM_BINS, generator=generator),
        "features": {"visual": torch.randn(batch_size, width, generator=generator)},
    }


def test_zero_weight_terms_not_computed():
    config = DistillLossConfig(
        kd_loss_weight=1.0, hard_label_weight=0.5, hard_label_target="teacher"
    )
    loss_fn = DistillationLoss(config)
    # The outputs carry no features, so computing the feature or relation term would raise.
    student_logits = torch.randn(2, ACTION_DIM, NUM_BINS)
    teacher_logits = torch.randn(2, ACTION_DIM, NUM_BINS)

    total, loss_dict = loss_fn({"action_logits": student_logits}, teacher_logits)

    assert set(loss_dict) == {"kd", "hard", "total"}
    assert total.item() == pytest.approx(
        1.0 * loss_dict["kd"].item() + 0.5 * loss_dict["hard"].item(), rel=1e-6
    )


def test_offset_term_needs_a_head():
    with pytest.raises(ValueError, match="no offset head"):
        DistillationLoss(DistillLossConfig(target_offset_weight=1.0))


def test_offset_term_added_to_total():
    config = DistillLossConfig(kd_loss_weight=1.0, target_offset_weight=2.0)
    head = nn.Linear(3, 5)
    loss_fn = DistillationLoss(config, offset_head=head)
    student = _policy_outputs(2, 4, seed=0)
    student["features"]["trunk"] = torch.randn(2, 3)
    teacher = _policy_outputs(2, 4, seed=1)
    offsets = torch.tensor([[0.1, 0.0, -0.1, float("nan"), float("nan")], [0.0, 0.1, 0.0, 0.05, 0.05]])

    total, loss_dict = loss_fn(student, teacher, target_offsets=offsets)

    predicted = head(student["features"]["trunk"])
    known = torch.isfinite(offsets)
    expected = ((predicted[known] - 10 * offsets[known]) ** 2).mean()
    assert loss_dict["offset"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert total.item() == pytest.approx(loss_dict["kd"].item() + 2.0 * expected.item(), rel=1e-6)


def test_total_is_weighted_sum_of_terms():
    torch.manual_seed(0)
    student = _policy_outputs(4, width=6, seed=10)
    teacher = _policy_outputs(4, width=12, seed=11)
    adapter = build_adapter(student["features"], teacher["features"])
    config = DistillLossConfig(
        temperature=3.0,
        kd_loss_weight=0.7,
        feature_loss_weight=0.2,
        relation_loss_weight=0.3,
        relation_kind="distance_angle",
        hard_label_weight=0.4,
        hard_label_target="both",
    )
    loss_fn = DistillationLoss(config, adapter=adapter)
    expert_actions = torch.randint(0, NUM_BINS, (4, ACTION_DIM))

    total, loss_dict = loss_fn(student, teacher, expert_actions=expert_actions)

    expected = (
        0.7 * loss_dict["kd"]
        + 0.2 * loss_dict["feature"]
        + 0.3 * loss_dict["relation"]
        + 0.4 * loss_dict["hard"]
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss_dict["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert all(not value.requires_grad for value in loss_dict.values())
    # Each weighted term equals the standalone loss function with the same arguments.
    kd, _ = soft_label_loss(student["action_logits"], teacher["action_logits"], temperature=3.0)
    assert loss_dict["kd"].item() == pytest.approx(kd.item(), rel=1e-6)


def test_missing_features_raise():
    loss_fn = DistillationLoss(DistillLossConfig(relation_loss_weight=1.0))
    logits = torch.randn(2, ACTION_DIM, NUM_BINS)

    with pytest.raises(ValueError, match="visual features"):
        loss_fn({"action_logits": logits}, {"action_logits": logits})


def test_optimizer_step_updates_adapter_not_teacher():
    torch.manual_seed(0)
    student = TinyPolicy(width=4)
    teacher = TinyPolicy(width=10).eval()
    teacher.requires_grad_(False)
    images = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        teacher_outputs = teacher(images)
        dry_student_outputs = student(images)
    adapter = build_adapter(dry_student_outputs["features"], teacher_outputs["features"])
    config = DistillLossConfig(
        kd_loss_weight=1.0, feature_loss_weight=1.0, relation_loss_weight=1.0
    )
    loss_fn = DistillationLoss(config, adapter=adapter)
    optimizer = torch.optim.AdamW(
        list(student.parameters()) + list(loss_fn.parameters()), lr=1e-2
    )
    adapter_before = adapter.proj.weight.detach().clone()
    student_before = student.head.weight.detach().clone()
    teacher_before = [param.detach().clone() for param in teacher.parameters()]

    total, _ = loss_fn(student(images), teacher_outputs)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()

    assert not torch.equal(adapter.proj.weight, adapter_before)
    assert not torch.equal(student.head.weight, student_before)
    for param, before in zip(teacher.parameters(), teacher_before):
        assert torch.equal(param, before)
        assert param.grad is None


def test_losses_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    student = TinyPolicy(width=4)
    teacher = TinyPolicy(width=10)
    images = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        teacher_outputs = teacher(images)
    adapter = build_adapter(student(images)["features"], teacher_outputs["features"])
    config = DistillLossConfig(
        kd_loss_weight=1.0,
        feature_loss_weight=1.0,
        relation_loss_weight=1.0,
        hard_label_weight=1.0,
        hard_label_target="teacher",
    )
    loss_fn = DistillationLoss(config, adapter=adapter)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        student_outputs = student(images)
        total, loss_dict = loss_fn(student_outputs, teacher_outputs)
    # The same bfloat16 outputs with autocast off give the float32 reference.
    reference_total, _ = loss_fn(student_outputs, teacher_outputs)

    assert student_outputs["action_logits"].dtype == torch.bfloat16
    assert total.dtype == torch.float32
    for name, value in loss_dict.items():
        assert value.dtype == torch.float32, name
    assert total.item() == pytest.approx(reference_total.item(), rel=1e-6)
