"""Episode datasets in HDF5: the layout, an append-only writer and a reader.

Layout (one flat array per quantity, as in LeRobot datasets; N steps, E episodes):

| path                   | dtype / shape         | meaning                                       |
|------------------------|-----------------------|-----------------------------------------------|
| images                 | uint8 (N, H, W, 3)    | front camera, chunked per 16 frames, gzip     |
| states                 | float32 (N, S)        | proprioceptive state (see ``state_names``)    |
| actions                | float32 (N, 7)        | action taken after observing the step         |
| target_offsets         | float32 (N, 5)        | named cube minus grasp point (x, y, z) and    |
|                        |                       | named zone minus cube (x, y; NaN without one) |
| episode_index          | int64 (N,)            | episode each step belongs to                  |
| episode_task           | str (E,)              | task name, e.g. ``lift-red``                  |
| episode_instruction    | str (E,)              | instruction shown to the policy               |
| episode_seed           | int64 (E,)            | ``reset(seed=...)`` of the episode            |
| episode_success        | bool (E,)             | whether the episode ended in success          |
| episode_length         | int64 (E,)            | steps in the episode                          |
| episode_start          | int64 (E,)            | index of its first step                       |

Root attributes: ``format``, ``format_version``, ``env_id``, ``vla_distill_version``,
``config`` (JSON of the collection settings), ``state_names``, ``action_names`` (JSON lists),
and the commit counters ``n_episodes`` and ``n_steps``. Files written before ``target_offsets``
existed lack that array; they load with ``target_offsets = None``. A step is stored with the
observation it acted on; the reset observation of a following episode is never a step.

Episodes are appended whole: the arrays are extended, written and flushed, and only then
are ``n_episodes`` and ``n_steps`` raised. Rows beyond the counters belong to an episode
that was being written when the process died; readers ignore them and a resumed writer
overwrites them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vla_distill import __version__

FORMAT = "vla-distill-episodes"
FORMAT_VERSION = 1
IMAGE_CHUNK_FRAMES = 16
STRING_DTYPE = h5py.string_dtype("utf-8")
TARGET_OFFSETS = "target_offsets"
TARGET_OFFSET_DIM = 5
EPISODE_FIELDS = {
    "episode_task": STRING_DTYPE,
    "episode_instruction": STRING_DTYPE,
    "episode_seed": np.int64,
    "episode_success": np.bool_,
    "episode_length": np.int64,
    "episode_start": np.int64,
}


@dataclass
class Episode:
    """One finished episode, ready to append."""

    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray  # uint8 (T, H, W, 3)
    states: np.ndarray  # float32 (T, S)
    actions: np.ndarray  # float32 (T, 7)
    target_offsets: np.ndarray | None = None  # float32 (T, 5); NaN rows when unknown

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class Demos:
    """A whole dataset loaded into memory."""

    images: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    episode_index: np.ndarray
    episode_task: list[str]
    episode_instruction: list[str]
    episode_seed: np.ndarray
    episode_success: np.ndarray
    episode_length: np.ndarray
    episode_start: np.ndarray
    attrs: dict = field(default_factory=dict)
    target_offsets: np.ndarray | None = None

    @property
    def n_episodes(self) -> int:
        return len(self.episode_task)

    def step_instructions(self) -> list[str]:
        """Return the instruction of every step."""
        return [self.episode_instruction[i] for i in self.episode_index]


class EpisodeWriter:
    """Append episodes to an HDF5 file, creating it or continuing an existing one."""

    def __init__(self, path: str | Path, image_size: int, state_dim: int, attrs: dict, resume: bool):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; pass a file path such as {self.path / 'demos.h5'}")
        if self.path.exists() and not resume:
            raise ValueError(f"{self.path} already exists; pass --resume to append to it or choose another path")
        if resume and self.path.exists():
            self.file = h5py.File(self.path, "a")
            _check_compatible(self.file, image_size, state_dim, attrs.get("env_id"))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(self.path, "w")
            _create_layout(self.file, image_size, state_dim, attrs)

    @property
    def n_episodes(self) -> int:
        return int(self.file.attrs["n_episodes"])

    def recorded(self) -> set[tuple[str, int]]:
        """Return the (task, seed) pairs already committed."""
        n = self.n_episodes
        tasks = [t.decode() if isinstance(t, bytes) else t for t in self.file["episode_task"][:n]]
        return set(zip(tasks, (int(s) for s in self.file["episode_seed"][:n])))

    def append(self, episode: Episode) -> None:
        """Write one episode, flush it, then commit it by raising the counters."""
        f = self.file
        n_steps, n_episodes = int(f.attrs["n_steps"]), int(f.attrs["n_episodes"])
        end = n_steps + episode.length
        arrays = {"images": episode.images, "states": episode.states, "actions": episode.actions}
        if TARGET_OFFSETS in f:
            unknown = np.full((episode.length, TARGET_OFFSET_DIM), np.nan, dtype=np.float32)
            arrays[TARGET_OFFSETS] = unknown if episode.target_offsets is None else episode.target_offsets
        for name, values in arrays.items():
            f[name].resize(end, axis=0)
            f[name][n_steps:end] = values
        f["episode_index"].resize(end, axis=0)
        f["episode_index"][n_steps:end] = n_episodes
        row = {
            "episode_task": episode.task,
            "episode_instruction": episode.instruction,
            "episode_seed": episode.seed,
            "episode_success": episode.success,
            "episode_length": episode.length,
            "episode_start": n_steps,
        }
        for name, value in row.items():
            f[name].resize(n_episodes + 1, axis=0)
            f[name][n_episodes] = value
        f.flush()
        f.attrs["n_steps"] = end
        f.attrs["n_episodes"] = n_episodes + 1
        f.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _create_layout(f: h5py.File, image_size: int, state_dim: int, attrs: dict) -> None:
    f.create_dataset(
        "images",
        shape=(0, image_size, image_size, 3),
        maxshape=(None, image_size, image_size, 3),
        dtype=np.uint8,
        chunks=(IMAGE_CHUNK_FRAMES, image_size, image_size, 3),
        compression="gzip",
        compression_opts=4,
    )
    f.create_dataset("states", shape=(0, state_dim), maxshape=(None, state_dim), dtype=np.float32, chunks=True)
    f.create_dataset("actions", shape=(0, 7), maxshape=(None, 7), dtype=np.float32, chunks=True)
    f.create_dataset(
        TARGET_OFFSETS, shape=(0, TARGET_OFFSET_DIM), maxshape=(None, TARGET_OFFSET_DIM), dtype=np.float32, chunks=True
    )
    f.create_dataset("episode_index", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=True)
    for name, dtype in EPISODE_FIELDS.items():
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=True)
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["vla_distill_version"] = __version__
    for key, value in attrs.items():
        f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
    f.attrs["n_steps"] = 0
    f.attrs["n_episodes"] = 0
    f.flush()


def _check_compatible(f: h5py.File, image_size: int, state_dim: int, env_id: str | None) -> None:
    shape = f["images"].shape[1:]
    if shape != (image_size, image_size, 3):
        raise ValueError(f"cannot resume: {f.filename} stores images of shape {shape}, requested {image_size}x{image_size}")
    if f["states"].shape[1] != state_dim:
        raise ValueError(f"cannot resume: {f.filename} stores states of size {f['states'].shape[1]}, requested {state_dim}")
    if env_id is not None and f.attrs.get("env_id") != env_id:
        raise ValueError(f"cannot resume: {f.filename} contains {f.attrs.get('env_id')!r} episodes, requested {env_id!r}")


def open_episodes(path: str | Path) -> h5py.File:
    """Open an episode file for reading, or raise a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file {path} not found; create one with `vla-distill collect`")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file ({error}); collect it again") from error
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ValueError(f"{path} is not a vla-distill episode file (format attribute {FORMAT!r} missing)")
    return f


