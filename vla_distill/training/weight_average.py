"""Exponential moving average of a model's weights.

A small change of the weights can flip an action near a decision point of a task, and in
closed loop that change compounds over the episode. An average of the weights over the last
steps (horizon about ``1 / (1 - decay)`` steps) smooths out such step-to-step noise. The
average is kept beside the model and swapped into it only while it acts: rollouts,
evaluation and saving. Training always updates the model's own weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of every floating-point entry of a model's state dict.

    The decay of update ``n`` is ``min(decay, (1 + n) / (10 + n))``, so the first updates
    follow the model closely instead of averaging in its random initialisation. Integer
    entries are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"invalid decay {decay!r}: expected a number in (0, 1)")
        self.model = model
        self.decay = decay
        self.updates = 0
        # state_dict() tensors share storage with the model's parameters and buffers, and both
        # the optimizer and load_state_dict write in place, so this view stays current.
        self.model_state = model.state_dict()
        self.average = {name: value.detach().clone() for name, value in self.model_state.items()}

    def current_decay(self) -> float:
        """Return the decay that the next update applies."""
        count = self.updates + 1
        return min(self.decay, (1 + count) / (10 + count))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights."""
        weight = 1.0 - self.current_decay()
        for name, value in self.model_state.items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(value, weight)
            else:
                average.copy_(value)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """Load the averaged weights into the model for the duration of the block, then restore its own."""
        raw = {name: value.detach().clone() for name, value in self.model_state.items()}
        self.model.load_state_dict(self.average, strict=True)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(raw, strict=True)

    def state_dict(self) -> dict:
        """Return the decay, the update count and the averaged weights."""
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        """Restore the state returned by ``state_dict``."""
        if set(state["average"]) != set(self.average):
            raise ValueError(
                "invalid weight average state: its parameter names differ from the model's. "
                "Load it into a model of the architecture it was saved from"
            )
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.average = {name: value.detach().clone() for name, value in state["average"].items()}
