"""Behaviour-cloning training of a teacher policy on demonstrations.

Run folder layout (``out_dir``):

* ``train_config.json``: the resolved ``TrainConfig``.
* ``source.json``: command, data path, data sha256, seed and software versions.
* ``checkpoints/step_XXXXXXXX.pt``: training state for ``--resume``.
* ``metrics.csv`` and ``tb/``: metrics as CSV rows and TensorBoard events.
* ``final/``: the trained policy (config.json, model.safetensors, tokenizer.json) with
  copies of ``train_config.json`` and ``source.json``. ``load_policy`` reads it.

Each step runs in a fixed order: forward, loss, backward, gradient clipping, AdamW step,
learning-rate step, then logging, validation and checkpointing when they are due.
On CPU, the same seed, data and thread count give the same weights, and a resumed run
gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vla_distill.policies.io import create_policy_from_config, load_initial_weights, save_policy
from vla_distill.data.demos import TARGET_OFFSET_DIM, episode_file_paths
from vla_distill.training.checkpointing import (
    atomic_write_text,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_training_checkpoint,
)
from vla_distill.training.config import TrainConfig
from vla_distill.training.data import DemoBatches, EpochOrder, load_training_demos
from vla_distill.training.losses import METRES_TO_DECIMETRES, behaviour_cloning_loss, bin_accuracy, target_offset_loss
from vla_distill.training.metrics import MetricsLogger
from vla_distill.training.optimization import build_optimizer, build_scheduler
from vla_distill.training.provenance import SOURCE_FILE, TRAIN_CONFIG_FILE, build_source_record, file_sha256

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
OFFSET_FEATURE = "fused"
OFFSET_HEAD_STATE = "offset_head"
FINAL_DIR = "final"


@dataclass
class TrainResult:
    """Output locations and last metrics of a training run."""

    run_dir: Path
    step: int
    final_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)


def train_teacher(
    config: TrainConfig,
    data_paths: str | Path | list[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    stop_after_step: int | None = None,
    command: str | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a teacher by behaviour cloning and return where its outputs are.

    ``stop_after_step`` ends the run after that many optimizer steps with a checkpoint but
    keeps the schedule of ``config.total_steps``, so ``resume=True`` continues it later.
    ``command`` is recorded in ``source.json``. ``progress`` shows a tqdm bar on stderr.
    Several ``data_paths`` are joined into one dataset.
    """
    run_dir = Path(out_dir)
    data_paths = episode_file_paths(data_paths)  # rejects a missing or foreign file before the run folder is written
    checkpoint = prepare_run_dir(run_dir, config, data_paths, resume, command)
    trainer = Trainer(config, data_paths, run_dir, checkpoint)
    try:
        return trainer.run(stop_after_step, progress)
    finally:
        trainer.metrics.close()


