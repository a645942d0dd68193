"""Demonstration batches for behaviour cloning: episode split, sample order and augmentation.

Sample order and augmentation of training step ``s`` depend only on ``(seed, s)``, so a
resumed run draws exactly the batches that an uninterrupted run would have drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vla_distill.data.demos import Demos, concat_demos, load_demos
from vla_distill.policies.action_tokenizer import ActionTokenizer
from vla_distill.policies.contract import ATTENTION_MASK, IMAGE, INPUT_IDS, STATE
from vla_distill.policies.processor import PolicyProcessor

logger = logging.getLogger(__name__)

# Streams of numpy seed sequences, so that the split, order and augmentation draws differ.
SPLIT_STREAM, ORDER_STREAM, AUGMENT_STREAM, EVAL_SUBSET_STREAM = range(4)


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train, val) episode ids, with at least one of each when val_fraction > 0."""
    episodes = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n_episodes)
    if val_fraction == 0:
        return np.sort(episodes), np.array([], dtype=np.int64)
    if n_episodes < 2:
        raise ValueError(
            f"a validation split needs at least 2 episodes, the data has {n_episodes}; "
            "collect more episodes or set val_fraction to 0"
        )
    n_val = min(max(1, round(n_episodes * val_fraction)), n_episodes - 1)
    return np.sort(episodes[n_val:]), np.sort(episodes[:n_val])


class EpochOrder:
    """Sample indices of each training step: a fresh permutation of the train steps per epoch."""

    def __init__(self, n_samples: int, batch_size: int, seed: int) -> None:
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.seed = seed
        self._permutations: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> np.ndarray:
        """Return the positions (into the train set) of the samples of optimizer step ``step``."""
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = np.divmod(positions, self.n_samples)
        return np.array([self._permutation(int(e))[o] for e, o in zip(epochs, offsets)])

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            # Only the newest epoch is cached, because a batch spans at most two epochs in increasing order.
            rng = np.random.default_rng([self.seed, ORDER_STREAM, epoch])
            self._permutations = {epoch: rng.permutation(self.n_samples)}
        return self._permutations[epoch]


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image (B, H, W, 3) by up to ``max_shift`` pixels per axis, padding with edge pixels."""
    if max_shift == 0:
        return images
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    offsets = rng.integers(0, 2 * max_shift + 1, size=(len(images), 2))
    return np.stack([padded[i, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets)])


class DemoBatches:
    """Tokenised, binned demonstrations split by episode into train and validation steps."""

    def __init__(self, demos: Demos, processor: PolicyProcessor, tokenizer: ActionTokenizer, val_fraction: float, seed: int):
        self.demos = demos
        self.processor = processor
        self.seed = seed
        train_episodes, val_episodes = split_episodes(demos.n_episodes, val_fraction, seed)
        self.train_steps = np.flatnonzero(np.isin(demos.episode_index, train_episodes))
        self.val_steps = np.flatnonzero(np.isin(demos.episode_index, val_episodes))
        self.episode_ids, self.episode_mask = processor.tokenize(demos.episode_instruction)
        self.action_bins = torch.from_numpy(tokenizer.encode(demos.actions))  # int64 (N, action_dim)
        logger.info(
            "split %d episodes into %d train (%d steps) and %d validation (%d steps)",
            demos.n_episodes, len(train_episodes), len(self.train_steps), len(val_episodes), len(self.val_steps),
        )

    def batch(self, steps: np.ndarray, images: np.ndarray | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Return the policy batch and the target bins (B, action_dim) of dataset rows ``steps``.

        ``images`` replaces the stored images of those rows, e.g. with augmented copies.
        """
        pixels = self.demos.images[steps] if images is None else images
        episodes = torch.from_numpy(self.demos.episode_index[steps])
        batch = {
            IMAGE: self.processor.prepare_images(pixels),
            INPUT_IDS: self.episode_ids[episodes],
            ATTENTION_MASK: self.episode_mask[episodes],
            STATE: torch.from_numpy(np.ascontiguousarray(self.demos.states[steps], dtype=np.float32)),
        }
        return batch, self.action_bins[torch.from_numpy(steps)]

    def train_rows(self, order: EpochOrder, step: int) -> np.ndarray:
        """Return the dataset rows of training step ``step``."""
        return self.train_steps[order.indices(step)]

    def train_batch(self, rows: np.ndarray, step: int, max_shift: int):
        """Return the (batch, target bins) of ``rows`` for training step ``step``, augmented when max_shift > 0."""
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, step])
        return self.batch(rows, random_shift(self.demos.images[rows], max_shift, rng))

    def target_offsets(self, rows: np.ndarray) -> torch.Tensor:
        """Return the recorded target offsets (B, 5) in metres of dataset rows ``rows``."""
        if self.demos.target_offsets is None:
            raise ValueError(
                "these demonstrations have no target_offsets; collect them again with this version "
                "of `vla-distill collect`, or set target_offset_weight to 0"
            )
        return torch.from_numpy(np.ascontiguousarray(self.demos.target_offsets[rows], dtype=np.float32))

    def val_subset(self, max_samples: int) -> np.ndarray:
        """Return up to ``max_samples`` validation rows, a fixed random subset in dataset order."""
        if len(self.val_steps) <= max_samples:
            return self.val_steps
        rng = np.random.default_rng([self.seed, EVAL_SUBSET_STREAM])
        return np.sort(rng.choice(self.val_steps, size=max_samples, replace=False))


def load_training_demos(paths: str | Path | list[str | Path], config) -> Demos:
    """Load one or more demonstration files as one dataset and check it against the model config."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    demos = concat_demos([load_checked_demos(path, config) for path in paths])
    logger.info("loaded %d episodes (%d steps) from %d file(s)", demos.n_episodes, len(demos.actions), len(paths))
    return demos


def load_checked_demos(path: str | Path, config) -> Demos:
    """Load a demonstration file and check that it matches the model config."""
    demos = load_demos(path)
    if len(demos.actions) == 0:
        raise ValueError(f"demonstration file {path} has no committed steps; collect episodes first")
    expected_image = (config.image_size, config.image_size, 3)
    checks = (
        ("image shape", demos.images.shape[1:], expected_image, "image_size"),
        ("state size", demos.states.shape[1], config.state_dim, "state_dim"),
        ("action size", demos.actions.shape[1], config.action_dim, "action_dim"),
    )
    for quantity, found, expected, field_name in checks:
        if found != expected:
            raise ValueError(
                f"{path} has {quantity} {found} but the model expects {expected}; "
                f"set model_overrides.{field_name} or use matching demonstrations"
            )
    return demos
