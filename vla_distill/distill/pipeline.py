"""Distillation of a teacher policy into a student: round 0, on-policy rounds, training, evaluation.

Run folder layout (``out_dir``):

* ``distill_config.json``: the resolved ``DistillConfig``.
* ``source.json``: teacher path and sha256, label key, demonstration file and sha256, seeds,
  command and software versions.
* ``labels-<key[:16]>.h5``: teacher labels of every round (see ``vla_distill.distill.labels``).
* ``checkpoints/step_XXXXXXXX.pt``: training state for ``resume``.
* ``metrics.csv``, ``rounds.csv`` and ``tb/``: see ``vla_distill.distill.run_logs``.
* ``student/``: the final student (config.json, model.safetensors, tokenizer.json) with copies
  of ``distill_config.json`` and ``source.json``. ``load_policy`` reads it.

Each round r = 0..rounds runs three phases: collect (append the round's labelled steps to the
label file), train (``steps_per_round`` optimizer steps on the labels of rounds 0..r) and
evaluate (success rate on the same seeded episodes every round). A checkpoint records the
round and the phase, so a resumed run never collects a round that the label file already
contains and redoes only the phase that was interrupted. On CPU, the same seed, teacher,
data, config and thread count give the same student weights, resumed or not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vla_distill.distill.adapter import build_adapter
from vla_distill.distill.collection import collect_round
from vla_distill.distill.config import DistillConfig, load_distill_config
from vla_distill.distill.losses import OFFSET_FEATURE
from vla_distill.distill.labels import LabelStore, label_file_path, read_committed_round0, teacher_label_key
from vla_distill.distill.run_logs import ROUNDS_FILE, RunLogs, read_rounds
from vla_distill.distill.trainer import DistillTrainer, LabelBatches
from vla_distill.evaluation import evaluate, summarize
from vla_distill.data.demos import TARGET_OFFSET_DIM, episode_file_paths
from vla_distill.policies.contract import VISUAL_FEATURES
from vla_distill.policies.io import (
    SOURCE_FILE,
    check_compatible,
    checkpoint_hash,
    create_policy_from_config,
    load_policy,
    read_policy_config,
    resolve_checkpoint,
    save_policy,
)
from vla_distill.rollout import ObservationPolicy
from vla_distill.training.checkpointing import (
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    restore_rng_state,
)
from vla_distill.training.provenance import data_file_records, software_versions
from vla_distill.training.trainer import check_same_config, check_same_data, record_resume, seed_everything

logger = logging.getLogger(__name__)

CONFIG_FILE = "distill_config.json"
CHECKPOINT_DIR = "checkpoints"
STUDENT_DIR = "student"
COLLECT, TRAIN, EVALUATE = "collect", "train", "evaluate"
# Instruction of the one-sample batch whose forward pass sizes the label file and the adapter.
DRY_RUN_INSTRUCTION = "reach the red cube"


@dataclass
class DistillResult:
    """Output locations and per-round results of a distillation run."""

    out_dir: Path
    label_path: Path
    step: int
    finished: bool
    """False when ``stop_after_step`` ended the run before its last round."""
    student_dir: Path | None = None
    rounds: list[dict[str, float | int]] = field(default_factory=list)
    """Rows of ``rounds.csv``."""


def distill(
    teacher: str | Path,
    config: DistillConfig | str | Path,
    out_dir: str | Path,
    resume: bool = False,
    demos: str | Path | list[str | Path] | None = None,
    stop_after_step: int | None = None,
    command: str | None = None,
    progress: bool = False,
    round0_from: str | Path | None = None,
) -> DistillResult:
    """Distill ``teacher`` into a new student and return where the outputs are.

    Args:
        teacher: teacher checkpoint folder, or ``reference``.
        config: a ``DistillConfig``, a preset name (``student-small``, ``student-tiny``,
            ``distill-test``) or a JSON file of ``DistillConfig`` fields.
        out_dir: run folder. A new run needs a folder without a previous run.
        resume: continue the run in ``out_dir`` from its newest checkpoint.
        demos: demonstration HDF5 file, or a list of them joined into one dataset, for round 0.
            Without one, round 0 rolls out the teacher.
        stop_after_step: end the run with a checkpoint after this many optimizer steps, keeping
            the schedule of the whole run, so ``resume=True`` continues it later.
        command: command line recorded in ``source.json``.
        progress: show tqdm progress bars on stderr.
        round0_from: folder of an earlier run of the same teacher whose round 0 was labelled
            from the same ``demos`` files; its round 0 labels are copied instead of labelling
            the demonstrations again.

    Raises ValueError before any collection when teacher and student are incompatible.
    """
    if not isinstance(config, DistillConfig):
        config = load_distill_config(config)
    if stop_after_step is not None and stop_after_step < 1:
        raise ValueError(f"stop_after_step must be at least 1, got {stop_after_step}")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    check_compatible(read_policy_config(teacher), config.student_config())
    demos_paths = episode_file_paths(demos)  # rejects a missing or foreign file before the run folder is written
    run = DistillRun(teacher, config, Path(out_dir), resume, demos_paths, command, progress, round0_from)
    try:
        return run.execute(stop_after_step)
    finally:
        run.close()


class DistillRun:
    """State of one distillation run: teacher, student, trainer, label store, logs, round and phase."""

    def __init__(self, teacher: str | Path, config: DistillConfig, out_dir: Path, resume: bool,
                 demos_paths: list[Path], command: str | None, progress: bool,
                 round0_from: str | Path | None = None) -> None:
        self.config = config
        self.out_dir = out_dir
        self.demos_paths = demos_paths
        self.progress = progress
        self.teacher = load_frozen_teacher(teacher)
        self.teacher_key = teacher_label_key(teacher, self.teacher.processor)
        self.label_path = label_file_path(out_dir, self.teacher_key)
        self.round0_labels = None
        if round0_from is not None:
            self.round0_labels = reusable_round0_labels(Path(round0_from), self.teacher_key, demos_paths)
        checkpoint = prepare_run_dir(
            out_dir, config, teacher, self.teacher_key, demos_paths, resume, command, self.round0_labels
        )

        teacher_outputs = dry_run(self.teacher)
        self.student, adapter, offset_head = build_student_and_heads(config, teacher_outputs)
        self.trainer = DistillTrainer(config, self.student, adapter, offset_head)
        self.round, self.phase, self.finished_rounds = 0, COLLECT, 0
        self.round_time_offset_s, self.round_started = 0.0, time.perf_counter()
        if checkpoint is not None:
            self.restore(checkpoint)

        shapes = label_shapes(self.teacher.config, teacher_outputs)
        self.store = LabelStore(self.label_path, self.teacher_key, str(teacher), shapes)
        try:
            if checkpoint is None:
                self.save_checkpoint()
            else:
                self.check_label_file()
                check_resumed_demos(out_dir, demos_paths, self.store.collected_rounds)
            self.logs = RunLogs(out_dir, self.trainer.step if checkpoint else None, self.finished_rounds)
        except BaseException:
            self.store.close()
            raise

    def execute(self, stop_after_step: int | None) -> DistillResult:
        """Run the remaining phases of every round, then save the student."""
        while self.round <= self.config.rounds:
            round_index = self.round
            if self.phase == COLLECT:
                self.collect(round_index)
                self.phase = TRAIN
            if self.phase == TRAIN:
                self.train(round_index, stop_after_step)
                if stop_after_step is not None and self.trainer.step >= stop_after_step:
                    logger.info("stopped after step %d as requested. Resume the run to continue it", self.trainer.step)
                    return self.result(finished=False)
            self.finish_round(round_index)
        with self.trainer.acting_student():
            student_dir = self.save_student()
        return self.result(finished=True, student_dir=student_dir)

    def collect(self, round_index: int) -> None:
        """Append the round's labelled steps to the label file unless it already contains them."""
        if self.store.collected_rounds > round_index:
            logger.info("round %d is already in %s, so its collection is skipped", round_index, self.label_path)
            return
        if round_index == 0 and self.round0_labels is not None:
            logger.info("round 0: copying the labels of %s", self.round0_labels)
            labelled = read_committed_round0(self.round0_labels, self.teacher_key)
        else:
            with self.trainer.acting_student() as student:
                labelled = collect_round(round_index, self.config, self.teacher, student, self.demos_paths, self.progress)
        self.store.append_round(labelled)

    def check_label_file(self) -> None:
        """Raise ValueError if the label file lacks a round that the resumed checkpoint has collected."""
        needed = self.round if self.phase == COLLECT else self.round + 1
        collected = self.store.collected_rounds
        if collected < needed:
            raise ValueError(
                f"cannot resume: {self.label_path} contains {collected} collected rounds but the checkpoint "
                f"is past the collection of {needed}. Start a new run in another folder"
            )

    def train(self, round_index: int, stop_after_step: int | None) -> None:
        """Train on the labels of rounds 0..round_index until the round ends or the stop step."""
        config = self.config
        round_end = (round_index + 1) * config.steps_per_round
        end_step = round_end if stop_after_step is None else min(round_end, max(stop_after_step, self.trainer.step))
        data = LabelBatches(
            self.store.read(round_index), self.student.processor, self.student.config.action_tokenizer(),
            config.batch_size, config.seed, round_index,
        )
        logger.info("round %d: training on %d labelled steps", round_index, len(data.labels))
        self.trainer.train_round(data, round_index, end_step, self.save_checkpoint, self.logs, self.progress)
        if self.trainer.step == round_end:
            self.phase = EVALUATE
        self.save_checkpoint()

    def finish_round(self, round_index: int) -> None:
        """Evaluate the acting student, write its rounds.csv row and checkpoint the start of the next round."""
        with self.trainer.acting_student():
            row = self.evaluate(round_index)
        self.logs.log_round(row)
        logger.info(
            "round %d: success rate %.3f (95%% CI [%.3f, %.3f]) on %d episodes after %d steps, %.0f s",
            round_index, row["success_rate"], row["ci95_low"], row["ci95_high"], row["n_episodes"],
            row["steps"], row["wall_time_s"],
        )
        self.finished_rounds = round_index + 1
        self.round, self.phase = round_index + 1, COLLECT
        self.round_time_offset_s, self.round_started = 0.0, time.perf_counter()
        self.save_checkpoint()

    def evaluate(self, round_index: int) -> dict[str, Any]:
        """Return the rounds.csv row of the student's success on the fixed evaluation episodes."""
        config = self.config
        tasks = config.task_names()
        self.student.eval()
        bar = tqdm(total=len(tasks) * config.eval_episodes_per_task, desc=f"round {round_index} evaluation",
                   unit="episode", disable=not self.progress, dynamic_ncols=True)
        try:
            records = evaluate(
                ObservationPolicy(self.student, name="student"),
                tasks,
                config.eval_episodes_per_task,
                config.eval_seed,
                num_envs=config.num_envs,
                image_size=self.student.config.image_size,
                on_episode=lambda record: bar.update(1),
            )
        finally:
            bar.close()
        info = summarize("student", config.suite, config.eval_seed, config.eval_episodes_per_task, records)
        return {
            "round": round_index,
            "success_rate": info["success_rate"],
            "ci95_low": info["ci95"][0],
            "ci95_high": info["ci95"][1],
            "n_episodes": len(records),
            "steps": self.trainer.step,
            "label_rows": self.store.n_rows,
            "wall_time_s": self.round_wall_time_s(),
        }

    def round_wall_time_s(self) -> float:
        """Return the seconds spent in the current round, across resumed processes."""
        return self.round_time_offset_s + time.perf_counter() - self.round_started

    def save_checkpoint(self) -> None:
        """Write the training state with the round, phase and RNG states at the current step."""
        payload = {
            **self.trainer.state_dict(),
            "round": self.round,
            "phase": self.phase,
            "finished_rounds": self.finished_rounds,
            "round_wall_time_s": self.round_wall_time_s(),
            "rng": capture_rng_state(),
            "config": self.config.to_dict(),
            "teacher_key": self.teacher_key,
        }
        folder = self.out_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = checkpoint_path(folder, self.trainer.step)
        atomic_torch_save(payload, path)
        logger.info("saved checkpoint %s (round %d, phase %s)", path, self.round, self.phase)
        prune_checkpoints(folder, self.config.keep_last_checkpoints)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load the trainer, round, phase, timing and RNG states of a checkpoint."""
        self.trainer.load_state_dict(checkpoint)
        self.round = int(checkpoint["round"])
        self.phase = str(checkpoint["phase"])
        self.finished_rounds = int(checkpoint["finished_rounds"])
        self.round_time_offset_s = float(checkpoint["round_wall_time_s"])
        restore_rng_state(checkpoint["rng"])
        logger.info("resuming at step %d, round %d, phase %s", self.trainer.step, self.round, self.phase)

    def save_student(self) -> Path:
        """Save the student policy with the run's config and source record to ``student/``."""
        student_dir = self.out_dir / STUDENT_DIR
        self.student.eval()
        save_policy(self.student, student_dir)
        for name in (CONFIG_FILE, SOURCE_FILE):
            atomic_write_text(student_dir / name, (self.out_dir / name).read_text(encoding="utf-8"))
        logger.info("saved the distilled student to %s", student_dir)
        return student_dir

    def result(self, finished: bool, student_dir: Path | None = None) -> DistillResult:
        rounds = read_rounds(self.out_dir / ROUNDS_FILE)
        return DistillResult(self.out_dir, self.label_path, self.trainer.step, finished, student_dir, rounds)

    def close(self) -> None:
        """Close the label file and the TensorBoard writer."""
        self.store.close()
        self.logs.close()


