"""The main job end to end: distill, export, evaluate, benchmark and report.

Every stage writes its outputs under one folder and is skipped when they already exist, so
an interrupted quickstart continues where it stopped when run again with the same folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartPreset:
    """Sizes of one quickstart run."""

    demo_episodes: int
    """Expert demonstrations per task that seed distillation round 0."""
    distill_config: str
    """Distillation preset or JSON file passed to ``distill``."""
    rounds: int
    """On-policy distillation rounds after round 0."""
    eval_episodes: int
    """Evaluation episodes per task, the same for every policy."""
    bench_runs: int
    """Timed batch-1 calls per thread count."""
    bench_warmup: int
    """Untimed calls before timing."""
    videos: int
    """Student rollout videos per task family."""
    demo_noise: float = 0.2
    """Std of the Gaussian noise on the executed expert actions of the demonstrations."""
    driven_episodes: int = 0
    """Episodes per task driven by the teacher and labelled by the expert (0 for none). They add
    the states the teacher itself reaches, including its mistakes, to round 0."""
    driven_families: tuple[str, ...] = ("reach", "push", "lift")
    """Task families that get teacher-driven episodes."""
    rounds_on_driven_families: bool = False
    """Switch that limits the on-policy rounds to the tasks of ``driven_families``."""
    round_episodes: int | None = None
    """Student-driven episodes per task in each on-policy round. None keeps the distillation preset's."""
    ema_decay: float | None = None
    """Decay of the moving average of the student's weights. None keeps the distillation preset's."""
    driven_noise: float = 0.0
    """Std of the Gaussian noise on the executed actions of the teacher-driven episodes. It pushes
    the teacher off its own path, so round 0 also contains the expert's recoveries from there."""


PRESETS = {
    # Sized to finish within about 15 minutes on an idle 2-core machine, set-up included
    # (an estimate from stage timings measured under load; see benchmarks/RESULTS.md).
    "demo": QuickstartPreset(demo_episodes=10, distill_config="student-small", rounds=1, eval_episodes=5, bench_runs=100, bench_warmup=10, videos=1),
    # About 63 minutes on an idle 2-core machine (one run, benchmarks/RESULTS.md). Teacher-driven
    # episodes and on-policy rounds cover only push and lift, where the teacher and students
    # make mistakes. Both succeed in nearly every reach.
    "reference": QuickstartPreset(
        demo_episodes=600, distill_config="student-reference", rounds=8, eval_episodes=50, bench_runs=500, bench_warmup=50,
        videos=1, demo_noise=0.3, driven_episodes=300, driven_families=("push", "lift"), driven_noise=0.3,
        rounds_on_driven_families=True, round_episodes=150, ema_decay=0.999,
    ),
    "test": QuickstartPreset(demo_episodes=1, distill_config="distill-test", rounds=1, eval_episodes=1, bench_runs=5, bench_warmup=1, videos=1, driven_episodes=1),
}
# Rough share of the wall time of each stage, used only for the ETA in progress lines.
STAGE_WEIGHTS = {"demos": 0.08, "distill": 0.6, "export": 0.03, "eval": 0.19, "bench": 0.08, "report": 0.02}
ROLES = ("teacher", "student", "student_onnx", "student_int8")
# Dynamic INT8 of MatMul/Gemm only: on an AVX2 CPU without VNNI, static QDQ made a small
# student about 2x slower than float32 in ONNX Runtime 1.32, while dynamic stayed close.
INT8_MODE = "dynamic"
# Probability that the expert's action is executed on a teacher-driven step, so driven
# episodes also pass through the states the expert leads to.
DRIVEN_EXPERT_SHARE = 0.2
# Seed of the first teacher-driven episode, after the run's seed; far from the demonstration
# and evaluation seeds.
DRIVEN_SEED_OFFSET = 200_000
VIDEO_TASKS = ("reach-red", "push-green", "lift-blue")


