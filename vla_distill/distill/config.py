"""Typed configuration of a distillation run, with named presets and JSON loading.

A JSON config file contains ``DistillConfig`` fields. It may set ``"preset"`` to start from a
preset, and its ``"loss"`` object then replaces only the loss fields that it names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_distill.distill.losses import DistillLossConfig
from vla_distill.policies.configuration_policy import check_override_names
from vla_distill.policies.student import STUDENT_PRESETS, StudentConfig
from vla_distill.sim import SUITES, suite_tasks
from vla_distill.sim.tabletop.tasks import resolve_tasks

# Episode seeds of on-policy round r start at rollout_seed + ROUND_SEED_STRIDE * r, so the
# rounds never share an episode while episodes_per_task stays below the stride.
ROUND_SEED_STRIDE = 10000


def default_loss() -> DistillLossConfig:
    """Return the default loss: soft labels at T=2, light feature matching, expert hard labels."""
    return DistillLossConfig(
        temperature=2.0,
        kd_loss_weight=1.0,
        feature_loss_weight=0.1,
        relation_loss_weight=0.0,
        hard_label_weight=0.5,
        hard_label_target="expert",
    )


@dataclass
class DistillConfig:
    """Settings of one distillation run: student, data rounds, optimisation and evaluation."""

    student_preset: str = "small"
    """Student preset (see STUDENT_PRESETS) that the student is built from."""
    student_overrides: dict[str, Any] = field(default_factory=dict)
    """StudentConfig fields that replace the preset's values, e.g. {"hidden_size": 64}."""
    loss: DistillLossConfig = field(default_factory=default_loss)
    """Weights and options of the loss terms, given in JSON as an object of DistillLossConfig fields."""
    suite: str = "tabletop"
    """Simulated suite whose tasks are rolled out."""
    tasks: str = "all"
    """Comma-separated task names or families of the suite, or 'all'."""
    rounds: int = 2
    """On-policy (DAgger) rounds after round 0, so a run has rounds + 1 training phases."""
    round0_episodes_per_task: int = 5
    """Teacher-driven episodes per task in round 0, used only when no demonstration file is given."""
    episodes_per_task: int = 2
    """Student-driven episodes per task in each on-policy round."""
    rollout_tasks: str | None = None
    """Tasks or families (comma-separated) that the on-policy rounds roll out, a subset of
    ``tasks``. None rolls out all of them. Evaluation always covers every task of ``tasks``."""
    teacher_action_share: float = 0.5
    """Probability that an env executes the teacher's action in on-policy round 1."""
    teacher_share_decay: float = 0.5
    """Factor applied to teacher_action_share per further round: share_r = share * decay^(r-1)."""
    rollout_seed: int = 0
    """Seed of episode 0 of every task in round 0. Round r starts at rollout_seed + 10000 * r."""
    eval_seed: int = 5000
    """Seed of evaluation episode 0 of every task. Every round is evaluated on the same episodes."""
    eval_episodes_per_task: int = 2
    """Evaluation episodes per task after each round's training."""
    num_envs: int = 1
    """Environments stepped in parallel worker processes during rollouts, or 1 to step in this process."""
    label_batch_size: int = 256
    """Samples per teacher forward pass when labelling."""
    steps_per_round: int = 1000
    """Optimizer steps of student training after each round's data collection."""
    batch_size: int = 64
    """Samples per optimizer step, drawn from the labels of all rounds so far."""
    lr: float = 1e-3
    """Peak AdamW learning rate, reached at the end of warm-up."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay, as a fraction of lr."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay of weight matrices (not of biases, norms or embeddings)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW coefficients (beta1, beta2) of the running gradient averages."""
    warmup_steps: int = 100
    """Optimizer steps of linear learning-rate warm-up at the start of round 0."""
    ema_decay: float = 0.0
    """Decay of the exponential moving average of the student's weights, or 0 for none. With a
    decay, the average rolls out the on-policy rounds, is evaluated after each round and is
    saved as the student, while training updates the raw weights."""
    grad_clip_norm: float = 1.0
    """Maximum global L2 norm of student and adapter gradients, or 0 to disable clipping."""
    augment_shift_px: int = 0
    """Maximum random image shift in pixels seen by the student, or 0 to disable it."""
    log_every: int = 50
    """Optimizer steps between rows of metrics.csv."""
    checkpoint_every: int = 500
    """Optimizer steps between training checkpoints. Every phase boundary also gets one."""
    keep_last_checkpoints: int = 3
    """Number of newest training checkpoints kept on disk, or 0 to keep all."""
    seed: int = 0
    """Seed of student and adapter initialisation, sample order, augmentation and action mixing."""
    num_threads: int | None = None
    """Intra-op CPU threads of torch, or None to keep torch's default."""

    def __post_init__(self) -> None:
        self.loss = _loss_config(self.loss)
        self._check_student()
        self._check_data()
        self._check_optimisation()
        self._check_seed_ranges()

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run, where the cosine decay ends."""
        return self.steps_per_round * (self.rounds + 1)

    def student_config(self) -> StudentConfig:
        """Return the student config: the preset with ``student_overrides`` applied."""
        return StudentConfig.from_preset(self.student_preset, **self.student_overrides)

    def task_names(self) -> list[str]:
        """Return the task names that ``tasks`` selects."""
        return resolve_tasks(self.tasks)

    def rollout_task_names(self) -> list[str]:
        """Return the task names whose episodes the on-policy rounds roll out."""
        return self.task_names() if self.rollout_tasks is None else resolve_tasks(self.rollout_tasks)

    def teacher_share(self, round_index: int) -> float:
        """Return the probability of executing the teacher's action in on-policy round ``round_index``."""
        return self.teacher_action_share * self.teacher_share_decay ** (round_index - 1)

    def round_seeds(self, round_index: int) -> list[int]:
        """Return the episode seeds of one task in round ``round_index``."""
        count = self.round0_episodes_per_task if round_index == 0 else self.episodes_per_task
        start = self.rollout_seed + ROUND_SEED_STRIDE * round_index
        return [start + i for i in range(count)]

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict with the loss as a nested object."""
        return dataclasses.asdict(self)

    def _check_student(self) -> None:
        if self.student_preset not in STUDENT_PRESETS:
            raise ValueError(
                f"unknown student_preset {self.student_preset!r}; choose one of {sorted(STUDENT_PRESETS)}"
            )
        if not isinstance(self.student_overrides, dict):
            raise ValueError(f"student_overrides must be a JSON object, got {self.student_overrides!r}")
        check_override_names(StudentConfig, self.student_overrides)
        self.student_config()  # raises ValueError for an invalid override value

    def _check_data(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; choose one of {sorted(SUITES)}")
        if not isinstance(self.tasks, str):
            raise ValueError(f"tasks must be a comma-separated string, got {self.tasks!r}")
        unknown = sorted(set(self.task_names()) - set(suite_tasks(self.suite)))
        if unknown:
            raise ValueError(f"tasks {unknown} are not part of suite {self.suite!r}")
        if self.rollout_tasks is not None:
            if not isinstance(self.rollout_tasks, str):
                raise ValueError(f"invalid rollout_tasks {self.rollout_tasks!r}: expected a comma-separated string or null")
            outside = sorted(set(self.rollout_task_names()) - set(self.task_names()))
            if outside:
                raise ValueError(
                    f"rollout_tasks {outside} are not among the run's tasks {self.task_names()}; "
                    "remove them from rollout_tasks or add them to tasks"
                )
        _check_integers(
            self,
            rounds=0,
            round0_episodes_per_task=1,
            episodes_per_task=1,
            eval_episodes_per_task=1,
            num_envs=1,
            label_batch_size=1,
            rollout_seed=0,
            eval_seed=0,
        )
        _check_numbers(self, teacher_action_share=(0.0, 1.0), teacher_share_decay=(0.0, 1.0))

    def _check_optimisation(self) -> None:
        _check_integers(
            self,
            steps_per_round=1,
            batch_size=1,
            warmup_steps=0,
            augment_shift_px=0,
            log_every=1,
            checkpoint_every=1,
            keep_last_checkpoints=0,
            seed=0,
        )
        _check_numbers(
            self,
            lr=(0.0, math.inf),
            min_lr_ratio=(0.0, 1.0),
            weight_decay=(0.0, math.inf),
            grad_clip_norm=(0.0, math.inf),
        )
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        decay = self.ema_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"invalid ema_decay {decay!r}: expected a number in [0, 1), or 0 for no average")
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} exceeds the run's {self.total_steps} optimizer "
                "steps (steps_per_round * (rounds + 1)); lower warmup_steps"
            )
        if self.num_threads is not None:
            _check_integers(self, num_threads=1)
        self.adam_betas = _adam_betas(self.adam_betas)

    def _check_seed_ranges(self) -> None:
        largest = max(self.round0_episodes_per_task, self.episodes_per_task)
        if largest > ROUND_SEED_STRIDE:
            raise ValueError(
                f"at most {ROUND_SEED_STRIDE} episodes per task per round are supported, got {largest}"
            )
        eval_seeds = set(range(self.eval_seed, self.eval_seed + self.eval_episodes_per_task))
        for round_index in range(self.rounds + 1):
            shared = eval_seeds.intersection(self.round_seeds(round_index))
            if shared:
                raise ValueError(
                    f"evaluation seeds overlap the seeds of round {round_index} (e.g. {min(shared)}); "
                    "choose an eval_seed or rollout_seed that keeps the evaluation episodes unseen"
                )


def _loss_config(value: Any) -> DistillLossConfig:
    if isinstance(value, DistillLossConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"loss must be a JSON object of DistillLossConfig fields, got {value!r}")
    valid = {item.name for item in dataclasses.fields(DistillLossConfig)}
    unknown = sorted(set(value) - valid)
    if unknown:
        raise ValueError(f"unknown loss fields {unknown}; valid fields are {sorted(valid)}")
    return DistillLossConfig(**value)


def _check_integers(config: DistillConfig, **minimums: int) -> None:
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_numbers(config: DistillConfig, **ranges: tuple[float, float]) -> None:
    for name, (low, high) in ranges.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _adam_betas(betas: Any) -> list[float]:
    message = f"adam_betas must be two numbers in [0, 1), got {betas!r}"
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ValueError(message)
    for beta in betas:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(message)
    return [float(beta) for beta in betas]


# NOTE: the step counts, episode counts and learning rates of the student presets are
# estimates sized for 2 CPU cores and the reference teacher, not tuned for success rate. A student-small run labels a demonstration file of about 1,000 steps, runs 2
# on-policy rounds, 3 x 1,000 training steps and 3 evaluations of 18 episodes. Its time is
# estimated at 5 to 8 minutes on 2 cores, extrapolated from a scaled-down run whose phase
# timings are listed in docs/distillation.md.
DISTILL_PRESETS: dict[str, dict[str, Any]] = {
    "student-small": {"student_preset": "small"},
    "student-tiny": {"student_preset": "tiny"},
    # The default student with 4 on-policy rounds of 60 student-driven episodes per task and
    # 10,000 steps per round, with the target-offset term. With about 180,000 labelled steps in
    # round 0 it trains for about 25 minutes and rolls out for about 10 on 2 idle cores.
    "student-reference": {
        "student_preset": "small",
        "rounds": 4,
        "episodes_per_task": 60,
        "eval_episodes_per_task": 5,
        "steps_per_round": 10000,
        "warmup_steps": 300,
        "lr": 2e-3,
        "loss": {"target_offset_weight": 1.0},
    },
    # A tiny student, two tasks, one episode per task and a handful of steps: for tests and
    # as a smoke test of a new teacher. It runs every loss term and the weight average.
    "distill-test": {
        "student_preset": "tiny",
        "tasks": "reach-red,lift-blue",
        "rounds": 1,
        "round0_episodes_per_task": 1,
        "episodes_per_task": 1,
        "eval_episodes_per_task": 1,
        "label_batch_size": 64,
        "steps_per_round": 4,
        "batch_size": 8,
        "warmup_steps": 2,
        "log_every": 2,
        "checkpoint_every": 3,
        "keep_last_checkpoints": 0,
        "ema_decay": 0.5,
        "loss": {"relation_loss_weight": 0.1, "target_offset_weight": 0.5},
    },
}


def load_distill_config(name_or_path: str | Path, **overrides: Any) -> DistillConfig:
    """Resolve a preset name or a JSON file into a DistillConfig, then apply ``overrides``.

    Overrides whose value is None are ignored. An override named ``loss`` is merged into the
    loss fields instead of replacing them.
    """
    values = read_config_values(name_or_path)
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "loss":
            values["loss"] = {**values.get("loss", {}), **value}
        else:
            values[name] = value
    valid = {item.name for item in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(
            f"unknown distillation config fields {unknown} in {name_or_path}; valid fields are {sorted(valid)}"
        )
    return DistillConfig(**values)


def read_config_values(name_or_path: str | Path) -> dict[str, Any]:
    """Return the field values of a preset name or a JSON config file.

    The loss fields that a file names replace those of its preset, or of ``default_loss()``
    when it names no preset.
    """
    name = str(name_or_path)
    if name in DISTILL_PRESETS:
        return _preset_values(name)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"student config {name!r} is neither a preset ({', '.join(sorted(DISTILL_PRESETS))}) "
            "nor an existing JSON file"
        )
    values = _read_json_object(path)
    preset = values.pop("preset", None)
    if preset is not None and preset not in DISTILL_PRESETS:
        raise ValueError(f"unknown preset {preset!r} in {path}; choose one of {sorted(DISTILL_PRESETS)}")
    base = _preset_values(preset) if preset is not None else {"loss": dataclasses.asdict(default_loss())}
    merged = {**base, **values}
    if isinstance(values.get("loss"), dict):
        merged["loss"] = {**base["loss"], **values["loss"]}
    return merged


def _preset_values(name: str) -> dict[str, Any]:
    values = json.loads(json.dumps(DISTILL_PRESETS[name]))  # a deep copy
    values["loss"] = {**dataclasses.asdict(default_loss()), **values.get("loss", {})}
    return values


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"invalid JSON in student config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"student config {path} must contain a JSON object, got {type(values).__name__}")
    return values
