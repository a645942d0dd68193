"""Training metrics written to a CSV file and to TensorBoard.

``metrics.csv`` has one row per value with the columns ``step,name,value``. Names carry
their split as a prefix (``train/loss``, ``val/accuracy``). On resume, rows and events
after the resumed step, written by the interrupted run after its last checkpoint, are
dropped so each step appears once.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from vla_distill.training.checkpointing import atomic_write_text

CSV_COLUMNS = ("step", "name", "value")


class MetricsLogger:
    """Append named scalar metrics to ``<run>/metrics.csv`` and ``<run>/tb``."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.csv_path = run_dir / "metrics.csv"
        if resume_step is None or not self.csv_path.exists():
            atomic_write_text(self.csv_path, ",".join(CSV_COLUMNS) + "\n")
        else:
            drop_rows_after(self.csv_path, resume_step)
        purge_step = None if resume_step is None else resume_step + 1
        self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record each ``name: value`` pair at ``step``."""
        with self.csv_path.open("a", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            for name, value in values.items():
                writer.writerow((step, name, f"{value:.6g}"))
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        self.tensorboard.close()


def drop_rows_after(path: Path, step: int) -> None:
    """Rewrite a metrics CSV without the rows whose step is greater than ``step``."""
    with path.open(newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if int(row["step"]) <= step]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[tuple[int, str, float]]:
    """Return the (step, name, value) rows of a metrics CSV."""
    with path.open(newline="", encoding="utf-8") as stream:
        return [(int(row["step"]), row["name"], float(row["value"])) for row in csv.DictReader(stream)]
