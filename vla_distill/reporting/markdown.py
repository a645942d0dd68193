"""report.md of a quickstart run."""

from __future__ import annotations

from pathlib import Path

from vla_distill.reporting.plots import ROLE_LABELS


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.2f} MiB"


def headline_table(summary: dict) -> list[str]:
    lines = [
        "| policy | backend | params | size | success rate | 95% interval | p50 latency, 1 thread |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for role, label in ROLE_LABELS.items():
        e = summary[role]
        lines.append(
            f"| {label} | {e['backend']} | {e['params']:,} | {_mib(e['size_bytes'])} | {e['success_rate']:.3f} "
            f"| [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] | {e['latency_ms_p50']:.3f} ms |"
        )
    return lines


def per_task_table(eval_infos: dict[str, dict]) -> list[str]:
    roles = [role for role in ROLE_LABELS if role in eval_infos]
    tasks = list(eval_infos[roles[0]]["per_task"])
    lines = ["| task | " + " | ".join(ROLE_LABELS[r] for r in roles) + " |", "|---|" + "---:|" * len(roles)]
    for task in tasks:
        cells = [f"{eval_infos[r]['per_task'][task]['success_rate']:.2f}" for r in roles]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def write_report(out_dir: Path, summary: dict, eval_infos: dict[str, dict], meta: dict) -> Path:
    """Write report.md from the summary, the eval results and the run's metadata."""
    ratios = (
        f"Parameters teacher/student: **{summary['params_ratio']:.1f}x**. "
        f"Speed-up of the student ONNX model over the teacher (p50, 1 thread): **{summary['speedup_p50']:.1f}x**. "
        f"Success retention student/teacher: **{summary['success_retention']:.3f}**."
        if summary["success_retention"] is not None
        else "The teacher solved no episode, so success retention is undefined."
    )
    lines = [
        "# vla-distill report",
        "",
        f"Suite `{meta['suite']}`, episodes per task: {summary['n_episodes_per_task']}. Episode i of every task "
        f"uses seed {summary['seed']} + i, and every policy ran the same episodes.",
        "",
        *headline_table(summary),
        "",
        ratios,
        "",
        "![success versus latency](success_vs_latency.png) ![success versus size](success_vs_size.png)",
        "",
        "## Per-task success",
        "",
        *per_task_table(eval_infos),
        "",
        "![per-task success](per_task_success.png)",
        "",
        "## Distillation",
        "",
        "![training curves](training_curves.png)",
        "",
        "## How this was produced",
        "",
        f"- command: `{meta['command']}`",
        f"- preset: `{meta['preset']}`, seed {meta['seed']}; wall time {meta['wall_time_s']:.0f} s "
        "(sum of the stages, set-up excluded)",
        f"- machine: {meta['cpu']['model']} ({meta['cpu']['logical_cores']} logical cores, flags {', '.join(meta['cpu']['flags'])})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        "- latency: " + meta["latency_method"],
        "- videos: " + (", ".join(f"[{Path(v).name}]({v})" for v in meta.get("videos", [])) or "none"),
        "",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