def episode_file_paths(paths: str | Path | list[str | Path] | None) -> list[Path]:
    """Return one or more episode files as a list of paths, raising for a missing or foreign file."""
    if paths is None:
        return []
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"demonstration file not found: {path}; create one with `vla-distill collect`")
        open_episodes(path).close()
    return paths


def load_demos(path: str | Path) -> Demos:
    """Read every committed episode of a file into memory."""
    with open_episodes(path) as f:
        n_steps, n_episodes = int(f.attrs["n_steps"]), int(f.attrs["n_episodes"])

        def strings(name):
            return [v.decode() if isinstance(v, bytes) else v for v in f[name][:n_episodes]]

        return Demos(
            images=f["images"][:n_steps],
            states=f["states"][:n_steps],
            actions=f["actions"][:n_steps],
            episode_index=f["episode_index"][:n_steps],
            episode_task=strings("episode_task"),
            episode_instruction=strings("episode_instruction"),
            episode_seed=f["episode_seed"][:n_episodes],
            episode_success=f["episode_success"][:n_episodes],
            episode_length=f["episode_length"][:n_episodes],
            episode_start=f["episode_start"][:n_episodes],
            attrs={key: _attr_value(value) for key, value in f.attrs.items()},
            target_offsets=f[TARGET_OFFSETS][:n_steps] if TARGET_OFFSETS in f else None,
        )


