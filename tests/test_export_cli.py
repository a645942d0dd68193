"""The ``vla-distill export`` command, run in-process through the CLI entry point."""

import json

import torch

import vla_distill.export.exporter
from vla_distill.cli.main import main
from vla_distill.data.demos import load_demos
from vla_distill.export import OnnxPolicy, ParityResult
from vla_distill.export.frames import frames_from_rollouts
from vla_distill.policies.io import checkpoint_hash, create_policy, save_policy


def test_export_static_with_calibration_file(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = save_policy(create_policy("student", "tiny"), tmp_path / "checkpoint")
    demos = tmp_path / "demos.h5"
    assert main(["collect", "--tasks", "lift-red", "--episodes", "1", "--seed", "0", "--out", str(demos)]) == 0
    capsys.readouterr()

    out = tmp_path / "onnx" / "student_int8.onnx"
    code = main([
        "export", "--policy", str(checkpoint), "--out", str(out), "--quantize", "static",
        "--calibration", str(demos), "--parity-frames", "40", "--seed", "3",
    ])
    assert code == 0

    report = json.loads((out.parent / "export_report.json").read_text())
    assert report["quantization"] == "static"
    assert report["parity_passed"] is True
    assert report["parity_frames"] == 40
    assert report["source_hash"] == checkpoint_hash(checkpoint)
    assert report["size_bytes"] == out.stat().st_size
    assert report["config"]["seed"] == 3
    assert report["config"]["calibration"] == str(demos)
    assert report["int8"]["calibration_source"] == str(demos)
    assert report["int8"]["calibration_frames"] == len(load_demos(demos).images)
    assert report["int8"]["size_bytes"] < report["int8"]["float32_size_bytes"]

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["model"] == str(out)
    assert printed["quantization"] == "static"
    assert OnnxPolicy(out).metadata.quantization == "static"


def test_export_user_errors_exit_2(tmp_path, capsys):
    cases = [
        (["--policy", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx")], "policy checkpoint not found"),
        (["--policy", "x", "--out", str(tmp_path / "m.onnx"), "--calibration", "d.h5"], "only by static quantization"),
        (["--policy", "x", "--out", str(tmp_path / "m.onnx"), "--opset", "9"], "opset must be"),
    ]
    for arguments, message in cases:
        assert main(["export", *arguments]) == 2, arguments
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("vla-distill export: error:")
        assert message in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_export_parity_failure_exits_1_with_margin(tmp_path, capsys, monkeypatch):
    # The comparison is replaced by a result 5e-4 above the logit bound, so the command must
    # fail, say by how much, and still write the report.
    def failing_comparison(reference, candidate, frames, batch_sizes=(1, 4)):
        return ParityResult(max_abs_diff=6e-4, action_agreement=1.0, batch_sizes=(1, 4), frames=len(frames))

    monkeypatch.setattr(vla_distill.export.exporter, "compare_runners", failing_comparison)
    monkeypatch.setattr(
        vla_distill.export.exporter, "load_frames", lambda config, image_size: frames_from_rollouts("reach-red", 1, 0, image_size)
    )
    torch.manual_seed(0)
    checkpoint = save_policy(create_policy("student", "tiny"), tmp_path / "checkpoint")
    out = tmp_path / "student.onnx"

    assert main(["export", "--policy", str(checkpoint), "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "parity check failed" in lines[-1]
    assert "max abs logit difference 0.0006 exceeds 0.0001 by 0.0005" in lines[-1]
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["parity_passed"] is False
    assert report["max_abs_diff"] == 6e-4