@dataclass
class QuickstartRun:
    """Paths and settings of one run."""

    out: Path
    teacher: str
    preset_name: str
    seed: int
    num_envs: int
    tasks: tuple[str, ...]
    command: str = "vla-distill quickstart"

    @property
    def preset(self) -> QuickstartPreset:
        return PRESETS[self.preset_name]

    def policy_path(self, role: str) -> str:
        return {
            "teacher": self.teacher,
            "student": str(self.out / "student"),
            "student_onnx": str(self.out / "student.onnx"),
            "student_int8": str(self.out / "student.int8.onnx"),
        }[role]


class StageClock:
    """Announce each stage with elapsed time and an ETA from the stage weights.

    The ETA extrapolates from the stages that did work in this process. A stage whose outputs
    a previous run left behind takes no time, so it counts as finished but not as a sample of
    the rate.
    """

    def __init__(self, report: Callable[[str], None]):
        self.start = time.perf_counter()
        self.done_weight = 0.0
        self.worked_weight = 0.0
        self.report = report

    def begin(self, index: int, name: str) -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.worked_weight * (1 - self.done_weight) if self.worked_weight > 0 else None
        eta_text = f", ETA {eta / 60:.1f} min" if eta is not None else ""
        self.report(f"[{index}/{len(STAGE_WEIGHTS)}] {name} (elapsed {elapsed / 60:.1f} min{eta_text})")

    def end(self, name: str, skipped: bool = False) -> None:
        self.done_weight += STAGE_WEIGHTS[name]
        if not skipped:
            self.worked_weight += STAGE_WEIGHTS[name]

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def stage_demos(run: QuickstartRun) -> list[Path]:
    """Collect the expert-labelled episodes of distillation round 0 (resumable): expert
    demonstrations, then the preset's teacher-driven episodes. Returns the files in order."""
    preset = run.preset
    if stage_finished(run.out, "distill") and stage_finished(run.out, "export"):
        # Nothing left reads the episodes, so a rerun neither collects nor loads the teacher.
        names = ["demos.h5", "driven.h5"] if driven_tasks(run) else ["demos.h5"]
        return [run.out / name for name in names]
    paths = [collect_episodes(run, "demos.h5", run.tasks, preset.demo_episodes, run.seed, ["--noise", str(preset.demo_noise)])]
    tasks = driven_tasks(run)
    if tasks:
        driver = ["--driver", run.teacher, "--expert-share", str(DRIVEN_EXPERT_SHARE), "--noise", str(preset.driven_noise)]
        seed = run.seed + DRIVEN_SEED_OFFSET
        paths.append(collect_episodes(run, "driven.h5", tasks, preset.driven_episodes, seed, driver))
    return paths


def driven_tasks(run: QuickstartRun) -> list[str]:
    """Return the run's tasks that get teacher-driven episodes, none when the preset has none."""
    from vla_distill.sim.tabletop.tasks import parse_task  # noqa: PLC0415

    if run.preset.driven_episodes == 0:
        return []
    return [task for task in run.tasks if parse_task(task).family in run.preset.driven_families]


def collect_episodes(run: QuickstartRun, name: str, tasks, episodes: int, seed: int, options: list[str]) -> Path:
    """Run ``vla-distill collect`` for ``tasks`` into ``run.out / name``, resuming a partial file."""
    from vla_distill.cli.main import main as cli  # noqa: PLC0415

    path = run.out / name
    args = ["collect", "--suite", "tabletop", "--tasks", ",".join(tasks), "--episodes", str(episodes),
            "--seed", str(seed), "--num-envs", str(run.num_envs), "--out", str(path), *options]
    if path.exists():
        args.append("--resume")
    if cli(args) != 0:
        raise RuntimeError(f"collecting {name} failed; see the log above")
    return path


def distill_config(run: QuickstartRun):
    """Return the DistillConfig of the run: the preset's distillation config with its rounds,
    on-policy episodes, rollout tasks and weight average, and the run's seed, workers and tasks."""
    from vla_distill.distill import load_distill_config  # noqa: PLC0415

    preset = run.preset
    rollout_tasks = driven_tasks(run) if preset.rounds_on_driven_families else []
    return load_distill_config(
        preset.distill_config, rounds=preset.rounds, seed=run.seed, num_envs=run.num_envs, tasks=",".join(run.tasks),
        episodes_per_task=preset.round_episodes, rollout_tasks=",".join(rollout_tasks) or None,
        ema_decay=preset.ema_decay,
    )