def read_attrs(path: str | Path) -> dict:
    """Return the file-level attributes of an episode file (``config`` stays a JSON string)."""
    with open_episodes(path) as f:
        return {key: _attr_value(value) for key, value in f.attrs.items()}


def _attr_value(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def concat_demos(parts: list[Demos]) -> Demos:
    """Join datasets into one and renumber their episodes. The first part's attributes are kept.

    A part without ``target_offsets`` contributes NaN rows when another part has them.
    """
    if not parts:
        raise ValueError("concat_demos needs at least one dataset")
    if len(parts) == 1:
        return parts[0]
    for name in ("images", "states", "actions"):
        shapes = {part_shape(part, name) for part in parts}
        if len(shapes) > 1:
            raise ValueError(f"cannot join datasets with different {name} shapes {sorted(shapes)}")
    episode_offsets = np.cumsum([0] + [part.n_episodes for part in parts[:-1]])
    step_offsets = np.cumsum([0] + [len(part.actions) for part in parts[:-1]])
    return Demos(
        images=np.concatenate([part.images for part in parts]),
        states=np.concatenate([part.states for part in parts]),
        actions=np.concatenate([part.actions for part in parts]),
        episode_index=np.concatenate([part.episode_index + offset for part, offset in zip(parts, episode_offsets)]),
        episode_task=[task for part in parts for task in part.episode_task],
        episode_instruction=[text for part in parts for text in part.episode_instruction],
        episode_seed=np.concatenate([part.episode_seed for part in parts]),
        episode_success=np.concatenate([part.episode_success for part in parts]),
        episode_length=np.concatenate([part.episode_length for part in parts]),
        episode_start=np.concatenate([part.episode_start + offset for part, offset in zip(parts, step_offsets)]),
        attrs=parts[0].attrs,
        target_offsets=joined_target_offsets(parts),
    )


def part_shape(part: Demos, name: str) -> tuple[int, ...]:
    return tuple(getattr(part, name).shape[1:])


def joined_target_offsets(parts: list[Demos]) -> np.ndarray | None:
    if all(part.target_offsets is None for part in parts):
        return None
    unknown = [np.full((len(part.actions), TARGET_OFFSET_DIM), np.nan, dtype=np.float32) for part in parts]
    return np.concatenate([unknown[i] if part.target_offsets is None else part.target_offsets for i, part in enumerate(parts)])
