"""Compare two runners of the same policy on real frames: logits and decoded actions.

A runner maps a batched observation to ``(action_logits, actions)`` as numpy arrays. The
exporter compares PyTorch with ONNX Runtime, and an INT8 model with its float32 source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vla_distill.export.frames import FrameSet

# Bounds within which a float32 export must reproduce PyTorch. No option loosens them.
MAX_ABS_LOGIT_DIFF = 1e-4
MIN_ACTION_AGREEMENT = 0.999
PARITY_BATCH_SIZES = (1, 4)

Runner = Callable[[dict], tuple[np.ndarray, np.ndarray]]


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch policy within the parity bounds."""


@dataclass(frozen=True)
class ParityResult:
    """Largest logit difference and decoded-action agreement over a set of frames."""

    max_abs_diff: float
    """Largest absolute difference of any action logit, or inf if either side is not finite."""
    action_agreement: float
    """Fraction of action values (frames x action dimensions x batch sizes) that are equal."""
    batch_sizes: tuple[int, ...]
    """Batch sizes that were run, including a smaller last batch."""
    frames: int
    """Number of distinct frames compared at each batch size."""

    def failures(self) -> list[str]:
        """Describe each parity bound that this result violates."""
        problems = []
        if not self.max_abs_diff <= MAX_ABS_LOGIT_DIFF:
            problems.append(
                f"max abs logit difference {self.max_abs_diff:.3g} exceeds {MAX_ABS_LOGIT_DIFF:g} "
                f"by {self.max_abs_diff - MAX_ABS_LOGIT_DIFF:.3g}"
            )
        if not self.action_agreement >= MIN_ACTION_AGREEMENT:
            problems.append(
                f"decoded-action agreement {self.action_agreement:.4%} is below {MIN_ACTION_AGREEMENT:.1%} "
                f"by {MIN_ACTION_AGREEMENT - self.action_agreement:.4%}"
            )
        return problems

    @property
    def passed(self) -> bool:
        """Whether the result is within both parity bounds."""
        return not self.failures()

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values."""
        values = asdict(self)
        values["batch_sizes"] = list(self.batch_sizes)
        return values


def compare_runners(
    reference: Runner,
    candidate: Runner,
    frames: FrameSet,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
) -> ParityResult:
    """Run both runners on every frame at each batch size and compare their outputs."""
    max_abs_diff = 0.0
    equal_actions = 0
    total_actions = 0
    sizes_run = set()
    for batch_size in batch_sizes:
        for obs in frames.batches(batch_size):
            reference_logits, reference_actions = reference(obs)
            logits, actions = candidate(obs)
            check_same_shape("action_logits", reference_logits, logits)
            check_same_shape("actions", reference_actions, actions)
            max_abs_diff = max(max_abs_diff, largest_difference(reference_logits, logits))
            equal_actions += int(np.count_nonzero(reference_actions == actions))
            total_actions += reference_actions.size
            sizes_run.add(len(obs["image"]))
    return ParityResult(
        max_abs_diff=max_abs_diff,
        action_agreement=equal_actions / total_actions,
        batch_sizes=tuple(sorted(sizes_run)),
        frames=len(frames),
    )


def largest_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Return max |reference - candidate|, or inf if any difference is NaN or infinite."""
    difference = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    if not np.all(np.isfinite(difference)):
        return math.inf
    return float(difference.max(initial=0.0))


def check_same_shape(name: str, reference: np.ndarray, candidate: np.ndarray) -> None:
    """Raise ParityError if the two outputs differ in shape."""
    if reference.shape != candidate.shape:
        raise ParityError(f"{name} shapes differ: reference {reference.shape}, candidate {candidate.shape}")
