"""Create, save, load and fingerprint policy checkpoints.

A checkpoint is a folder with three files:

* ``config.json``: the ``TeacherConfig`` or ``StudentConfig``, whose ``model_type`` selects the class.
* ``model.safetensors``: the weights. Loading never unpickles a file.
* ``tokenizer.json``: the instruction tokenizer of the processor.

Training may add ``train_config.json`` and ``source.json`` beside them (see
``vla_distill.training``). ``checkpoint_hash`` ignores those two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers.utils import logging as transformers_logging

from vla_distill.policies.configuration_policy import PolicyConfig
from vla_distill.policies.instruction_tokenizer import TOKENIZER_FILE
from vla_distill.policies.processor import PolicyProcessor
from vla_distill.policies.student import StudentConfig, StudentPolicy
from vla_distill.policies.teacher import TeacherConfig, TeacherPolicy

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SOURCE_FILE = "source.json"
TRAIN_CONFIG_FILE = "train_config.json"
HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
REFERENCE_NAME = "reference"
REFERENCE_DIR = Path(__file__).resolve().parent / "checkpoints" / REFERENCE_NAME
POLICY_CLASSES = {
    TeacherConfig.model_type: (TeacherConfig, TeacherPolicy),
    StudentConfig.model_type: (StudentConfig, StudentPolicy),
}
KIND_CONFIGS = {"teacher": TeacherConfig, "student": StudentConfig}
# Fields that a teacher and its student must share for distillation.
COMPATIBILITY_FIELDS = (
    "action_dim",
    "n_bins",
    "action_low",
    "action_high",
    "action_names",
    "state_dim",
    "state_names",
    "image_size",
)


def create_policy(kind: str, preset: str, **overrides: Any):
    """Build a randomly initialised policy with a default processor attached.

    ``kind`` is "teacher" or "student", ``preset`` a name from that kind's presets and
    ``overrides`` replace config fields. Seed torch first for reproducible weights.
    """
    if kind not in KIND_CONFIGS:
        raise ValueError(f"unknown policy kind {kind!r}; choose one of {sorted(KIND_CONFIGS)}")
    config = KIND_CONFIGS[kind].from_preset(preset, **overrides)
    return create_policy_from_config(config)


def create_policy_from_config(config: PolicyConfig):
    """Build a randomly initialised policy for ``config`` with a default processor attached."""
    _, model_class = POLICY_CLASSES[config.model_type]
    model = model_class(config)
    model.attach_processor(PolicyProcessor.from_config(config))
    return model


def save_policy(model, folder: str | Path, processor: PolicyProcessor | None = None) -> Path:
    """Write config.json, model.safetensors and tokenizer.json into ``folder``.

    ``processor`` defaults to the one attached to the model.
    """
    folder = Path(folder)
    processor = processor or model.processor
    with quiet_transformers():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    logger.info("saved %s policy to %s", model.config.policy_kind, folder)
    return folder


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """Return the checkpoint folder of a path or of the name ``reference``."""
    if str(path_or_name) == REFERENCE_NAME and not Path(path_or_name).exists():
        if not REFERENCE_DIR.is_dir():
            raise FileNotFoundError(
                f"the reference teacher is not shipped in this install (expected at {REFERENCE_DIR}); "
                "train one with `vla-distill train-teacher` and pass its folder instead"
            )
        return REFERENCE_DIR
    folder = Path(path_or_name)
    if not folder.exists():
        raise FileNotFoundError(f"policy checkpoint not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"policy checkpoint must be a folder with {CONFIG_FILE}, got the file {folder}")
    return folder


def read_policy_config(path_or_name: str | Path) -> PolicyConfig:
    """Read and validate the config.json of a checkpoint folder."""
    folder = resolve_checkpoint(path_or_name)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"policy config not found: {path}; a checkpoint folder needs {CONFIG_FILE}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"invalid JSON in policy config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"policy config {path} must contain a JSON object, got {type(values).__name__}")

    model_type = values.get("model_type")
    if model_type not in POLICY_CLASSES:
        raise ValueError(
            f"policy config {path} has model_type {model_type!r}; expected one of {sorted(POLICY_CLASSES)}"
        )
    config_class, _ = POLICY_CLASSES[model_type]
    try:
        return config_class.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid policy config {path}: {error}") from error


def load_policy(path_or_name: str | Path, num_threads: int | None = None):
    """Load a checkpoint folder (or ``reference``) and return ``(model, processor)``.

    The model is float32 in eval mode, whatever float dtype its weights were saved in, and
    has the processor attached. Missing or unexpected weights and shape mismatches raise
    ValueError, and a missing file raises FileNotFoundError. ``num_threads``, if given, sets
    torch's intra-op thread count for the whole process.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    folder = resolve_checkpoint(path_or_name)
    config = read_policy_config(folder)
    _, model_class = POLICY_CLASSES[config.model_type]
    check_weights(folder / WEIGHTS_FILE, model_class, config)
    processor = PolicyProcessor.from_pretrained(folder, config)

    with quiet_transformers():
        model, loading_info = model_class.from_pretrained(
            folder,
            config=config,
            use_safetensors=True,
            dtype=torch.float32,
            local_files_only=True,
            output_loading_info=True,
        )
    raise_on_loading_problems(folder, loading_info)
    model.attach_processor(processor)
    logger.info("loaded %s policy from %s", config.policy_kind, folder)
    return model, processor