def load_frozen_teacher(teacher: str | Path):
    """Load the teacher in eval mode with gradients disabled for every parameter."""
    model, _ = load_policy(teacher)
    model.eval()
    model.requires_grad_(False)
    return model


def build_student_and_heads(config: DistillConfig, teacher_outputs):
    """Seed the global generators, then create the student, the adapter of the feature term
    and the head of the offset term (None when their term's weight is 0)."""
    seed_everything(config.seed)
    student = create_policy_from_config(config.student_config())
    student_features = dry_run(student).features
    adapter, offset_head = None, None
    if config.loss.feature_loss_weight > 0:
        adapter = build_adapter(student_features, teacher_outputs.features)
    if config.loss.target_offset_weight > 0:
        if OFFSET_FEATURE not in student_features:
            raise ValueError(
                f"the offset term reads the student's features[{OFFSET_FEATURE!r}], which this student does not "
                "return; set loss.target_offset_weight to 0"
            )
        offset_head = nn.Linear(student_features[OFFSET_FEATURE].shape[-1], TARGET_OFFSET_DIM)
    return student, adapter, offset_head


@torch.no_grad()
def dry_run(model):
    """Return the outputs of ``model`` on one blank observation, to read output shapes."""
    config = model.config
    observation = {
        "image": np.zeros((1, config.image_size, config.image_size, 3), dtype=np.uint8),
        "state": np.zeros((1, config.state_dim), dtype=np.float32),
        "instruction": [DRY_RUN_INSTRUCTION],
    }
    return model(model.processor(observation))