def prepare_run_dir(
    run_dir: Path, config: TrainConfig, data_paths: list[Path], resume: bool, command: str | None
) -> dict[str, Any] | None:
    """Create or check the run folder and return the checkpoint to resume from, if any."""
    checkpoints = list_checkpoints(run_dir / CHECKPOINT_DIR)
    if not resume:
        if checkpoints or (run_dir / FINAL_DIR).exists():
            raise ValueError(
                f"{run_dir} already contains a training run; pass --resume to continue it "
                "or choose another --out folder"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / TRAIN_CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        source = build_source_record(data_paths, config.seed, command, config.init_from)
        atomic_write_text(run_dir / SOURCE_FILE, json.dumps(source, indent=2) + "\n")
        return None

    if not checkpoints:
        raise ValueError(f"cannot resume: no training checkpoint in {run_dir / CHECKPOINT_DIR}")
    step, path = checkpoints[-1]
    checkpoint = load_training_checkpoint(path)
    defaults = TrainConfig().to_dict()
    check_same_config(checkpoint["train_config"], config.to_dict(), defaults, path, run_dir / TRAIN_CONFIG_FILE)
    check_same_data(run_dir, data_paths)
    record_resume(run_dir, command)
    logger.info("resuming from %s (step %d)", path, step)
    return checkpoint


def record_resume(run_dir: Path, command: str | None) -> None:
    """Append the resuming command to the ``resumed_by`` list of the run's source record."""
    source_path = run_dir / SOURCE_FILE
    if not source_path.is_file():
        return
    source = json.loads(source_path.read_text(encoding="utf-8"))
    source.setdefault("resumed_by", []).append(command or "Python API")
    atomic_write_text(source_path, json.dumps(source, indent=2) + "\n")


def check_same_config(
    saved: dict[str, Any], requested: dict[str, Any], defaults: dict[str, Any], path: Path, config_file: Path
) -> None:
    """Raise ValueError listing every field where the resumed config differs from the one saved
    in checkpoint ``path`` and in ``config_file``.

    A field missing from ``saved`` (a run started before the field existed) counts as its
    value in ``defaults``, so such a run resumes when the requested value is the default.
    """
    saved = defaults | saved
    differences = [
        f"{name}: saved={saved.get(name)!r} requested={requested.get(name)!r}"
        for name in sorted(set(saved) | set(requested))
        if saved.get(name) != requested.get(name)
    ]
    if differences:
        raise ValueError(
            f"cannot resume from {path}: the training config differs ({'; '.join(differences)}); "
            f"resume with the config saved in {config_file} or start a new run in another --out folder"
        )


def check_same_data(run_dir: Path, data_paths: list[Path]) -> None:
    """Raise ValueError unless the data files have the sha256 digests the run started with, in order."""
    source_path = run_dir / SOURCE_FILE
    if not source_path.is_file():
        return
    source = json.loads(source_path.read_text(encoding="utf-8"))
    saved = [item["sha256"] for item in source.get("data", [])] or [source.get("data_sha256")]
    current = [file_sha256(path) for path in data_paths]
    if saved != current:
        files = ", ".join(f"{path} ({digest[:12]}...)" for path, digest in zip(data_paths, current))
        raise ValueError(
            f"cannot resume: {files} is not the data the run started with "
            f"(sha256 {', '.join(str(digest)[:12] + '...' for digest in saved)})"
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """State of one training run: model, optimizer, schedule, data and metric writers."""

    def __init__(self, config: TrainConfig, data_paths: list[Path], run_dir: Path, checkpoint: dict | None) -> None:
        self.config = config
        self.run_dir = run_dir
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        seed_everything(config.seed)

        self.model = create_policy_from_config(config.teacher_config())
        if config.init_from is not None and checkpoint is None:
            load_initial_weights(self.model, config.init_from)
        self.model.train()
        model_config = self.model.config
        demos = load_training_demos(data_paths, model_config)
        self.data = DemoBatches(
            demos, self.model.processor, model_config.action_tokenizer(), config.val_fraction, config.seed
        )
        self.order = EpochOrder(len(self.data.train_steps), config.batch_size, config.seed)
        self.offset_head = self.build_offset_head()
        trained = self.model if self.offset_head is None else torch.nn.ModuleDict({"policy": self.model, "offset_head": self.offset_head})
        self.optimizer = build_optimizer(trained, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.step = 0
        if checkpoint is not None:
            self.restore(checkpoint)
        self.metrics = MetricsLogger(run_dir, resume_step=self.step if checkpoint is not None else None)
        self.last_metrics: dict[str, float] = {}
        logger.info(
            "training teacher preset %s (%d parameters) for %d steps",
            model_config.preset, self.model.num_parameters(), config.total_steps,
        )

    def build_offset_head(self) -> torch.nn.Linear | None:
        """Return the auxiliary target-offset head, or None when its loss weight is 0."""
        if self.config.target_offset_weight == 0:
            return None
        self.data.target_offsets(self.data.train_steps[:1])  # raises early when the data lacks offsets
        return torch.nn.Linear(self.model.config.hidden_size, TARGET_OFFSET_DIM)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load model, optimizer, scheduler, RNG states and step from a training checkpoint."""
        self.model.load_state_dict(checkpoint["model"], strict=True)
        if self.offset_head is not None:
            self.offset_head.load_state_dict(checkpoint[OFFSET_HEAD_STATE])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng_state(checkpoint["rng"])
        self.step = int(checkpoint["step"])

    def run(self, stop_after_step: int | None, progress: bool) -> TrainResult:
        """Train until total_steps (or stop_after_step) and return the result."""
        last_step = self.config.total_steps
        if stop_after_step is not None:
            last_step = min(last_step, stop_after_step)
        bar = tqdm(total=self.config.total_steps, initial=self.step, unit="step", disable=not progress, dynamic_ncols=True)
        window_start, window_samples = time.perf_counter(), 0
        while self.step < last_step:
            train_terms = self.train_step()
            window_samples += self.config.batch_size
            bar.update(1)
            if self.step % self.config.log_every == 0:
                elapsed = time.perf_counter() - window_start
                self.log_train(train_terms, window_samples / max(elapsed, 1e-9))
                bar.set_postfix(loss=f"{train_terms['loss']:.3f}")
                window_start, window_samples = time.perf_counter(), 0
            self.evaluate_and_checkpoint(last_step)
        bar.close()
        final_dir = self.save_final() if self.step == self.config.total_steps else None
        return TrainResult(self.run_dir, self.step, final_dir, dict(self.last_metrics))

    def train_step(self) -> dict[str, float]:
        """Run one optimizer step on the batch of the current step and return its scalars."""
        rows = self.data.train_rows(self.order, self.step)
        batch, targets = self.data.train_batch(rows, self.step, self.config.augment_shift_px)
        output = self.model(batch)
        loss, terms = behaviour_cloning_loss(
            output.action_logits, targets, self.config.label_smoothing, self.config.label_sigma_bins
        )
        if self.offset_head is not None:
            offsets = self.data.target_offsets(rows)
            offset_loss = target_offset_loss(self.offset_head(output.features[OFFSET_FEATURE]), offsets)
            loss = loss + self.config.target_offset_weight * offset_loss
            terms["target_offset_mse_dm2"] = float(offset_loss.detach())

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.grad_clip_norm if self.config.grad_clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr, **terms}

    def log_train(self, terms: dict[str, float], samples_per_s: float) -> None:
        """Write training scalars of the current step and one compact log line."""
        values = {f"train/{name}": value for name, value in terms.items()}
        values["train/samples_per_s"] = samples_per_s
        self.metrics.log(self.step, values)
        self.last_metrics.update(values)
        logger.info(
            "step %d/%d loss %.4f lr %.2e grad_norm %.3f samples/s %.0f",
            self.step, self.config.total_steps, terms["loss"], terms["lr"], terms["grad_norm"], samples_per_s,
        )

    def evaluate_and_checkpoint(self, last_step: int) -> None:
        """Validate and write a checkpoint when the current step calls for it."""
        at_end = self.step == last_step
        if len(self.data.val_steps) and (self.step % self.config.eval_every == 0 or at_end):
            self.log_validation()
        if self.step % self.config.checkpoint_every == 0 or at_end:
            folder = self.run_dir / CHECKPOINT_DIR
            extra = None if self.offset_head is None else {OFFSET_HEAD_STATE: self.offset_head.state_dict()}
            save_training_checkpoint(
                folder, self.step, self.model, self.optimizer, self.scheduler, self.config.to_dict(), extra
            )
            prune_checkpoints(folder, self.config.keep_last_checkpoints)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Return the mean cross-entropy and per-dimension bin accuracy on the validation subset."""
        self.model.eval()
        rows = self.data.val_subset(self.config.eval_max_samples)
        loss_sum, correct = 0.0, torch.zeros(self.model.config.action_dim)
        abs_error = torch.zeros(self.model.config.action_dim)
        offset_error_cm = torch.zeros(2)  # summed absolute error, number of known entries
        tokenizer = self.model.config.action_tokenizer()
        for start in range(0, len(rows), self.config.batch_size):
            chunk = rows[start : start + self.config.batch_size]
            batch, targets = self.data.batch(chunk)
            output = self.model(batch)
            logits = output.action_logits
            loss, _ = behaviour_cloning_loss(logits, targets)
            if self.offset_head is not None:
                offset_error_cm += self.offset_error_cm(output.features[OFFSET_FEATURE], chunk)
            loss_sum += float(loss) * len(chunk)
            correct += bin_accuracy(logits, targets) * len(chunk)
            abs_error += (tokenizer.decode(logits.argmax(dim=-1)) - tokenizer.decode(targets)).abs().sum(dim=0)
        self.model.train()

        accuracy = correct / len(rows)
        values = {
            "val/loss": loss_sum / len(rows),
            "val/accuracy": float(accuracy.mean()),
            "val/action_mae": float(abs_error.sum() / (len(rows) * len(abs_error))),
        }
        for name, value in zip(self.model.config.action_names, accuracy.tolist()):
            values[f"val/accuracy_{name}"] = value
        if self.offset_head is not None:
            values["val/target_offset_mae_cm"] = float(offset_error_cm[0] / offset_error_cm[1].clamp(min=1))
        return values

    def offset_error_cm(self, features: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Return (summed absolute error in cm, number of known entries) of the offset head on ``rows``."""
        offsets = self.data.target_offsets(rows)
        known = torch.isfinite(offsets)
        predicted_m = self.offset_head(features) / METRES_TO_DECIMETRES
        error = (predicted_m[known] - offsets[known]).abs().sum() * 100.0
        return torch.stack([error, known.sum().float()])

    def log_validation(self) -> None:
        """Validate, record the metrics and log one line."""
        values = self.validate()
        self.metrics.log(self.step, values)
        self.last_metrics.update(values)
        logger.info("step %d validation loss %.4f accuracy %.3f", self.step, values["val/loss"], values["val/accuracy"])

    def save_final(self) -> Path:
        """Save the trained policy with its training config and source record to ``final/``."""
        final_dir = self.run_dir / FINAL_DIR
        self.model.eval()
        save_policy(self.model, final_dir)
        for name in (TRAIN_CONFIG_FILE, SOURCE_FILE):
            atomic_write_text(final_dir / name, (self.run_dir / name).read_text(encoding="utf-8"))
        logger.info("saved the trained teacher to %s", final_dir)
        return final_dir