def stage_distill(run: QuickstartRun, demos: list[Path]) -> None:
    """Distill the teacher into the student under run.out (resumable)."""
    from vla_distill.distill import distill  # noqa: PLC0415

    if (run.out / "student" / "model.safetensors").is_file():
        logger.info("student already distilled in %s; skipping", run.out / "student")
        return
    config = distill_config(run)
    resume = any((run.out / "checkpoints").glob("*.pt"))
    if not resume:
        # Labels written before the first checkpoint cannot be resumed from; they are redone.
        for stale in run.out.glob("labels-*.h5"):
            stale.unlink()
    distill(run.teacher, config, run.out, resume=resume, demos=demos, command=run.command, progress=sys.stderr.isatty())


def stage_export(run: QuickstartRun, demos: list[Path]) -> None:
    """Export the student to float32 and INT8 ONNX, each with its own export report."""
    from vla_distill.export import ExportConfig, export_policy  # noqa: PLC0415
    from vla_distill.export.frames import frames_from_demos  # noqa: PLC0415

    # The demonstration frames serve as parity (and calibration) frames, so no new rollouts run.
    frames = frames_from_demos(demos[0])
    for role, quantize in (("student_onnx", "none"), ("student_int8", INT8_MODE)):
        out = Path(run.policy_path(role))
        if out.is_file():
            continue
        report = out.with_name(out.name.removesuffix(".onnx") + ".export_report.json")
        config = ExportConfig(policy=run.policy_path("student"), out=str(out), quantize=quantize, seed=run.seed, report=str(report))
        export_policy(config, frames=frames)


def stage_eval(run: QuickstartRun) -> dict[str, dict]:
    """Evaluate every policy on the same seeded episodes; returns eval_info per role."""
    from vla_distill.evaluation import evaluate, summarize, write_eval_info  # noqa: PLC0415
    from vla_distill.policy_loading import load_rollout_policy  # noqa: PLC0415
    from vla_distill.video import write_video  # noqa: PLC0415

    infos = {}
    for role in ROLES:
        folder = run.out / "eval" / role
        if (folder / "eval_info.json").is_file():
            infos[role] = read_json(folder / "eval_info.json")
            continue
        policy = load_rollout_policy(run.policy_path(role), num_threads=1)
        videos = run.preset.videos if role == "student" else 0
        records = evaluate(policy, run.tasks, run.preset.eval_episodes, run.seed + 1000, num_envs=run.num_envs, video_episodes=videos)
        info = summarize(role, "tabletop", run.seed + 1000, run.preset.eval_episodes, records)
        write_eval_info(info, folder)
        for record in records:
            if record.frames and record.task in VIDEO_TASKS:
                write_video(run.out / "videos" / f"student_{record.task}_seed{record.seed}.mp4", record.frames)
        infos[role] = info
        logger.info("%s: success rate %.3f [%.3f, %.3f]", role, info["success_rate"], *info["ci95"])
    return infos


def stage_bench(run: QuickstartRun) -> dict[str, dict]:
    """Benchmark the latency of every policy at 1 and 2 threads; returns latency reports per role."""
    from vla_distill.benchmarking.observations import suite_observations  # noqa: PLC0415
    from vla_distill.benchmarking.report import benchmark_policy  # noqa: PLC0415

    observations = None
    reports = {}
    for role in ROLES:
        path = run.out / "latency" / f"{role}.json"
        if path.is_file():
            reports[role] = read_json(path)
            continue
        observations = observations or suite_observations()
        reports[role] = benchmark_policy(run.policy_path(role), observations, [1, 2], run.preset.bench_runs, run.preset.bench_warmup)
        write_json(path, reports[role])
    return reports


