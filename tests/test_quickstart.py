"""The quickstart pipeline end to end with a tiny teacher and the test preset."""

import json

import h5py
import pytest
import torch

from vla_distill.cli.main import main
from vla_distill.policies import create_policy, save_policy

ROLES = ("teacher", "student", "student_onnx", "student_int8")
SUMMARY_KEYS = {"params", "size_bytes", "success_rate", "ci95", "latency_ms_p50"}


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    torch.manual_seed(0)
    teacher = tmp_path_factory.mktemp("teacher")
    save_policy(create_policy("teacher", "tiny"), teacher)
    out = tmp_path_factory.mktemp("quickstart")
    args = ["quickstart", "--out", str(out), "--teacher", str(teacher), "--preset", "test",
            "--tasks", "reach-red,lift-blue", "--num-envs", "1"]
    assert main(args) == 0
    return out


def test_quickstart_writes_summary(quickstart_dir):
    summary = json.loads((quickstart_dir / "summary.json").read_text())
    for role in ROLES:
        assert SUMMARY_KEYS <= summary[role].keys(), role
    assert summary["params_ratio"] == pytest.approx(summary["teacher"]["params"] / summary["student"]["params"])
    assert summary["speedup_p50"] > 0
    assert summary["n_episodes_per_task"] == 1


def test_quickstart_writes_artifacts(quickstart_dir):
    expected = [
        "report.md", "summary.json", "run_info.json", "demos.h5", "driven.h5", "rounds.csv", "metrics.csv",
        "student/model.safetensors", "student.onnx", "student.int8.onnx",
        "student.export_report.json", "student.int8.export_report.json",
        "success_vs_latency.png", "success_vs_size.png", "per_task_success.png", "training_curves.png",
    ]
    for name in expected:
        assert (quickstart_dir / name).is_file(), name
    for role in ROLES:
        assert (quickstart_dir / "eval" / role / "eval_info.json").is_file(), role
        assert (quickstart_dir / "latency" / f"{role}.json").is_file(), role
    assert list((quickstart_dir / "videos").glob("student_*.mp4"))


def test_quickstart_round0_joins_demonstrations_and_teacher_driven_episodes(quickstart_dir):
    source = json.loads((quickstart_dir / "source.json").read_text())
    assert [item["path"].rsplit("/", 1)[-1] for item in source["data"]] == ["demos.h5", "driven.h5"]
    with h5py.File(quickstart_dir / "driven.h5", "r") as f:
        config = json.loads(f.attrs["config"])
    assert config["expert_share"] == pytest.approx(0.2)
    assert config["driver"] is not None


def test_quickstart_policies_see_the_same_episodes(quickstart_dir):
    episodes = {}
    for role in ROLES:
        info = json.loads((quickstart_dir / "eval" / role / "eval_info.json").read_text())
        episodes[role] = [(e["task"], e["seed"]) for e in info["episodes"]]
    assert episodes["teacher"] == episodes["student"] == episodes["student_onnx"] == episodes["student_int8"]


def test_quickstart_rerun_skips_finished_stages(quickstart_dir, capsys):
    before = (quickstart_dir / "summary.json").stat().st_mtime_ns
    student = (quickstart_dir / "student.onnx").stat().st_mtime_ns
    assert main(["quickstart", "--out", str(quickstart_dir), "--teacher", "unused-because-finished", "--preset", "test",
                 "--tasks", "reach-red,lift-blue", "--num-envs", "1"]) == 0
    assert (quickstart_dir / "student.onnx").stat().st_mtime_ns == student
    assert (quickstart_dir / "summary.json").stat().st_mtime_ns >= before


def test_reference_rounds_skip_reach(tmp_path):
    from vla_distill.quickstart import QuickstartRun, distill_config  # noqa: PLC0415
    from vla_distill.sim.tabletop.tasks import ALL_TASKS  # noqa: PLC0415

    run = QuickstartRun(tmp_path, "reference", "reference", seed=0, num_envs=2, tasks=tuple(ALL_TASKS))
    config = distill_config(run)
    assert config.task_names() == list(ALL_TASKS)
    assert {task.split("-")[0] for task in config.rollout_task_names()} == {"push", "lift"}
    assert config.episodes_per_task == run.preset.round_episodes
    reach_only = QuickstartRun(tmp_path, "reference", "reference", seed=0, num_envs=2, tasks=("reach-red",))
    assert distill_config(reach_only).rollout_task_names() == ["reach-red"]


def test_stage_clock_eta_ignores_skipped_stages(monkeypatch):
    from vla_distill import quickstart

    now = [0.0]
    monkeypatch.setattr(quickstart.time, "perf_counter", lambda: now[0])
    lines = []
    clock = quickstart.StageClock(lines.append)
    clock.end("demos", skipped=True)  # left by a previous run: no time spent
    now[0] = 60.0
    clock.end("distill")
    clock.begin(3, "export")
    # 60 s for the distill weight, so the remaining weight takes 60 s * remaining / distill weight.
    weights = quickstart.STAGE_WEIGHTS
    remaining = 1 - weights["demos"] - weights["distill"]
    expected_min = 60.0 / weights["distill"] * remaining / 60
    assert lines[-1] == f"[3/6] export (elapsed 1.0 min, ETA {expected_min:.1f} min)"


def test_driven_episodes_only_for_the_preset_families():
    from vla_distill.quickstart import QuickstartRun, driven_tasks

    tasks = ("reach-red", "push-green", "lift-blue")
    reference = QuickstartRun(out=None, teacher="reference", preset_name="reference", seed=0, num_envs=1, tasks=tasks)
    assert driven_tasks(reference) == ["push-green", "lift-blue"]
    demo = QuickstartRun(out=None, teacher="reference", preset_name="demo", seed=0, num_envs=1, tasks=tasks)
    assert driven_tasks(demo) == []
