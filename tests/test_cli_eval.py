"""The command line: help, user errors, eval output and identical episodes across policies."""

import json
import subprocess
import sys

import numpy as np

from vla_distill.cli.main import main
from vla_distill.evaluation import wilson_interval
from vla_distill.rollout import ExpertPolicy, run_episodes

EVAL_KEYS = {"policy", "suite", "n_episodes", "seed", "success_rate", "pc_success", "ci95", "per_task", "episodes"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vla_distill.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("collect", "eval", "render"):
        assert name in result.stdout


def test_user_errors_print_one_line_and_exit_2(tmp_path):
    cases = [
        ("eval", "--policy", "missing_dir", "--out", str(tmp_path)),
        ("eval", "--policy", "expert", "--tasks", "fly-red", "--episodes", "1", "--out", str(tmp_path)),
        ("eval", "--policy", "expert", "--episodes", "0", "--out", str(tmp_path)),
        ("eval", "--policy", "expert", "--suite", "kitchen", "--out", str(tmp_path)),
        ("render", "--task", "lift-red", "--out", str(tmp_path / "video.avi")),
        ("render", "--task", "lift-red", "--fps", "0", "--out", str(tmp_path / "video.gif")),
        ("eval", "--policy", "expert", "--num-envs", "0", "--episodes", "1", "--out", str(tmp_path)),
        ("eval", "--policy", "expert", "--threads", "0", "--episodes", "1", "--out", str(tmp_path)),
        ("collect", "--episodes", "1", "--image-size", "0", "--out", str(tmp_path / "bad.h5")),
        ("collect", "--episodes", "1", "--noise", "-1", "--out", str(tmp_path / "bad.h5")),
    ]
    for case in cases:
        result = run_cli(*case)
        assert result.returncode == 2, case
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "error:" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_wilson_interval_hand_values():
    # 8 of 10: p = 0.8, z = 1.96; centre = (0.8 + 0.19208) / 1.38415 = 0.71674,
    # half width = 1.96 * sqrt(0.016 + 0.0096040) / 1.38415 = 0.22658.
    low, high = wilson_interval(8, 10)
    assert abs(low - 0.49016) < 1e-4
    assert abs(high - 0.94332) < 1e-4
    assert wilson_interval(0, 5)[0] == 0.0
    assert wilson_interval(0, 50)[0] == 0.0  # not a rounding residue above the 0/50 rate
    assert wilson_interval(5, 5)[1] == 1.0


def test_eval_writes_eval_info(tmp_path):
    code = main(["eval", "--policy", "expert", "--tasks", "all", "--episodes", "2", "--seed", "1000",
                 "--out", str(tmp_path), "--videos", "1", "--tasks", "reach,lift-red"])
    assert code == 0
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert EVAL_KEYS <= info.keys()
    assert info["n_episodes"] == 2
    assert info["seed"] == 1000
    assert set(info["per_task"]) == {"reach-red", "reach-green", "reach-blue", "lift-red"}
    assert info["success_rate"] == 1.0
    assert info["pc_success"] == 100.0
    assert [e["seed"] for e in info["episodes"] if e["task"] == "lift-red"] == [1000, 1001]
    assert 0.0 <= info["ci95"][0] <= info["success_rate"] <= info["ci95"][1] <= 1.0
    assert (tmp_path / "videos" / "lift-red_seed1000.mp4").stat().st_size > 0


def test_render_writes_gif(tmp_path):
    assert main(["render", "--task", "push-green", "--seed", "2", "--size", "64", "--out", str(tmp_path / "v.gif")]) == 0
    assert (tmp_path / "v.gif").read_bytes()[:3] == b"GIF"


def test_same_seeds_give_same_episodes_for_two_policies():
    episodes = [("push-red", 1000), ("lift-green", 1001)]
    clean = run_episodes(ExpertPolicy(0.0), episodes, record_steps=True)
    noisy = run_episodes(ExpertPolicy(0.3), episodes, record_steps=True)
    for a, b in zip(clean, noisy):
        assert (a.task, a.seed, a.instruction) == (b.task, b.seed, b.instruction)
        assert np.array_equal(a.images[0], b.images[0])
        # Recorded labels are the clean expert actions, so the first ones agree; the noisy
        # executed actions make the following observations differ.
        assert np.array_equal(a.actions[0], b.actions[0])
        assert not np.array_equal(a.images[2], b.images[2])


def test_worker_processes_give_the_same_episodes():
    episodes = [(task, seed) for task in ("reach-blue", "push-green") for seed in (3, 4, 5)]
    serial = run_episodes(ExpertPolicy(), episodes, num_envs=1, record_steps=True)
    parallel = run_episodes(ExpertPolicy(), episodes, num_envs=2, record_steps=True)
    for a, b in zip(serial, parallel):
        assert (a.task, a.seed, a.success, a.steps) == (b.task, b.seed, b.success, b.steps)
        assert np.array_equal(np.stack(a.images), np.stack(b.images))


def test_worker_processes_with_mixed_first_tasks():
    episodes = [("reach-red", 0), ("lift-blue", 0), ("push-green", 1)]
    records = run_episodes(ExpertPolicy(), episodes, num_envs=2)
    assert [(r.task, r.seed) for r in records] == episodes
    assert all(r.success for r in records)