def check_weights(path: Path, model_class, config: PolicyConfig) -> None:
    """Raise unless the safetensors file has exactly the model's tensor names and shapes."""
    if not path.is_file():
        raise FileNotFoundError(f"policy weights not found: {path}; a checkpoint folder needs {WEIGHTS_FILE}")
    try:
        with safe_open(str(path), framework="pt") as weights:
            stored = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except SafetensorError as error:
        raise ValueError(f"corrupted or truncated weights file {path}: {error}") from error
    # NOTE: safetensors stores no checksum, so flipped bytes inside tensor data go undetected;
    # compare checkpoint_hash with a recorded value to catch them.

    with torch.device("meta"):
        skeleton = model_class(config)
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    problems = weight_problems(expected, stored)
    if problems:
        raise ValueError(f"weights in {path} do not match the config: " + "; ".join(problems))


def weight_problems(expected: dict[str, tuple], stored: dict[str, tuple]) -> list[str]:
    """List missing and unexpected tensor names and shape mismatches between two state dicts."""
    problems = []
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    mismatched = [
        f"{name}: stored {stored[name]}, expected {expected[name]}"
        for name in sorted(set(expected) & set(stored))
        if stored[name] != expected[name]
    ]
    if mismatched:
        problems.append(f"shape mismatches [{', '.join(mismatched)}]")
    return problems


def raise_on_loading_problems(folder: Path, loading_info: dict[str, Any]) -> None:
    """Raise ValueError if transformers reported any key or shape problem while loading."""
    problems = []
    for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if loading_info.get(name):
            problems.append(f"{name.replace('_', ' ')} {sorted(map(str, loading_info[name]))}")
    if problems:
        raise ValueError(f"loading the policy in {folder} failed: " + "; ".join(problems))


@contextlib.contextmanager
def quiet_transformers():
    """Hide the progress bars that transformers shows while saving and loading weights."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def check_compatible(teacher_config: PolicyConfig, student_config: PolicyConfig) -> None:
    """Raise ValueError listing every interface field on which teacher and student differ.

    A student can only be distilled from a teacher with the same action space (dimensions,
    bins and range), state layout and image size.
    """
    differences = [
        f"{name}: teacher={getattr(teacher_config, name)!r} student={getattr(student_config, name)!r}"
        for name in COMPATIBILITY_FIELDS
        if getattr(teacher_config, name) != getattr(student_config, name)
    ]
    if differences:
        raise ValueError("teacher and student configs are incompatible: " + "; ".join(differences))


def checkpoint_hash(path_or_name: str | Path) -> str:
    """Return the hex sha256 of a checkpoint's config.json, model.safetensors and tokenizer.json.

    Each file contributes its name, its size in bytes and its content, in a fixed order,
    so the hash changes when any of the three files changes.
    """
    folder = resolve_checkpoint(path_or_name)
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"cannot hash checkpoint {folder}: {name} not found")
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# Keys that transformers adds to a saved config. They do not describe the model.
SAVE_METADATA_KEYS = frozenset({"architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path"})


def load_initial_weights(model, path_or_name: str | Path) -> None:
    """Copy the weights of a checkpoint (or ``reference``) into ``model``, e.g. to fine-tune it.

    Raises ValueError listing every config field that differs, so a checkpoint of another
    architecture, image size, state layout or action tokenizer never starts a run.
    """
    source, _ = load_policy(path_or_name)
    saved = {k: v for k, v in source.config.to_dict().items() if k not in SAVE_METADATA_KEYS}
    current = {k: v for k, v in model.config.to_dict().items() if k not in SAVE_METADATA_KEYS}
    differences = [
        f"{name}: checkpoint={saved.get(name)!r} model={current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]
    if differences:
        raise ValueError(f"cannot start from {path_or_name}: its config differs ({'; '.join(differences)})")
    model.load_state_dict(source.state_dict())
    logger.info("initialised the model with the weights of %s", path_or_name)
