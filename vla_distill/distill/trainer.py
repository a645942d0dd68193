"""Student training on cached teacher labels: training batches, the optimizer step and the round loop.

The teacher never runs here. Each batch carries the teacher's logits and visual features
from the label file, converted from float16 to float32.

With ``augment_shift_px > 0`` the student is trained on a randomly shifted image while the
cached teacher labels were computed on the unshifted one. The default is 0, so the student
and the labels use the same pixels. A shift of a few pixels keeps the labels approximately right
because the teacher's prediction changes little under such a shift.

Sample order and augmentation of optimizer step ``s`` depend only on the seed, the round
and ``s``, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vla_distill.distill.config import DistillConfig
from vla_distill.distill.labels import LabelSet
from vla_distill.distill.losses import DistillationLoss
from vla_distill.distill.run_logs import LOSS_TERMS, RunLogs
from vla_distill.policies.contract import ATTENTION_MASK, IMAGE, INPUT_IDS, STATE, VISUAL_FEATURES
from vla_distill.training.data import AUGMENT_STREAM, EpochOrder, random_shift
from vla_distill.training.optimization import build_optimizer, build_scheduler
from vla_distill.training.weight_average import WeightAverage

logger = logging.getLogger(__name__)


@dataclass
class TrainingBatch:
    """Student inputs, cached teacher outputs and hard-label targets of one batch."""

    inputs: dict[str, torch.Tensor]
    """Student batch of the policy contract."""
    teacher_outputs: dict
    """``{"action_logits": (B, A, K), "features": {"visual": (B, D)}}``, float32."""
    expert_actions: torch.Tensor
    """int64 (B, A) expert action bins. Rows without an expert action contain placeholders."""
    has_expert: torch.Tensor
    """bool (B,), True for rows with an expert action."""
    target_offsets: torch.Tensor
    """float32 (B, 5) named cube and zone offsets in metres, NaN where unknown."""


class LabelBatches:
    """Training batches drawn from the labels of every round up to one round."""

    def __init__(self, labels: LabelSet, processor, action_tokenizer, batch_size: int, seed: int, round_index: int) -> None:
        if len(labels) == 0:
            raise ValueError(f"no labelled steps for rounds 0..{round_index}, so there is nothing to train on")
        self.labels = labels
        self.processor = processor
        self.seed = seed
        self.episode_ids, self.episode_mask = processor.tokenize(labels.episode_instruction)
        self.expert_bins = torch.from_numpy(action_tokenizer.encode(labels.expert_actions))
        # Each round draws a fresh epoch order over its own, larger set of rows.
        round_seed = int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0])
        self.order = EpochOrder(len(labels), batch_size, round_seed)

    def batch(self, rows: np.ndarray, images: np.ndarray | None = None) -> TrainingBatch:
        """Return the batch of label rows ``rows``, with ``images`` in place of their stored images if given."""
        labels = self.labels
        pixels = labels.images[rows] if images is None else images
        episodes = torch.from_numpy(labels.episode_index[rows])
        inputs = {
            IMAGE: self.processor.prepare_images(pixels),
            INPUT_IDS: self.episode_ids[episodes],
            ATTENTION_MASK: self.episode_mask[episodes],
            STATE: self.processor.prepare_states(labels.states[rows]),
        }
        teacher_outputs = {
            "action_logits": torch.from_numpy(labels.teacher_logits[rows]).float(),
            "features": {VISUAL_FEATURES: torch.from_numpy(labels.teacher_features[rows]).float()},
        }
        row_index = torch.from_numpy(rows)
        return TrainingBatch(
            inputs,
            teacher_outputs,
            self.expert_bins[row_index],
            torch.from_numpy(labels.has_expert[rows]),
            torch.from_numpy(labels.target_offsets[rows]),
        )

    def train_batch(self, round_step: int, global_step: int, max_shift: int) -> TrainingBatch:
        """Return the batch of step ``round_step`` of the round, shifted when ``max_shift`` > 0."""
        rows = np.sort(self.order.indices(round_step))
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, global_step])
        return self.batch(rows, random_shift(self.labels.images[rows], max_shift, rng))


class DistillTrainer:
    """Student, feature adapter, offset head, loss, AdamW, the warm-up plus cosine schedule over all
    rounds and, with ``ema_decay`` > 0, the moving average of the student's weights."""

    def __init__(
        self, config: DistillConfig, student: nn.Module, adapter: nn.Module | None, offset_head: nn.Module | None = None
    ) -> None:
        self.config = config
        self.student = student
        self.adapter = adapter
        self.offset_head = offset_head
        self.loss_fn = DistillationLoss(config.loss, adapter, offset_head)
        trained = {"student": student, "adapter": adapter, "offset_head": offset_head}
        self.trained = nn.ModuleDict({name: module for name, module in trained.items() if module is not None})
        self.optimizer = build_optimizer(self.trained, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.weight_average = WeightAverage(student, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0

    @contextlib.contextmanager
    def acting_student(self) -> Iterator[nn.Module]:
        """Yield the student that acts (rolls out, is evaluated and saved): the weight average if kept."""
        if self.weight_average is None:
            yield self.student
            return
        with self.weight_average.applied() as student:
            yield student

    def train_step(self, batch: TrainingBatch) -> dict[str, float]:
        """Run forward, backward, gradient clipping and one AdamW and schedule step, and return the scalars."""
        self.student.train()
        outputs = self.student(batch.inputs)
        loss, loss_dict = self.loss_fn(
            outputs,
            batch.teacher_outputs,
            expert_actions=batch.expert_actions,
            has_expert=batch.has_expert,
            target_offsets=batch.target_offsets,
        )

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.grad_clip_norm if self.config.grad_clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.weight_average is not None:
            self.weight_average.update()
        self.step += 1
        return {name: float(value) for name, value in loss_dict.items()} | {"grad_norm": float(grad_norm)}

    def train_round(
        self,
        data: LabelBatches,
        round_index: int,
        end_step: int,
        save_checkpoint: Callable[[], None],
        logs: RunLogs,
        progress: bool = False,
    ) -> None:
        """Train until optimizer step ``end_step``, checkpointing every ``checkpoint_every`` steps.

        Each iteration reads the learning rate, writes a checkpoint when one is due, runs the
        step (forward, backward, clip, AdamW) and logs every ``log_every`` steps.
        """
        config = self.config
        round_start = round_index * config.steps_per_round
        first_step = self.step
        window = LogWindow()
        bar = tqdm(total=end_step - round_start, initial=self.step - round_start, desc=f"round {round_index} training", unit="step", disable=not progress, dynamic_ncols=True)
        while self.step < end_step:
            lr = self.scheduler.get_last_lr()[0]
            if self.step % config.checkpoint_every == 0 and self.step != first_step:
                save_checkpoint()

            batch = data.train_batch(self.step - round_start, self.step, config.augment_shift_px)
            scalars = self.train_step(batch)

            window.add(scalars, lr, len(batch.has_expert))
            bar.update(1)
            if self.step % config.log_every == 0:
                self.log_window(window, round_index, logs)
                bar.set_postfix(loss=f"{scalars['total']:.3f}")
                window = LogWindow()
        bar.close()

    def log_window(self, window: LogWindow, round_index: int, logs: RunLogs) -> None:
        """Write one metrics row with the window's means and log one compact line."""
        row = {"step": self.step, "round": round_index, **window.means()}
        logs.log_step(row)
        terms = " ".join(
            f"{term} {row[f'loss/{term}']:.4f}" for term in LOSS_TERMS[:-1] if row.get(f"loss/{term}") is not None
        )
        logger.info(
            "round %d step %d/%d loss %.4f (%s) lr %.2e grad_norm %.3f samples/s %.0f",
            round_index, self.step, self.config.total_steps, row["loss/total"], terms,
            row["lr"], row["grad_norm"], row["samples_per_s"],
        )

    def state_dict(self) -> dict:
        """Return the training state: student, adapter, offset head, optimizer, scheduler, weight average and step."""
        return {
            "student": self.student.state_dict(),
            "adapter": None if self.adapter is None else self.adapter.state_dict(),
            "offset_head": None if self.offset_head is None else self.offset_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weight_average": None if self.weight_average is None else self.weight_average.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the training state returned by ``state_dict``."""
        self.student.load_state_dict(state["student"], strict=True)
        if self.adapter is not None:
            self.adapter.load_state_dict(state["adapter"], strict=True)
        if self.offset_head is not None:
            self.offset_head.load_state_dict(state["offset_head"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.weight_average is not None:
            # The resumed config equals the checkpoint's, so a run with ema_decay > 0 saved an average.
            self.weight_average.load_state_dict(state["weight_average"])
        self.step = int(state["step"])


class LogWindow:
    """Running means of the loss terms, learning rate and gradient norm since the last log row."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.samples = 0
        self.started = time.perf_counter()

    def add(self, scalars: dict[str, float], lr: float, batch_size: int) -> None:
        """Add the scalars of one optimizer step."""
        values = {f"loss/{term}": scalars[term] for term in LOSS_TERMS if term in scalars}
        values.update(lr=lr, grad_norm=scalars["grad_norm"])
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.samples += batch_size

    def means(self) -> dict[str, float]:
        """Return the mean of every scalar and the training throughput in samples per second."""
        means = {name: total / max(self.steps, 1) for name, total in self.sums.items()}
        means["samples_per_s"] = self.samples / max(time.perf_counter() - self.started, 1e-9)
        return means
