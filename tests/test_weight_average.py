"""Moving average of model weights: the update rule, swapping in and out, and saving."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vla_distill.training.weight_average import WeightAverage


def constant_linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def set_weights(layer: nn.Linear, value: float) -> None:
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)


def test_update_follows_decay_schedule():
    layer = constant_linear(0.0)
    average = WeightAverage(layer, decay=0.9)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0] * 4, start=1):
        set_weights(layer, value)
        decay = min(0.9, (1 + step) / (10 + step))
        average.update()
        expected = decay * expected + (1 - decay) * value
        assert average.average["weight"][0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert average.updates == 20


def test_applied_swaps_and_restores():
    layer = constant_linear(0.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    average = WeightAverage(layer, decay=0.5)
    set_weights(layer, 4.0)
    average.update()  # first decay is min(0.5, 2 / 11)
    expected = 4.0 * (1 - 2 / 11)
    with average.applied() as model:
        assert model is layer
        assert layer.weight[0, 0].item() == pytest.approx(expected)
    assert layer.weight[0, 0].item() == 4.0
    assert optimizer.param_groups[0]["params"][0] is layer.weight


def test_state_round_trip():
    layer = constant_linear(1.0)
    average = WeightAverage(layer, decay=0.99)
    set_weights(layer, 3.0)
    average.update()
    restored = WeightAverage(constant_linear(7.0), decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.decay == 0.99
    assert restored.updates == 1
    assert torch.equal(restored.average["bias"], average.average["bias"])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_decay_outside_unit_interval_raises(decay):
    with pytest.raises(ValueError, match="invalid decay"):
        WeightAverage(nn.Linear(2, 1), decay)


def test_other_model_state_is_rejected():
    average = WeightAverage(nn.Linear(2, 1), decay=0.9)
    other = WeightAverage(nn.Sequential(nn.Linear(2, 1)), decay=0.9)
    with pytest.raises(ValueError, match="parameter names differ"):
        other.load_state_dict(average.state_dict())


def test_update_sees_optimizer_steps():
    layer = constant_linear(0.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    average = WeightAverage(layer, decay=0.5)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # every weight and the bias move from 0 to -1
    average.update()
    assert layer.weight[0, 0].item() == -1.0
    assert average.average["weight"][0, 0].item() == pytest.approx(-(1 - 2 / 11))
