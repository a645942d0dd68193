"""Demonstration files: HDF5 round trip, interrupted collection and --resume."""

import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from vla_distill.cli.main import main
from vla_distill.data.demos import Episode, EpisodeWriter, load_demos

ATTRS = {"env_id": "vla_distill/Tabletop-v0", "config": {"episodes": 2}}


def fake_episode(task, seed, length, rng):
    return Episode(
        task=task,
        instruction=f"lift the {task.split('-')[1]} block",
        seed=seed,
        success=bool(seed % 2),
        images=rng.integers(0, 255, size=(length, 16, 16, 3), dtype=np.uint8),
        states=rng.normal(size=(length, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
    )


def test_hdf5_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [fake_episode("lift-red", 3, 5, rng), fake_episode("lift-blue", 4, 7, rng)]
    with EpisodeWriter(tmp_path / "d.h5", 16, 4, ATTRS, resume=False) as writer:
        for episode in episodes:
            writer.append(episode)
    demos = load_demos(tmp_path / "d.h5")
    assert demos.n_episodes == 2
    assert np.array_equal(demos.images, np.concatenate([e.images for e in episodes]))
    assert np.array_equal(demos.actions, np.concatenate([e.actions for e in episodes]))
    assert demos.episode_task == ["lift-red", "lift-blue"]
    assert demos.episode_instruction[1] == "lift the blue block"
    assert demos.episode_start.tolist() == [0, 5]
    assert demos.episode_length.tolist() == [5, 7]
    assert demos.episode_index.tolist() == [0] * 5 + [1] * 7
    assert demos.episode_success.tolist() == [True, False]
    assert demos.attrs["env_id"] == ATTRS["env_id"]
    assert json.loads(demos.attrs["config"]) == ATTRS["config"]
    assert np.isnan(demos.target_offsets).all()  # these episodes were given no offsets


def test_file_without_target_offsets_loads(tmp_path):
    rng = np.random.default_rng(0)
    with EpisodeWriter(tmp_path / "d.h5", 16, 4, ATTRS, resume=False) as writer:
        writer.append(fake_episode("lift-red", 3, 5, rng))
    with h5py.File(tmp_path / "d.h5", "a") as f:
        del f["target_offsets"]  # the layout of files written before the array existed
    with EpisodeWriter(tmp_path / "d.h5", 16, 4, ATTRS, resume=True) as writer:
        writer.append(fake_episode("lift-red", 4, 6, rng))
    demos = load_demos(tmp_path / "d.h5")
    assert demos.target_offsets is None
    assert len(demos.actions) == 11


def test_uncommitted_rows_ignored_then_overwritten(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.h5"
    with EpisodeWriter(path, 16, 4, ATTRS, resume=False) as writer:
        writer.append(fake_episode("reach-red", 0, 4, rng))
    with h5py.File(path, "a") as f:  # what a writer killed halfway through an episode leaves
        f["actions"].resize(9, axis=0)
        f["episode_task"].resize(2, axis=0)
    assert load_demos(path).actions.shape == (4, 7)
    with EpisodeWriter(path, 16, 4, ATTRS, resume=True) as writer:
        writer.append(fake_episode("reach-green", 1, 3, rng))
    demos = load_demos(path)
    assert demos.actions.shape == (7, 7)
    assert demos.episode_task == ["reach-red", "reach-green"]


def test_existing_file_needs_resume(tmp_path):
    path = tmp_path / "d.h5"
    EpisodeWriter(path, 16, 4, ATTRS, resume=False).close()
    with pytest.raises(ValueError, match="--resume"):
        EpisodeWriter(path, 16, 4, ATTRS, resume=False)
    with pytest.raises(ValueError, match="images of shape"):
        EpisodeWriter(path, 32, 4, ATTRS, resume=True)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(ValueError, match="not a vla-distill episode file"):
        load_demos(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_demos(tmp_path / "junk.h5")


def test_collect_writes_documented_layout(tmp_path):
    out = tmp_path / "demos.h5"
    assert main(["collect", "--tasks", "reach-red,lift-blue", "--episodes", "2", "--seed", "5", "--out", str(out)]) == 0
    demos = load_demos(out)
    assert demos.episode_task == ["reach-red", "reach-red", "lift-blue", "lift-blue"]
    assert demos.episode_seed.tolist() == [5, 6, 5, 6]
    assert demos.episode_success.all()
    assert demos.images.dtype == np.uint8
    assert demos.images.shape[1:] == (64, 64, 3)
    assert demos.states.shape == (demos.episode_length.sum(), 4)
    assert demos.attrs["env_id"] == "vla_distill/Tabletop-v0"
    # Reach has no zone; a lift-blue episode starts with the blue cube on the table (centre 2 cm up).
    assert np.isnan(demos.target_offsets[:, 3:]).all()
    first_lift = demos.episode_start[2]
    cube_z = demos.states[first_lift, 2] + demos.target_offsets[first_lift, 2]
    assert cube_z == pytest.approx(0.02, abs=2e-3)
    with h5py.File(out) as f:
        assert f["images"].compression == "gzip"
        assert f["images"].chunks[0] > 1


def collect_command(out, episodes):
    return [sys.executable, "-m", "vla_distill.cli.main", "--log-level", "DEBUG", "collect", "--tasks", "all",
            "--episodes", str(episodes), "--seed", "0", "--out", str(out)]


def run_until_saved(command, n_saved, sig):
    """Start a collection, wait until it has saved n_saved episodes, then send sig."""
    # Background shell jobs ignore SIGINT and pass that on to their children. Restoring the
    # default lets the child's Python turn SIGINT into KeyboardInterrupt.
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    saved = 0
    for line in process.stderr:
        saved += "saved episode" in line
        if saved >= n_saved:
            process.send_signal(sig)
            break
    process.stderr.read()
    return process.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_collection_stays_readable_and_resumes(tmp_path, sig):
    out = tmp_path / "demos.h5"
    returncode = run_until_saved(collect_command(out, 3), 4, sig)
    assert returncode != 0
    partial = load_demos(out)
    assert 4 <= partial.n_episodes < 27
    resumed = subprocess.run(collect_command(out, 3) + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    demos = load_demos(out)
    pairs = list(zip(demos.episode_task, demos.episode_seed.tolist()))
    assert len(pairs) == 27
    assert len(set(pairs)) == 27
    assert demos.episode_start[-1] + demos.episode_length[-1] == len(demos.actions)
    assert os.path.getsize(out) > 0


def test_driver_states_get_expert_labels(tmp_path):
    torch = pytest.importorskip("torch")
    from vla_distill.policies.io import create_policy, load_policy, save_policy  # noqa: PLC0415
    from vla_distill.sim.tabletop.env import TabletopEnv  # noqa: PLC0415

    torch.manual_seed(0)
    save_policy(create_policy("student", "tiny").eval(), tmp_path / "driver")
    out = tmp_path / "dagger.h5"
    command = ["collect", "--tasks", "reach-red,push-blue", "--episodes", "1", "--seed", "3", "--out", str(out)]
    assert main([*command, "--driver", str(tmp_path / "driver")]) == 0
    demos = load_demos(out)
    driver, _ = load_policy(tmp_path / "driver")
    for episode, task in enumerate(demos.episode_task):
        env = TabletopEnv(task=task)
        obs, _ = env.reset(seed=int(demos.episode_seed[episode]))
        for row in np.flatnonzero(demos.episode_index == episode):
            np.testing.assert_array_equal(obs["image"], demos.images[row])
            np.testing.assert_array_equal(demos.actions[row], env.expert_actions(0.0)[1])
            obs, *_ = env.step(driver.predict_action(obs))
        env.close()


def test_driver_options_are_checked(tmp_path, capsys):
    out = str(tmp_path / "x.h5")
    assert main(["collect", "--episodes", "1", "--out", out, "--expert-share", "0.5"]) == 2
    assert "--expert-share requires --driver" in capsys.readouterr().err
    assert main(["collect", "--episodes", "1", "--out", out, "--driver", "expert"]) == 2
    assert "the expert drives by default" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


@pytest.fixture(scope="module")
def tiny_driver(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from vla_distill.policies.io import create_policy, save_policy  # noqa: PLC0415

    torch.manual_seed(0)
    return save_policy(create_policy("student", "tiny").eval(), tmp_path_factory.mktemp("driver") / "student")


def test_expert_share_draws_ignore_worker_count(tmp_path, tiny_driver):
    command = ["collect", "--tasks", "reach-green", "--episodes", "2", "--seed", "4", "--driver", str(tiny_driver), "--expert-share", "0.5"]
    assert main([*command, "--out", str(tmp_path / "in_process.h5")]) == 0
    assert main([*command, "--num-envs", "2", "--out", str(tmp_path / "workers.h5")]) == 0
    in_process, workers = load_demos(tmp_path / "in_process.h5"), load_demos(tmp_path / "workers.h5")
    np.testing.assert_array_equal(in_process.actions, workers.actions)
    np.testing.assert_array_equal(in_process.states, workers.states)


def test_driver_noise_keeps_clean_labels(tmp_path, tiny_driver):
    from vla_distill.sim.tabletop.env import TabletopEnv  # noqa: PLC0415

    command = ["collect", "--tasks", "push-red", "--episodes", "1", "--seed", "6", "--driver", str(tiny_driver)]
    assert main([*command, "--out", str(tmp_path / "clean.h5")]) == 0
    assert main([*command, "--noise", "0.3", "--out", str(tmp_path / "noisy.h5")]) == 0
    assert main([*command, "--noise", "0.3", "--num-envs", "2", "--out", str(tmp_path / "workers.h5")]) == 0
    clean, noisy, workers = (load_demos(tmp_path / name) for name in ("clean.h5", "noisy.h5", "workers.h5"))
    assert not np.array_equal(clean.states[-1], noisy.states[-1])
    np.testing.assert_array_equal(noisy.states, workers.states)
    env = TabletopEnv(task="push-red")
    obs, _ = env.reset(seed=6)
    np.testing.assert_array_equal(obs["image"], noisy.images[0])
    np.testing.assert_array_equal(noisy.actions[0], env.expert_actions(0.0)[1])
    env.close()
    resumed = ["collect", "--tasks", "push-red", "--episodes", "2", "--seed", "6", "--driver", str(tiny_driver), "--resume"]
    assert main([*resumed, "--out", str(tmp_path / "noisy.h5")]) == 2
    assert load_demos(tmp_path / "noisy.h5").n_episodes == 1


def test_failed_driver_leaves_no_file(tmp_path, capsys):
    from vla_distill.policies.io import create_policy, save_policy  # noqa: PLC0415

    save_policy(create_policy("student", "tiny", image_size=32), tmp_path / "small_images")
    out = tmp_path / "out.h5"
    command = ["collect", "--tasks", "reach-red", "--episodes", "1", "--out", str(out)]
    assert main([*command, "--driver", str(tmp_path / "small_images")]) == 2
    assert "image_size=32" in capsys.readouterr().err
    assert not out.exists()


def test_resume_with_another_driver_raises(tmp_path, tiny_driver, capsys):
    out = str(tmp_path / "mixed.h5")
    assert main(["collect", "--tasks", "reach-red", "--episodes", "1", "--out", out]) == 0
    command = ["collect", "--tasks", "reach-red", "--episodes", "2", "--out", out, "--resume"]
    assert main([*command, "--driver", str(tiny_driver)]) == 2
    assert "collected with driver None" in capsys.readouterr().err
    assert load_demos(out).n_episodes == 1


def test_folder_as_out_raises(tmp_path, capsys):
    assert main(["collect", "--tasks", "reach-red", "--episodes", "1", "--out", str(tmp_path), "--resume"]) == 2
    assert "is a folder" in capsys.readouterr().err
