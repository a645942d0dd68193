"""OnnxPolicy: env-shaped inputs, clear errors, thread settings and a torch-free robot process."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from vla_distill.export import ExportConfig, OnnxPolicy, export_policy
from vla_distill.export.frames import frames_from_rollouts
from vla_distill.policies.io import create_policy, save_policy


@pytest.fixture(scope="module")
def frames():
    return frames_from_rollouts("reach-green", episodes=1, seed=0, image_size=64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, frames):
    folder = tmp_path_factory.mktemp("onnx_policy")
    torch.manual_seed(0)
    checkpoint = save_policy(create_policy("student", "tiny"), folder / "checkpoint")
    config = ExportConfig(policy=str(checkpoint), out=str(folder / "student.onnx"))
    export_policy(config, frames=frames)
    return config.out_path


def single_observation(frames, index=0):
    return {"image": frames.images[index], "state": frames.states[index], "instruction": frames.instructions[index]}


def test_predict_action_single_and_batched(model_path, frames):
    policy = OnnxPolicy(model_path)
    policy.reset()
    batch = next(frames.batches(4))
    actions = policy.predict_action(batch)
    assert actions.shape == (4, 7)
    assert actions.dtype == np.float32

    # Every action is a bin centre: -1 + (k + 0.5) * 2 / 256 for an integer k in [0, 255].
    bins = (actions + 1.0) * 128.0 - 0.5
    assert np.allclose(bins, np.round(bins), atol=1e-3)
    assert bins.min() > -0.5
    assert bins.max() < 255.5

    for row in range(4):
        single = policy.predict_action(single_observation(frames, row))
        assert single.shape == (7,)
        assert np.array_equal(single, actions[row])


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX policy not found"):
        OnnxPolicy(tmp_path / "absent.onnx")


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_corrupted_file_raises_value_error(model_path, tmp_path, content):
    data = model_path.read_bytes()
    corrupted = {"truncated": data[: len(data) // 2], "text": b"not an onnx model", "empty": b""}[content]
    path = tmp_path / "corrupted.onnx"
    path.write_bytes(corrupted)
    with pytest.raises(ValueError, match="is not a valid ONNX model") as error:
        OnnxPolicy(path)
    assert str(path) in str(error.value)


def test_model_without_metadata_raises_value_error(tmp_path):
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [tensor],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="no vla-distill metadata"):
        OnnxPolicy(path)


def wrong_observations(frames):
    good = single_observation(frames)
    batch = next(frames.batches(4))
    return [
        ({**good, "image": np.zeros((32, 32, 3), np.uint8)}, "image must have shape"),
        ({**good, "image": good["image"].astype(np.float32)}, "must be uint8"),
        ({**good, "image": good["image"][..., 0]}, "image must have shape"),
        ({**good, "state": np.zeros(5, np.float32)}, "state must have shape"),
        ({**good, "state": np.full(4, np.nan, np.float32)}, "NaN or infinite"),
        ({**good, "instruction": ("lift the red block",)}, "must be str"),
        ({key: good[key] for key in ("image", "state")}, "missing keys"),
        ({**batch, "state": batch["state"][:3]}, "same batch size"),
        ({**batch, "state": batch["state"][0]}, "state must have shape"),
        ({**batch, "instruction": "lift the red block"}, "sequence of str"),
        ([good["image"]], "must be a dict"),
    ]


def test_wrong_observation_raises_value_error(model_path, frames):
    policy = OnnxPolicy(model_path)
    for observation, message in wrong_observations(frames):
        with pytest.raises(ValueError, match=message):
            policy.predict_action(observation)


def test_thread_settings_are_explicit(model_path):
    policy = OnnxPolicy(model_path, intra_op_num_threads=2, allow_spinning=True)
    options = policy.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    quiet = OnnxPolicy(model_path).session.get_session_options()
    assert quiet.intra_op_num_threads == 1
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="intra_op_num_threads must be an integer >= 1"):
            OnnxPolicy(model_path, intra_op_num_threads=threads)


# Runs in a fresh interpreter in which importing torch or transformers raises ImportError.
TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    class BlockModules:
        blocked = ("torch", "transformers")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockModules())
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker did not block torch")

    import gymnasium as gym
    import numpy as np

    import vla_distill
    import vla_distill.export
    from vla_distill.export import OnnxPolicy
    from vla_distill.policy_loading import load_rollout_policy
    from vla_distill.rollout import run_episodes
    from vla_distill.sim import ENV_ID

    model_path = sys.argv[1]
    policy = OnnxPolicy(model_path, intra_op_num_threads=1)
    env = gym.make(ENV_ID, task="lift-red", disable_env_checker=True)
    obs, _ = env.reset(seed=0)
    policy.reset()
    shapes = []
    for _ in range(5):
        action = policy.predict_action(obs)
        shapes.append(list(action.shape))
        obs, reward, terminated, truncated, info = env.step(action)
    env.close()

    records = run_episodes(load_rollout_policy(model_path), [("push-red", 0), ("reach-blue", 1)], num_envs=1)
    loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    print(json.dumps({"shapes": shapes, "episodes": [record.steps for record in records], "loaded": loaded}))
    """
)


def test_runs_in_process_without_torch(model_path):
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT, str(model_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["shapes"] == [[7]] * 5
    assert len(output["episodes"]) == 2
    assert all(steps > 0 for steps in output["episodes"])
    assert output["loaded"] == []
