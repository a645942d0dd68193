"""Real observations for parity checks and calibration: expert rollouts or an episode file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_distill.data.demos import load_demos
from vla_distill.rollout import ExpertPolicy, run_episodes
from vla_distill.sim.tabletop.tasks import resolve_tasks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameSet:
    """Observations of N environment steps, in the layout of a batched env observation."""

    images: np.ndarray
    """uint8 (N, H, W, 3) camera images."""
    states: np.ndarray
    """float32 (N, S) proprioceptive states."""
    instructions: tuple[str, ...]
    """Instruction shown at each step."""
    source: str
    """Description of the frames' origin, written into reports."""

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.states) == len(self.instructions):
            raise ValueError(
                f"frame set has {len(self.images)} images, {len(self.states)} states and "
                f"{len(self.instructions)} instructions; all must have the same length"
            )
        if len(self.images) == 0:
            raise ValueError(f"frame set from {self.source} is empty")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, count: int) -> "FrameSet":
        """Return ``count`` frames spread evenly over the set (all frames if it has fewer)."""
        if count >= len(self):
            return self
        indices = np.unique(np.linspace(0, len(self) - 1, count).round().astype(np.int64))
        return FrameSet(
            images=self.images[indices],
            states=self.states[indices],
            instructions=tuple(self.instructions[i] for i in indices),
            source=self.source,
        )

    def batches(self, batch_size: int) -> Iterator[dict]:
        """Yield batched observations of ``batch_size`` frames. The last one may be smaller."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield {
                "image": self.images[start:stop],
                "state": self.states[start:stop],
                "instruction": self.instructions[start:stop],
            }

    def check_fits(self, image_size: int, state_dim: int) -> None:
        """Raise ValueError unless images are (image_size, image_size, 3) and states have state_dim values."""
        image_shape = tuple(self.images.shape[1:])
        if image_shape != (image_size, image_size, 3) or self.images.dtype != np.uint8:
            raise ValueError(
                f"frames from {self.source} are {self.images.dtype} images of shape {image_shape}, "
                f"but the policy expects uint8 images of shape {(image_size, image_size, 3)}"
            )
        if self.states.ndim != 2 or self.states.shape[1] != state_dim:
            raise ValueError(
                f"frames from {self.source} have states of shape {self.states.shape[1:]}, "
                f"but the policy expects {state_dim} state values"
            )


def frames_from_rollouts(tasks: str, episodes: int, seed: int, image_size: int) -> FrameSet:
    """Record every step of scripted-expert episodes: ``episodes`` per task, seeds seed, seed+1, ..."""
    pairs = [(task, seed + i) for task in resolve_tasks(tasks) for i in range(episodes)]
    records = run_episodes(ExpertPolicy(), pairs, image_size=image_size, record_steps=True)
    instructions = tuple(record.instruction for record in records for _ in record.images)
    frames = FrameSet(
        images=np.stack([image for record in records for image in record.images]),
        states=np.stack([state for record in records for state in record.states]).astype(np.float32),
        instructions=instructions,
        source=f"expert rollouts (tasks {tasks}, {episodes} episodes per task, seed {seed})",
    )
    logger.info("recorded %d frames from %d expert episodes", len(frames), len(records))
    return frames


def frames_from_demos(path: str | Path) -> FrameSet:
    """Load every step of an episode HDF5 file written by ``vla-distill collect``."""
    demos = load_demos(path)
    if len(demos.images) == 0:
        raise ValueError(f"episode file {path} contains no steps; collect at least one episode")
    return FrameSet(
        images=np.asarray(demos.images),
        states=np.asarray(demos.states, dtype=np.float32),
        instructions=tuple(demos.step_instructions()),
        source=str(path),
    )
