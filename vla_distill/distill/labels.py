"""Teacher labels cached in HDF5: the layout, the teacher key, labelling and the label store.

Layout of ``labels-<key[:16]>.h5`` (N labelled steps, E episodes, A action dims, K bins,
D teacher feature width):

| path               | dtype / shape          | meaning                                        |
|--------------------|------------------------|------------------------------------------------|
| images             | uint8 (N, H, W, 3)     | camera image, gzip, chunks of 16 frames        |
| states             | float32 (N, S)         | proprioceptive state                           |
| expert_actions     | float32 (N, A)         | expert action, zeros where has_expert is False |
| has_expert         | bool (N,)              | whether the step has an expert action          |
| target_offsets     | float32 (N, 5)         | named cube and zone offsets, NaN where unknown |
| teacher_logits     | float16 (N, A, K)      | teacher action logits on the unshifted image   |
| teacher_features   | float16 (N, D)         | teacher ``features["visual"]``                 |
| round              | int64 (N,)             | collection round of the step (0 = offline)     |
| episode_index      | int64 (N,)             | episode of the step                            |
| episode_task       | str (E,)               | task name                                      |
| episode_instruction| str (E,)               | instruction of every step of the episode       |
| episode_seed       | int64 (E,)             | ``reset(seed=...)`` of the episode             |
| episode_success    | bool (E,)              | whether the episode ended in success           |
| episode_round      | int64 (E,)             | collection round of the episode                |

Root attributes: ``format``, ``format_version``, ``teacher_key`` (full hex), ``teacher_path``,
and the commit counters ``n_rows``, ``n_episodes`` and ``collected_rounds``. A round is
appended whole and committed by raising the counters after a flush, so rows beyond
``n_rows`` belong to a round whose write was interrupted. Readers ignore them and the next
append overwrites them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from vla_distill.data.demos import IMAGE_CHUNK_FRAMES, STRING_DTYPE, TARGET_OFFSET_DIM
from vla_distill.policies.io import checkpoint_hash

logger = logging.getLogger(__name__)

LABEL_FORMAT = "vla-distill-teacher-labels"
LABEL_FORMAT_VERSION = 2
# Rows per HDF5 chunk of the other per-step fields, so a chunk always contains whole rows.
ROW_CHUNK_ROWS = 256
EPISODE_FIELDS = {
    "episode_task": STRING_DTYPE,
    "episode_instruction": STRING_DTYPE,
    "episode_seed": np.int64,
    "episode_success": np.bool_,
    "episode_round": np.int64,
}


def teacher_label_key(teacher_path: str | Path, processor) -> str:
    """Return the hex sha256 that identifies the labels a teacher and its processor produce.

    It covers ``checkpoint_hash`` (config.json, model.safetensors, tokenizer.json) and the
    processor's tokenizer and image and state settings, so a processor changed in memory
    also gets a new key.
    """
    digest = hashlib.sha256()
    digest.update(checkpoint_hash(teacher_path).encode())
    digest.update(processor.tokenizer.to_str().encode())
    settings = {
        "image_size": processor.image_size,
        "state_dim": processor.state_dim,
        "image_mean": processor.mean.tolist(),
        "image_std": processor.std.tolist(),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def label_file_path(out_dir: str | Path, teacher_key: str) -> Path:
    """Return the label file of a run folder for a teacher key."""
    return Path(out_dir) / f"labels-{teacher_key[:16]}.h5"


@torch.no_grad()
def label_steps(
    teacher, images: np.ndarray, states: np.ndarray, instructions: list[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run the teacher on every step and return float16 logits (N, A, K) and features (N, D).

    The teacher runs in eval mode on batches of ``batch_size`` unshifted images.
    """
    teacher.eval()
    processor = teacher.processor
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        input_ids, attention_mask = processor.tokenize(instructions[start:stop])
        batch = {
            "image": processor.prepare_images(images[start:stop]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "state": processor.prepare_states(states[start:stop]),
        }
        outputs = teacher(batch)
        logits.append(outputs.action_logits.to(torch.float16).numpy())
        features.append(outputs.features["visual"].to(torch.float16).numpy())
    return np.concatenate(logits), np.concatenate(features)


@dataclass
class CollectedSteps:
    """Observations and episodes of one collection round, before teacher labelling."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    states: np.ndarray  # float32 (N, S)
    expert_actions: np.ndarray  # float32 (N, A), zeros where has_expert is False
    has_expert: np.ndarray  # bool (N,)
    target_offsets: np.ndarray  # float32 (N, 5), NaN where unknown (see TabletopEnv.target_offsets)
    episode_index: np.ndarray  # int64 (N,), 0-based within the round
    episode_task: list[str]
    episode_instruction: list[str]
    episode_seed: np.ndarray  # int64 (E,)
    episode_success: np.ndarray  # bool (E,)

    @property
    def n_rows(self) -> int:
        return len(self.images)

    def step_instructions(self) -> list[str]:
        """Return the instruction of every step."""
        return [self.episode_instruction[i] for i in self.episode_index]


@dataclass
class LabelledRound:
    """The steps of one collection round with the teacher's outputs, ready to append."""

    round_index: int
    steps: CollectedSteps
    teacher_logits: np.ndarray  # float16 (N, A, K)
    teacher_features: np.ndarray  # float16 (N, D)


@dataclass
class LabelSet:
    """Committed labels of the rounds up to one round, loaded into memory."""

    images: np.ndarray
    states: np.ndarray
    expert_actions: np.ndarray
    has_expert: np.ndarray
    target_offsets: np.ndarray
    teacher_logits: np.ndarray
    teacher_features: np.ndarray
    round: np.ndarray
    episode_index: np.ndarray
    episode_instruction: list[str]

    def __len__(self) -> int:
        return len(self.images)


class LabelStore:
    """Append-only label file of one run and one teacher key."""

    def __init__(self, path: Path, teacher_key: str, teacher_path: str, shapes: dict[str, tuple]) -> None:
        self.path = path
        if path.exists():
            self.file = _open_labels(path, teacher_key)
        else:
            self.file = h5py.File(path, "w")
            _create_layout(self.file, shapes, {"teacher_key": teacher_key, "teacher_path": teacher_path})
            logger.info("created label file %s", path)

    @property
    def n_rows(self) -> int:
        return int(self.file.attrs["n_rows"])

    @property
    def collected_rounds(self) -> int:
        """Number of rounds committed to the file, so round r is committed when r < this value."""
        return int(self.file.attrs["collected_rounds"])

    def append_round(self, labelled: LabelledRound) -> None:
        """Write one round's rows and episodes, flush them, then commit them by raising the counters."""
        if labelled.round_index != self.collected_rounds:
            raise ValueError(
                f"{self.path} contains rounds 0..{self.collected_rounds - 1}, so round "
                f"{labelled.round_index} cannot be appended; the next round to append is {self.collected_rounds}"
            )

        f = self.file
        steps = labelled.steps
        first_row, first_episode = self.n_rows, int(f.attrs["n_episodes"])
        rows = {
            "images": steps.images,
            "states": steps.states,
            "expert_actions": steps.expert_actions,
            "has_expert": steps.has_expert,
            "target_offsets": steps.target_offsets,
            "teacher_logits": labelled.teacher_logits,
            "teacher_features": labelled.teacher_features,
            "round": np.full(steps.n_rows, labelled.round_index, dtype=np.int64),
            "episode_index": steps.episode_index + first_episode,
        }
        episodes = {
            "episode_task": steps.episode_task,
            "episode_instruction": steps.episode_instruction,
            "episode_seed": steps.episode_seed,
            "episode_success": steps.episode_success,
            "episode_round": np.full(len(steps.episode_task), labelled.round_index, dtype=np.int64),
        }

        _write_at(f, rows, first_row)
        _write_at(f, episodes, first_episode)
        f.flush()

        f.attrs["n_rows"] = first_row + steps.n_rows
        f.attrs["n_episodes"] = first_episode + len(steps.episode_task)
        f.attrs["collected_rounds"] = labelled.round_index + 1
        f.flush()
        logger.info("appended %d labelled steps of round %d to %s", steps.n_rows, labelled.round_index, self.path)

    def read(self, max_round: int) -> LabelSet:
        """Load the committed rows of rounds 0..max_round into memory."""
        f = self.file
        n_rows, n_episodes = self.n_rows, int(f.attrs["n_episodes"])
        rounds = f["round"][:n_rows]
        keep = np.flatnonzero(rounds <= max_round)
        # The rows of a round are contiguous and rounds are appended in order, so the rows
        # to keep are a prefix and one slice reads them.
        end = int(keep[-1]) + 1 if len(keep) else 0
        instructions = [_text(value) for value in f["episode_instruction"][:n_episodes]]
        return LabelSet(**_read_rows(f, end), round=rounds[:end], episode_instruction=instructions)

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def read_committed_round0(path: Path, teacher_key: str) -> LabelledRound:
    """Return round 0 of another run's label file, which must contain labels of ``teacher_key``."""
    with _open_labels(path, teacher_key, mode="r") as f:
        if int(f.attrs["collected_rounds"]) < 1:
            raise ValueError(f"{path} has no committed round 0 to reuse")
        episode_round = f["episode_round"][: int(f.attrs["n_episodes"])]
        n_episodes = int(np.count_nonzero(episode_round == 0))
        n_rows = int(np.count_nonzero(f["round"][: int(f.attrs["n_rows"])] == 0))
        rows = _read_rows(f, n_rows)
        logits, features = rows.pop("teacher_logits"), rows.pop("teacher_features")
        steps = CollectedSteps(
            **rows,
            episode_task=[_text(value) for value in f["episode_task"][:n_episodes]],
            episode_instruction=[_text(value) for value in f["episode_instruction"][:n_episodes]],
            episode_seed=f["episode_seed"][:n_episodes],
            episode_success=f["episode_success"][:n_episodes],
        )
        return LabelledRound(0, steps, logits, features)


def _read_rows(f: h5py.File, end: int) -> dict[str, np.ndarray]:
    """Return the first ``end`` rows of every per-step field except ``round``."""
    names = ("images", "states", "expert_actions", "has_expert", "target_offsets",
             "teacher_logits", "teacher_features", "episode_index")
    return {name: f[name][:end] for name in names}


def _open_labels(path: Path, teacher_key: str, mode: str = "a") -> h5py.File:
    try:
        f = h5py.File(path, mode)
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file ({error}); delete it to label again") from error
    if f.attrs.get("format") != LABEL_FORMAT:
        f.close()
        raise ValueError(f"{path} is not a vla-distill label file (format attribute {LABEL_FORMAT!r} missing)")
    if f.attrs.get("format_version") != LABEL_FORMAT_VERSION:
        version = f.attrs.get("format_version")
        f.close()
        raise ValueError(
            f"{path} has label format version {version}, expected {LABEL_FORMAT_VERSION}; "
            "delete the file to label again or use another output folder"
        )
    stored = f.attrs.get("teacher_key")
    if stored != teacher_key:
        f.close()
        raise ValueError(
            f"{path} contains labels of teacher key {stored}, not of the requested teacher "
            f"(key {teacher_key}); delete the file or use another output folder"
        )
    return f


def _create_layout(f: h5py.File, shapes: dict[str, tuple], attrs: dict) -> None:
    """Create the empty datasets, with the per-row shape of each row field taken from ``shapes``."""
    dtypes = {
        "images": np.uint8,
        "states": np.float32,
        "expert_actions": np.float32,
        "has_expert": np.bool_,
        "target_offsets": np.float32,
        "teacher_logits": np.float16,
        "teacher_features": np.float16,
        "round": np.int64,
        "episode_index": np.int64,
    }
    shapes = {"target_offsets": (TARGET_OFFSET_DIM,), **shapes}
    for name, dtype in dtypes.items():
        row_shape = shapes.get(name, ())
        options = {"chunks": (ROW_CHUNK_ROWS, *row_shape)}
        if name == "images":
            options = {"chunks": (IMAGE_CHUNK_FRAMES, *row_shape), "compression": "gzip", "compression_opts": 4}
        f.create_dataset(name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype, **options)
    for name, dtype in EPISODE_FIELDS.items():
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=True)
    f.attrs["format"] = LABEL_FORMAT
    f.attrs["format_version"] = LABEL_FORMAT_VERSION
    for key, value in attrs.items():
        f.attrs[key] = value
    f.attrs["n_rows"] = 0
    f.attrs["n_episodes"] = 0
    f.attrs["collected_rounds"] = 0
    f.flush()


def _write_at(f: h5py.File, columns: dict, start: int) -> None:
    for name, values in columns.items():
        if isinstance(values, list):
            values = np.asarray(values, dtype=object)  # h5py writes variable-length str from object arrays
        end = start + len(values)
        f[name].resize(end, axis=0)
        f[name][start:end] = values


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
