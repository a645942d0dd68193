"""The tabletop env: spaces, seeding, success rules, episode ends and resources."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import vla_distill.sim  # noqa: F401  registers the env ids
from vla_distill.sim import ENV_ID
from vla_distill.sim.tabletop.expert import ScriptedExpert
from vla_distill.sim.tabletop.instructions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, vocabulary
from vla_distill.sim.tabletop.tasks import ALL_TASKS, MAX_EPISODE_STEPS, is_success, resolve_tasks


def make(task="all", **kwargs):
    return gym.make(ENV_ID, task=task, **kwargs)


def run_expert(env, seed):
    env.reset(seed=seed)
    while True:
        _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        if terminated or truncated:
            return terminated, truncated, info


def test_spaces_and_observation_types():
    env = make("lift-red", wrist_camera=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == (64, 64, 3)
    assert obs["image"].dtype == np.uint8
    assert obs["wrist_image"].shape == (64, 64, 3)
    assert obs["state"].shape == (4,)
    assert obs["state"].dtype == np.float32
    assert isinstance(obs["instruction"], str)
    assert env.action_space.shape == (7,)
    assert env.action_space.dtype == np.float32
    assert env.action_space.low.min() == -1.0
    assert env.action_space.high.max() == 1.0
    assert info["task"] == "lift-red"
    env.close()


def test_image_size_is_configurable():
    env = make("reach-red", image_size=32)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3)
    env.close()


def test_same_seed_gives_identical_first_observation():
    first, second = make(), make()
    a, info_a = first.reset(seed=123)
    b, info_b = second.reset(seed=123)
    assert np.array_equal(a["image"], b["image"])
    assert np.array_equal(a["state"], b["state"])
    assert a["instruction"] == b["instruction"]
    assert info_a["task"] == info_b["task"]
    first.close()
    second.close()


def test_reset_without_seed_continues_the_rng():
    env = make()
    env.reset(seed=7)
    follow_a = env.reset()[0]
    env.reset(seed=7)
    follow_b = env.reset()[0]
    assert np.array_equal(follow_a["image"], follow_b["image"])
    other = env.reset(seed=7)[0]
    assert not np.array_equal(follow_a["image"], other["image"])
    env.close()


def test_different_seeds_move_the_objects():
    env = make("push-red")
    env.reset(seed=1)
    first = env.unwrapped.object_position("red")
    env.reset(seed=2)
    assert not np.allclose(first, env.unwrapped.object_position("red"))
    env.close()


def test_task_option_matches_task_env():
    general, specific = make("all"), make("push-blue")
    a, info_a = general.reset(seed=5, options={"task": "push-blue"})
    b, info_b = specific.reset(seed=5)
    assert info_a["task"] == info_b["task"] == "push-blue"
    assert np.array_equal(a["image"], b["image"])
    general.close()
    specific.close()


def test_success_rules_on_constructed_positions():
    obj = np.array([0.0, 0.0, 0.02])
    assert is_success("reach", np.array([0.0, 0.0, 0.045]), obj, None)  # 2.5 cm away
    assert not is_success("reach", np.array([0.0, 0.0, 0.055]), obj, None)  # 3.5 cm away
    zone = np.array([0.1, 0.1, 0.0])
    assert is_success("push", None, np.array([0.14, 0.06, 0.02]), zone)  # 4 cm from centre on both axes
    assert not is_success("push", None, np.array([0.16, 0.1, 0.02]), zone)  # 6 cm out along x
    assert not is_success("push", None, np.array([0.1, 0.1, 0.05]), zone)  # above the zone, not on it
    lifted = np.array([0.0, 0.0, 0.09])
    assert is_success("lift", lifted + [0, 0, 0.01], lifted, None)
    assert not is_success("lift", np.array([0.0, 0.0, 0.2]), lifted, None)  # thrown, not held
    assert not is_success("lift", np.array([0.0, 0.0, 0.07]), np.array([0.0, 0.0, 0.07]), None)  # too low


def test_success_rule_reads_simulator_state():
    env = make("reach-green")
    env.reset(seed=3)
    target = env.unwrapped.object_position("green")
    env.unwrapped.set_gripper_position(target + [0.0, 0.0, 0.02])
    _, reward, terminated, truncated, info = env.step(np.zeros(7, dtype=np.float32))
    assert info["is_success"]
    assert terminated
    assert not truncated
    assert reward == 1.0
    env.close()


def test_target_offsets_on_constructed_positions():
    env = make("push-red")
    env.reset(seed=4)
    inner = env.unwrapped
    inner.set_object_position("red", [0.05, 0.02, 0.02])
    inner.set_gripper_position([0.01, -0.03, 0.10])
    zone = inner.zone_position(inner.zone)
    expected = [0.04, 0.05, -0.08, zone[0] - 0.05, zone[1] - 0.02]
    np.testing.assert_allclose(inner.target_offsets(), expected, atol=1e-5)
    env.reset(seed=4, options={"task": "lift-blue"})
    assert np.isnan(inner.target_offsets()[3:]).all()
    env.close()


def test_idle_episode_is_truncated_not_terminated():
    env = make("reach-red")
    env.reset(seed=0)
    limit = MAX_EPISODE_STEPS["reach"]
    for step in range(1, limit + 1):
        _, reward, terminated, truncated, info = env.step(np.zeros(7, dtype=np.float32))
        assert not terminated
        assert reward == 0.0
        assert truncated == (step == limit)
    assert not info["is_success"]
    env.close()


@pytest.mark.parametrize("task", ALL_TASKS)
def test_expert_succeeds(task):
    env = make(task)
    for seed in (1000, 1001, 1002):
        terminated, truncated, info = run_expert(env, seed)
        assert info["is_success"], f"{task} seed {seed}"
        assert terminated, f"{task} seed {seed}"
        assert not truncated, f"{task} seed {seed}"
    env.close()


@pytest.mark.parametrize("task", ["reach-red", "push-green", "lift-blue"])
def test_expert_is_stateless(task):
    """A new expert with no history gives the same action as the one that drove the episode."""
    env = make(task).unwrapped
    env.reset(seed=1003)
    for step in range(40):
        executed, clean = env.expert_actions(noise_std=0.3)
        fresh = np.clip(ScriptedExpert().act(env), -1.0, 1.0).astype(np.float32)
        np.testing.assert_array_equal(fresh, clean, err_msg=f"step {step}")
        _, _, terminated, truncated, _ = env.step(executed)
        if terminated or truncated:
            break
    env.close()


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown task 'fly-red'"):
        make("fly-red")
    env = make("reach-red")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(7, np.nan, dtype=np.float32))
    env.close()


def test_instruction_sets():
    env = make("push-red", instruction_set="heldout")
    obs, _ = env.reset(seed=0)
    heldout = {t.format(object="red", zone=env.unwrapped.zone) for t in HELDOUT_TEMPLATES["push"]}
    train = {t.format(object="red", zone=env.unwrapped.zone) for t in TRAIN_TEMPLATES["push"]}
    assert obs["instruction"] in heldout
    assert obs["instruction"] not in train
    assert set(obs["instruction"].split()) <= set(vocabulary())
    env.close()


def test_resolve_tasks_expands_families():
    assert resolve_tasks("push") == ["push-red", "push-green", "push-blue"]
    assert resolve_tasks("all") == list(ALL_TASKS)
    assert resolve_tasks("lift-red,lift-red") == ["lift-red"]


def test_render_returns_video_frames():
    env = make("lift-red", render_mode="rgb_array", render_size=96)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3)
    assert frame.dtype == np.uint8
    env.close()


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


def test_creating_and_closing_envs_does_not_leak_descriptors():
    env = make("reach-red", render_mode="rgb_array")
    env.reset(seed=0)
    env.render()
    env.close()
    before = open_descriptors()
    for seed in range(20):
        env = make("reach-red", render_mode="rgb_array")
        env.reset(seed=seed)
        env.render()
        env.close()
    assert open_descriptors() <= before


def test_importing_mujoco_first_gives_a_clear_error():
    code = "import mujoco, gymnasium as gym, vla_distill.sim; env = gym.make('vla_distill/Tabletop-v0'); env.reset(seed=0)"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "import vla_distill.sim first or set MUJOCO_GL" in result.stderr