def label_shapes(teacher_config, teacher_outputs) -> dict[str, tuple]:
    """Return the per-row shape of each row field of the label file."""
    size = teacher_config.image_size
    return {
        "images": (size, size, 3),
        "states": (teacher_config.state_dim,),
        "expert_actions": (teacher_config.action_dim,),
        "teacher_logits": tuple(teacher_outputs.action_logits.shape[1:]),
        "teacher_features": tuple(teacher_outputs.features[VISUAL_FEATURES].shape[1:]),
    }


def reusable_round0_labels(run_dir: Path, teacher_key: str, demos_paths: list[Path]) -> Path:
    """Return the label file of ``run_dir`` whose round 0 can be copied into a new run.

    Raises ValueError unless that run labelled the same demonstration files, in the same order,
    with the same teacher."""
    if not demos_paths:
        raise ValueError("reusing round 0 labels needs the demonstration files they were made from (--demos)")
    labels = label_file_path(run_dir, teacher_key)
    if not labels.is_file():
        raise ValueError(
            f"{run_dir} has no label file of this teacher ({labels.name} not found); it is not a distillation "
            "run of the same teacher and processor"
        )
    source_path = run_dir / SOURCE_FILE
    recorded = json.loads(source_path.read_text(encoding="utf-8")).get("data", []) if source_path.is_file() else []
    recorded_digests = [item["sha256"] for item in recorded]
    current = data_file_records(demos_paths)
    if recorded_digests != [item["sha256"] for item in current]:
        raise ValueError(
            f"the round 0 labels of {run_dir} were made from other demonstration files "
            f"({', '.join(item['path'] for item in recorded) or 'teacher rollouts'}) than --demos "
            f"({', '.join(item['path'] for item in current)}); pass the same files in the same order"
        )
    return labels


