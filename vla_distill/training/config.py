"""Typed configuration of teacher training, with named presets and JSON loading."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_distill.policies.configuration_policy import check_override_names
from vla_distill.policies.teacher import TEACHER_PRESETS, TeacherConfig


@dataclass
class TrainConfig:
    """Settings of one behaviour-cloning run of a teacher."""

    model_preset: str = "small"
    """Teacher preset (see TEACHER_PRESETS) that the model is built from."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """TeacherConfig fields that replace the preset's values, e.g. {"dropout": 0.1}."""
    init_from: str | None = None
    """Policy folder, or ``reference``, whose weights start the model (fine-tuning), or None
    for a random initialisation. The policy's config must equal the model config."""
    batch_size: int = 64
    """Samples per optimizer step."""
    lr: float = 3e-4
    """Peak learning rate of AdamW, reached at the end of warm-up."""
    stem_lr: float | None = None
    """Peak learning rate of the convolutional stem, keypoint projection, patch embedding and
    offset head, or None to use lr. Transformers need a lower rate than these layers. At 5e-4
    the reference teacher did not learn to locate the named cube in 800 steps. At 1e-4, with
    2e-3 for these layers, it did (2.2 cm mean error on held-out first frames)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay, as a fraction of lr."""
    weight_decay: float = 0.05
    """AdamW decoupled weight decay, applied to weight matrices only (not biases, norms, embeddings)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW coefficients (beta1, beta2) of the running gradient averages."""
    warmup_steps: int = 500
    """Optimizer steps of linear learning-rate warm-up from 0 to lr."""
    total_steps: int = 20000
    """Total optimizer steps, where the cosine decay ends."""
    grad_clip_norm: float = 1.0
    """Maximum global L2 norm of the gradients, or 0 to disable clipping."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy over action bins, in [0, 1)."""
    label_sigma_bins: float = 0.0
    """Std, in bins, of a Gaussian target around the expert bin instead of a one-hot target, or 0."""
    target_offset_weight: float = 0.0
    """Weight of an auxiliary loss, or 0 to disable it: a linear head on the teacher's fused
    features predicts the data's ``target_offsets`` (where the named cube and zone are), in
    decimetres, by mean squared error. The head is not part of the saved policy."""
    augment_shift_px: int = 0
    """Maximum random shift in pixels of training images (edge-padded), or 0 to disable it."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation, or 0 to disable validation."""
    eval_every: int = 1000
    """Optimizer steps between validation passes."""
    eval_max_samples: int = 4096
    """Maximum validation samples per pass, a fixed random subset of the held-out steps."""
    checkpoint_every: int = 1000
    """Optimizer steps between training checkpoints."""
    keep_last_checkpoints: int = 3
    """Number of newest training checkpoints kept on disk, or 0 to keep all."""
    log_every: int = 50
    """Optimizer steps between training-metric rows."""
    seed: int = 0
    """Seed of model initialisation, data order, augmentation and dropout."""
    num_threads: int | None = None
    """Intra-op CPU threads of torch, or None to keep torch's default."""

    def __post_init__(self) -> None:
        if self.model_preset not in TEACHER_PRESETS:
            raise ValueError(
                f"unknown model_preset {self.model_preset!r}; choose one of {sorted(TEACHER_PRESETS)}"
            )
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from must be None or a policy folder or 'reference', got {self.init_from!r}")
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"model_overrides must be a JSON object, got {self.model_overrides!r}")
        check_override_names(TeacherConfig, self.model_overrides)
        self.teacher_config()  # raises ValueError for an invalid override value
        self._check_counts()
        self._check_rates()

    def _check_counts(self) -> None:
        for name, minimum in (
            ("batch_size", 1),
            ("warmup_steps", 0),
            ("total_steps", 1),
            ("augment_shift_px", 0),
            ("eval_every", 1),
            ("eval_max_samples", 1),
            ("checkpoint_every", 1),
            ("keep_last_checkpoints", 0),
            ("log_every", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or an integer >= 1, got {self.num_threads!r}")
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds total_steps {self.total_steps}")

    def _check_rates(self) -> None:
        for name, low, high in (
            ("lr", 0.0, math.inf),
            ("min_lr_ratio", 0.0, 1.0),
            ("weight_decay", 0.0, math.inf),
            ("grad_clip_norm", 0.0, math.inf),
            ("label_smoothing", 0.0, 0.999),
            ("label_sigma_bins", 0.0, 64.0),
            ("target_offset_weight", 0.0, math.inf),
            ("val_fraction", 0.0, 0.9),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if self.label_smoothing > 0 and self.label_sigma_bins > 0:
            raise ValueError("set label_smoothing or label_sigma_bins, not both")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.stem_lr is not None and (
            isinstance(self.stem_lr, bool) or not isinstance(self.stem_lr, (int, float)) or not 0 < self.stem_lr < math.inf
        ):
            raise ValueError(f"stem_lr must be None or a positive number, got {self.stem_lr!r}")
        betas = self.adam_betas
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {betas!r}")
        for beta in betas:
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
                raise ValueError(f"adam_betas must be two numbers in [0, 1), got {betas!r}")
        self.adam_betas = [float(beta) for beta in betas]

    def teacher_config(self) -> TeacherConfig:
        """Return the model config: the preset with ``model_overrides`` applied."""
        return TeacherConfig.from_preset(self.model_preset, **self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # A tiny model and few steps: used by the tests and as a smoke test of a new dataset.
    "teacher-tiny": {
        "model_preset": "tiny",
        "batch_size": 16,
        "lr": 1e-3,
        "warmup_steps": 10,
        "total_steps": 200,
        "eval_every": 50,
        "eval_max_samples": 512,
        "checkpoint_every": 50,
        "log_every": 10,
    },
    # NOTE: step counts and learning rates of the presets below are estimates that have not
    # been tuned on collected demonstrations.
    "teacher-small": {"model_preset": "small", "total_steps": 10000, "warmup_steps": 300},
    # No random shift: the coordinate channels tie each pixel to a place on the table, and a
    # shift would move the cubes against the gripper position in the state. The target-offset
    # loss gives the model the positions of the named cube and zone as a direct target.
    "teacher-reference": {
        "model_preset": "reference",
        "lr": 1e-4,
        "stem_lr": 2e-3,
        "warmup_steps": 300,
        "total_steps": 6000,
        "label_sigma_bins": 2.0,
        "target_offset_weight": 1.0,
        "eval_every": 500,
        "eval_max_samples": 2048,
        "checkpoint_every": 250,
        "num_threads": 2,
    },
    "teacher-large": {
        "model_preset": "large",
        "batch_size": 256,
        "lr": 2e-4,
        "total_steps": 50000,
        "warmup_steps": 2000,
        "label_sigma_bins": 2.0,
        "eval_every": 2500,
        "checkpoint_every": 2500,
    },
}


def load_train_config(name_or_path: str | Path, **overrides: Any) -> TrainConfig:
    """Resolve a preset name or a JSON file into a TrainConfig, then apply ``overrides``.

    A JSON file may set ``"preset"`` to start from a preset and change only some fields.
    Overrides whose value is None are ignored.
    """
    values = read_config_values(name_or_path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    unknown = sorted(set(values) - {item.name for item in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(
            f"unknown training config fields {unknown} in {name_or_path}; "
            f"valid fields are {sorted(item.name for item in dataclasses.fields(TrainConfig))}"
        )
    return TrainConfig(**values)


def read_config_values(name_or_path: str | Path) -> dict[str, Any]:
    """Return the field values of a preset name or JSON config file."""
    name = str(name_or_path)
    if name in TRAIN_PRESETS:
        return dict(TRAIN_PRESETS[name])
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"training config {name!r} is neither a preset ({', '.join(sorted(TRAIN_PRESETS))}) "
            "nor an existing JSON file"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"invalid JSON in training config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"training config {path} must contain a JSON object, got {type(values).__name__}")
    preset = values.pop("preset", None)
    if preset is None:
        return values
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r} in {path}; choose one of {sorted(TRAIN_PRESETS)}")
    return {**TRAIN_PRESETS[preset], **values}
