"""Figures of the quickstart report, written as PNG with matplotlib's Agg backend."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROLE_LABELS = {"teacher": "teacher (torch)", "student": "student (torch)", "student_onnx": "student (ONNX fp32)", "student_int8": "student (ONNX INT8)"}
ROLE_COLORS = {"teacher": "tab:red", "student": "tab:blue", "student_onnx": "tab:green", "student_int8": "tab:purple"}


def plot_success_tradeoff(summary: dict, key: str, xlabel: str, path: Path) -> Path:
    """Plot success rate (with its 95% interval) against ``key`` on a log x axis, one point per policy."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for role, label in ROLE_LABELS.items():
        entry = summary[role]
        low, high = entry["ci95"]
        rate = entry["success_rate"]
        ax.errorbar(entry[key], rate, yerr=[[max(0.0, rate - low)], [max(0.0, high - rate)]], fmt="o", capsize=4, color=ROLE_COLORS[role], label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_task(eval_infos: dict[str, dict], path: Path) -> Path:
    """Plot per-task success bars with Wilson 95% intervals, one bar group per task."""
    roles = [role for role in ROLE_LABELS if role in eval_infos]
    tasks = list(next(iter(eval_infos.values()))["per_task"])
    width = 0.8 / len(roles)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 4))
    for k, role in enumerate(roles):
        per_task = eval_infos[role]["per_task"]
        rates = [per_task[t]["success_rate"] for t in tasks]
        lows = [max(0.0, r - per_task[t]["ci95"][0]) for r, t in zip(rates, tasks)]
        highs = [max(0.0, per_task[t]["ci95"][1] - r) for r, t in zip(rates, tasks)]
        xs = [i + (k - (len(roles) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, rates, width, yerr=[lows, highs], capsize=2, color=ROLE_COLORS[role], label=ROLE_LABELS[role])
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(metrics_csv: Path, rounds_csv: Path, path: Path) -> Path:
    """Plot the distillation loss terms over steps and the student's success per round."""
    steps = _read_csv(metrics_csv)
    rounds = _read_csv(rounds_csv)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    loss_keys = [key for key in (steps[0] if steps else {}) if key.startswith("loss/")]
    for key in loss_keys:
        points = [(float(row["step"]), float(row[key])) for row in steps if row.get(key) not in (None, "")]
        if points:
            left.plot(*zip(*points), label=key.removeprefix("loss/"))
    left.set_yscale("log")
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    if rounds:
        xs = [int(row["round"]) for row in rounds]
        ys = [float(row["success_rate"]) for row in rounds]
        right.plot(xs, ys, "o-")
        right.set_xticks(xs)
    right.set_xlabel("round (0 = teacher-driven data only)")
    right.set_ylabel("student success rate")
    right.set_ylim(-0.02, 1.05)
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _read_csv(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
