"""Metrics of a distillation run: ``metrics.csv``, ``rounds.csv`` and TensorBoard events.

``metrics.csv`` is a wide table with one row per log interval and the columns of
``METRIC_COLUMNS``. A loss term whose weight is 0 is not computed and its cell stays empty.
``rounds.csv`` has one row per finished round with the columns of ``ROUND_COLUMNS``.
TensorBoard (``tb/``) gets every metrics column except ``step`` and the evaluation results as
``eval/success_rate``, ``eval/ci95_low`` and ``eval/ci95_high``, all at the optimizer step.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from vla_distill.training.checkpointing import atomic_write_text

METRICS_FILE = "metrics.csv"
ROUNDS_FILE = "rounds.csv"
TENSORBOARD_DIR = "tb"
LOSS_TERMS = ("kd", "feature", "relation", "hard", "offset", "total")
METRIC_COLUMNS = (
    "step",
    "round",
    *(f"loss/{term}" for term in LOSS_TERMS),
    "lr",
    "grad_norm",
    "samples_per_s",
)
ROUND_COLUMNS = ("round", "success_rate", "ci95_low", "ci95_high", "n_episodes", "steps", "label_rows", "wall_time_s")


class CsvTable:
    """A CSV file with a fixed header to which rows are appended."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns

    def create(self) -> None:
        """Write a file that contains only the header."""
        atomic_write_text(self.path, ",".join(self.columns) + "\n")

    def append(self, row: dict[str, object]) -> None:
        """Append one row. Missing columns stay empty and floats keep 6 significant digits."""
        cells = {name: _cell(row.get(name)) for name in self.columns}
        with self.path.open("a", newline="", encoding="utf-8") as stream:
            csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n").writerow(cells)

    def keep_rows(self, keep: Callable[[dict[str, str]], bool]) -> None:
        """Rewrite the file with only the rows for which ``keep`` returns True."""
        if not self.path.exists():
            self.create()
            return
        with self.path.open(newline="", encoding="utf-8") as stream:
            rows = [row for row in csv.DictReader(stream) if keep(row)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


class RunLogs:
    """Writers of the metrics table, the rounds table and TensorBoard events of one run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, finished_rounds: int = 0) -> None:
        """Create fresh files, or on resume drop rows written after the resumed checkpoint.

        ``resume_step`` is the optimizer step of that checkpoint and ``finished_rounds`` the
        number of rounds whose evaluation it includes.
        """
        self.metrics = CsvTable(run_dir / METRICS_FILE, METRIC_COLUMNS)
        self.rounds = CsvTable(run_dir / ROUNDS_FILE, ROUND_COLUMNS)
        if resume_step is None:
            self.metrics.create()
            self.rounds.create()
        else:
            self.metrics.keep_rows(lambda row: int(row["step"]) <= resume_step)
            self.rounds.keep_rows(lambda row: int(row["round"]) < finished_rounds)
        purge_step = None if resume_step is None else resume_step + 1
        self.tensorboard = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)

    def log_step(self, values: dict[str, float]) -> None:
        """Append one metrics row from ``values``, a map of metrics columns to numbers that includes ``step``."""
        self.metrics.append(values)
        step = int(values["step"])
        for name, value in values.items():
            if name != "step" and value is not None:
                self.tensorboard.add_scalar(name, value, global_step=step)

    def log_round(self, values: dict[str, float]) -> None:
        """Append one rounds row and its evaluation scalars at the round's last optimizer step."""
        self.rounds.append(values)
        for name in ("success_rate", "ci95_low", "ci95_high"):
            self.tensorboard.add_scalar(f"eval/{name}", values[name], global_step=int(values["steps"]))

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        self.tensorboard.close()


def read_rounds(path: Path) -> list[dict[str, float | int]]:
    """Return the rows of a rounds.csv file with counts as int and the other values as float."""
    counts = {"round", "n_episodes", "steps", "label_rows"}
    with path.open(newline="", encoding="utf-8") as stream:
        return [
            {name: int(value) if name in counts else float(value) for name, value in row.items()}
            for row in csv.DictReader(stream)
        ]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
