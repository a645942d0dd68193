"""summary.json ratios, plots and report.md from hand-written results."""

import pytest

from vla_distill.reporting.markdown import write_report
from vla_distill.reporting.plots import plot_per_task, plot_success_tradeoff, plot_training_curves
from vla_distill.reporting.summary import build_summary

PNG_SIGNATURE = b"\x89PNG"


def result(params, size, rate, p50, backend="torch"):
    per_task = {"reach-red": {"n_episodes": 4, "success_rate": rate, "ci95": [max(0.0, rate - 0.2), min(1.0, rate + 0.1)]}}
    return {
        "eval": {"success_rate": rate, "ci95": [max(0.0, rate - 0.2), min(1.0, rate + 0.1)], "per_task": per_task},
        "latency": {"params": params, "size_bytes": size, "backend": backend, "flops": 10 * params, "threads": {"1": {"latency_ms_p50": p50}}},
    }


@pytest.fixture
def results():
    return {
        "teacher": result(4_000_000, 8_000_000, 0.9, 20.0),
        "student": result(80_000, 320_000, 0.9, 2.0),
        "student_onnx": result(80_000, 330_000, 0.9, 0.4, "onnxruntime"),
        "student_int8": result(80_000, 100_000, 0.8, 0.3, "onnxruntime"),
    }


def test_summary_ratios(results):
    summary = build_summary(results, n_episodes=4, seed=1000)
    assert summary["params_ratio"] == pytest.approx(50.0)  # 4,000,000 / 80,000
    assert summary["speedup_p50"] == pytest.approx(50.0)  # 20 ms / 0.4 ms
    assert summary["success_retention"] == pytest.approx(1.0)  # 0.9 / 0.9
    assert summary["student_int8"]["size_bytes"] == 100_000
    assert summary["n_episodes_per_task"] == 4


def test_summary_needs_every_policy(results):
    del results["student_int8"]
    with pytest.raises(ValueError, match="student_int8"):
        build_summary(results, n_episodes=4, seed=1000)


def test_plots_and_report_are_written(results, tmp_path):
    summary = build_summary(results, n_episodes=4, seed=1000)
    infos = {role: value["eval"] for role, value in results.items()}
    (tmp_path / "metrics.csv").write_text("step,loss/kd,loss/total,lr\n10,2.0,2.5,0.001\n20,1.0,1.2,0.001\n")
    (tmp_path / "rounds.csv").write_text("round,success_rate\n0,0.5\n1,0.8\n")
    paths = [
        plot_success_tradeoff(summary, "latency_ms_p50", "latency", tmp_path / "a.png"),
        plot_per_task(infos, tmp_path / "b.png"),
        plot_training_curves(tmp_path / "metrics.csv", tmp_path / "rounds.csv", tmp_path / "c.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:4] == PNG_SIGNATURE
    meta = {"suite": "tabletop", "command": "vla-distill quickstart --out x", "preset": "test", "seed": 0, "wall_time_s": 12.0,
            "cpu": {"model": "cpu", "logical_cores": 2, "flags": ["avx2"]}, "versions": {"torch": "2.13"}, "latency_method": "timed", "videos": []}
    text = write_report(tmp_path, summary, infos, meta).read_text()
    assert "| teacher (torch) | torch | 4,000,000 |" in text
    assert "Parameters teacher/student: **50.0x**" in text
    assert "vla-distill quickstart --out x" in text
    assert "episodes per task: 4" in text
