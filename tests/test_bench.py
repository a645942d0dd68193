"""The latency benchmark: every documented field, on a tiny real student."""

import json

import numpy as np
import pytest
import torch

from vla_distill.benchmarking.flops import torch_flops
from vla_distill.benchmarking.latency import latency_stats
from vla_distill.cli.main import main
from vla_distill.policies import create_policy, save_policy

THREAD_KEYS = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "control_hz_p50"}
POLICY_KEYS = {"backend", "params", "size_bytes", "flops", "peak_rss_bytes", "cpu", "versions",
               "flop_bound_latency_ms", "measured_to_bound_ratio", "matmul_gflops_single_core"}


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("student")
    save_policy(create_policy("student", "tiny"), folder)
    return folder


def test_latency_stats_hand_values():
    stats = latency_stats([0.001, 0.002, 0.003, 0.004])  # seconds
    assert stats["latency_ms_p50"] == pytest.approx(2.5)
    assert stats["latency_ms_mean"] == pytest.approx(2.5)
    assert stats["control_hz_p50"] == pytest.approx(400.0)
    assert stats["latency_ms_p99"] == pytest.approx(3.97)  # linear interpolation: 3 + 0.97 * (4 - 3)


def test_torch_flops_counts_a_linear_layer():
    layer = torch.nn.Linear(10, 20)
    counted = torch_flops(lambda batch: layer(batch["x"]), {"x": torch.zeros(1, 10)})
    assert counted == 2 * 10 * 20


def test_bench_writes_every_field(tiny_student, tmp_path):
    out = tmp_path / "latency.json"
    code = main(["bench", "--policy", str(tiny_student), "--threads", "1,2", "--runs", "20", "--warmup", "2", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert POLICY_KEYS <= report.keys()
    assert set(report["threads"]) == {"1", "2"}
    for stats in report["threads"].values():
        assert THREAD_KEYS <= stats.keys()
        assert 0 < stats["latency_ms_p50"] <= stats["latency_ms_p99"]
    assert report["backend"] == "torch"
    assert report["params"] == sum(p.numel() for p in create_policy("student", "tiny").parameters())
    assert report["flops"] > 0
    assert report["peak_rss_bytes"] > 10 * 2**20
    assert np.isfinite(report["flop_bound_latency_ms"])


def test_bench_rejects_bad_threads(tiny_student, tmp_path):
    assert main(["bench", "--policy", str(tiny_student), "--threads", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert main(["bench", "--policy", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 2


def test_bench_rejects_corrupted_onnx(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00not an onnx model" * 50)
    assert main(["bench", "--policy", str(broken), "--runs", "2", "--out", str(tmp_path / "x.json")]) == 2