def prepare_run_dir(out_dir: Path, config: DistillConfig, teacher: str | Path, teacher_key: str,
                    demos_paths: list[Path], resume: bool, command: str | None,
                    round0_labels: Path | None = None) -> dict[str, Any] | None:
    """Create a new run folder, or check a resumed one and return its newest checkpoint."""
    checkpoints = list_checkpoints(out_dir / CHECKPOINT_DIR)
    if not resume:
        if checkpoints or (out_dir / STUDENT_DIR).exists() or any(out_dir.glob("labels-*.h5")):
            raise ValueError(
                f"{out_dir} already contains a distillation run; pass --resume to continue it "
                "or choose another --out folder"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        source = build_source(config, teacher, teacher_key, demos_paths, command, round0_labels)
        atomic_write_text(out_dir / SOURCE_FILE, json.dumps(source, indent=2) + "\n")
        return None

    if not checkpoints:
        raise ValueError(f"cannot resume: no checkpoint in {out_dir / CHECKPOINT_DIR}; start without --resume")
    _, path = checkpoints[-1]
    checkpoint = load_training_checkpoint(path)
    defaults = DistillConfig().to_dict()
    check_same_config(checkpoint["config"], config.to_dict(), defaults, path, out_dir / CONFIG_FILE)
    if checkpoint["teacher_key"] != teacher_key:
        raise ValueError(
            f"cannot resume from {path}: the run was started with teacher key {checkpoint['teacher_key']}, "
            f"the given teacher has key {teacher_key}; resume with the original teacher or start a new run"
        )
    record_resume(out_dir, command)
    return checkpoint


def check_resumed_demos(out_dir: Path, demos_paths: list[Path], collected_rounds: int) -> None:
    """Raise ValueError if round 0 still needs collection from other demonstrations than the run's."""
    if collected_rounds > 0:
        return
    source = json.loads((out_dir / SOURCE_FILE).read_text(encoding="utf-8"))
    recorded = source.get("data") or source.get("data_sha256")
    if not recorded and demos_paths:
        raise ValueError("cannot resume with --demos: the run started without a demonstration file")
    if recorded and not demos_paths:
        raise ValueError("cannot resume without --demos: pass the demonstration files the run started with")
    if demos_paths:
        check_same_data(out_dir, demos_paths)


def build_source(config: DistillConfig, teacher: str | Path, teacher_key: str,
                 demos_paths: list[Path], command: str | None, round0_labels: Path | None = None) -> dict[str, Any]:
    """Return the record of how the run was started: teacher, data, seeds, command and versions."""
    return {
        "command": command or "vla_distill.distill.distill (Python API)",
        "teacher": str(teacher),
        "teacher_path": str(resolve_checkpoint(teacher).resolve()),
        "teacher_sha256": checkpoint_hash(teacher),
        "teacher_label_key": teacher_key,
        "data": data_file_records(demos_paths),
        "round0_labels_from": None if round0_labels is None else str(round0_labels.resolve()),
        "seeds": {"seed": config.seed, "rollout_seed": config.rollout_seed, "eval_seed": config.eval_seed},
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(),
    }