def stage_report(run: QuickstartRun, infos: dict, latency: dict, wall_time_s: float, command: str) -> dict:
    """Write summary.json, the plots and report.md."""
    from vla_distill.benchmarking.latency import LATENCY_METHOD  # noqa: PLC0415
    from vla_distill.reporting.markdown import write_report  # noqa: PLC0415
    from vla_distill.reporting.plots import plot_per_task, plot_success_tradeoff, plot_training_curves  # noqa: PLC0415
    from vla_distill.reporting.summary import build_summary  # noqa: PLC0415

    results = {role: {"eval": infos[role], "latency": latency[role]} for role in ROLES}
    summary = build_summary(results, run.preset.eval_episodes, run.seed + 1000)
    write_json(run.out / "summary.json", summary)
    plot_success_tradeoff(summary, "latency_ms_p50", "p50 latency at 1 thread (ms, log scale)", run.out / "success_vs_latency.png")
    plot_success_tradeoff(summary, "size_bytes", "size on disk (bytes, log scale)", run.out / "success_vs_size.png")
    plot_per_task(infos, run.out / "per_task_success.png")
    plot_training_curves(run.out / "metrics.csv", run.out / "rounds.csv", run.out / "training_curves.png")
    meta = {
        "suite": "tabletop",
        "command": command,
        "preset": run.preset_name,
        "preset_values": asdict(run.preset),
        "seed": run.seed,
        "wall_time_s": wall_time_s,
        "cpu": latency["student"]["cpu"],
        "versions": latency["student"]["versions"],
        "latency_method": LATENCY_METHOD,
        "videos": sorted(str(p.relative_to(run.out)) for p in (run.out / "videos").glob("*.mp4")),
    }
    write_json(run.out / "run_info.json", meta)
    write_report(run.out, summary, infos, meta)
    return summary


STAGES = (
    ("demos", "collect expert-labelled episodes"),
    ("distill", "distill the teacher into the student"),
    ("export", "export float32 and INT8 ONNX"),
    ("eval", "evaluate teacher, student, ONNX and INT8 on the same episodes"),
    ("bench", "benchmark batch-1 latency"),
)
STAGE_OUTPUTS = {
    "demos": ("demos.h5",),
    "distill": ("student/model.safetensors",),
    "export": ("student.onnx", "student.int8.onnx"),
    "eval": tuple(f"eval/{role}/eval_info.json" for role in ROLES),
    "bench": tuple(f"latency/{role}.json" for role in ROLES),
}


def stage_finished(out: Path, name: str) -> bool:
    return all((out / relative).is_file() for relative in STAGE_OUTPUTS[name])


def record_stage_time(out: Path, name: str, seconds: float, was_finished: bool) -> dict:
    """Keep the wall time of each stage that did work, across reruns of the same folder."""
    path = out / "stage_times.json"
    times = read_json(path) if path.is_file() else {}
    if not was_finished or name not in times:
        times[name] = seconds
    write_json(path, times)
    return times


def run_quickstart(run: QuickstartRun, report: Callable[[str], None] = logger.info) -> dict:
    """Run every stage in order and return summary.json's content."""
    clock = StageClock(report)
    run.out.mkdir(parents=True, exist_ok=True)
    outputs: dict = {}
    actions = {
        "demos": lambda: outputs.update(demos=stage_demos(run)),
        "distill": lambda: stage_distill(run, outputs["demos"]),
        "export": lambda: stage_export(run, outputs["demos"]),
        "eval": lambda: outputs.update(infos=stage_eval(run)),
        "bench": lambda: outputs.update(latency=stage_bench(run)),
    }
    for index, (name, title) in enumerate(STAGES, start=1):
        clock.begin(index, title)
        was_finished = stage_finished(run.out, name)
        started = time.perf_counter()
        actions[name]()
        times = record_stage_time(run.out, name, time.perf_counter() - started, was_finished)
        clock.end(name, skipped=was_finished)
    clock.begin(len(STAGES) + 1, "write summary, plots and report")
    summary = stage_report(run, outputs["infos"], outputs["latency"], sum(times.values()), run.command)
    clock.end("report")
    report(f"done in {clock.elapsed_s / 60:.1f} min: {run.out / 'report.md'}")
    return summary


def remove_outputs(out: Path) -> None:
    """Delete a previous run's folder (for --fresh)."""
    if out.exists():
        shutil.rmtree(out)
