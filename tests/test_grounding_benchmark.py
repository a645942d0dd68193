"""The instruction-grounding benchmark script on a tiny saved student."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from vla_distill.policies.io import create_policy, save_policy

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "instruction_grounding.py"


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_grounding_script_reports_fractions(tmp_path):
    torch.manual_seed(0)
    folder = save_policy(create_policy("student", "tiny").eval(), tmp_path / "student")
    result = run_script("--policy", str(folder), "--scenes", "2", "--seed", "7")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["seeds"] == [7, 8]
    assert report["colour_changes_xy_action"] in (0.0, 0.5, 1.0)
    assert 0.0 <= report["xy_sign_agreement"] <= 1.0


def test_grounding_script_rejects_bad_input(tmp_path):
    result = run_script("--scenes", "0")
    assert result.returncode == 2
    assert "--scenes must be at least 1" in result.stderr
    result = run_script("--policy", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "cannot load --policy" in result.stderr
