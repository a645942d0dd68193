"""Checkpoint save and load: round trips, strict errors, dtype conversion, compatibility, hashing."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_distill.policies.io import (
    check_compatible,
    checkpoint_hash,
    create_policy,
    load_policy,
    read_policy_config,
    save_policy,
)
from vla_distill.policies.student import StudentPolicy
from vla_distill.policies.teacher import TeacherPolicy

from test_policies_models import make_observation


def saved_policy(tmp_path, kind="teacher", preset="tiny", **overrides):
    torch.manual_seed(0)
    model = create_policy(kind, preset, **overrides).eval()
    folder = save_policy(model, tmp_path / f"{kind}-{preset}")
    return model, folder


@pytest.mark.parametrize(("kind", "model_class"), [("teacher", TeacherPolicy), ("student", StudentPolicy)])
def test_round_trip_gives_identical_logits(tmp_path, kind, model_class):
    model, folder = saved_policy(tmp_path, kind)
    loaded, processor = load_policy(folder)
    assert isinstance(loaded, model_class)
    assert not loaded.training
    batch = processor(make_observation(batch_size=3))
    assert torch.equal(model(batch).action_logits, loaded(batch).action_logits)
    np.testing.assert_array_equal(
        model.predict_action(make_observation()), loaded.predict_action(make_observation())
    )


def test_checkpoint_folder_files(tmp_path):
    _, folder = saved_policy(tmp_path)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "vla_distill_teacher"
    assert config["preset"] == "tiny"
    assert config["n_bins"] == 256
    assert config["state_names"] == ["ee_x_m", "ee_y_m", "ee_z_m", "gripper_opening_m"]
    assert config["image_size"] == 64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_float32(tmp_path, dtype):
    model, _ = saved_policy(tmp_path, "student")
    half_folder = save_policy(model.to(dtype), tmp_path / "half")
    assert {tensor.dtype for tensor in load_file(half_folder / "model.safetensors").values()} == {dtype}

    loaded, processor = load_policy(half_folder)
    assert {parameter.dtype for parameter in loaded.parameters()} == {torch.float32}
    # The float32 model with weights rounded through the half-precision dtype gives the same logits.
    rounded = model.float()
    batch = processor(make_observation(batch_size=2))
    torch.testing.assert_close(loaded(batch).action_logits, rounded(batch).action_logits)


def test_corrupted_weights_raise(tmp_path):
    _, folder = saved_policy(tmp_path)
    (folder / "model.safetensors").write_bytes(b"this is not a safetensors file" * 20)
    with pytest.raises(ValueError, match="corrupted or truncated weights file .*model.safetensors"):
        load_policy(folder)


def test_truncated_weights_raise(tmp_path):
    _, folder = saved_policy(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupted or truncated weights file"):
        load_policy(folder)


def test_missing_files_raise(tmp_path):
    _, folder = saved_policy(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_policy(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_policy(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(folder)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_policy(tmp_path / "nowhere")


def test_invalid_config_json_raises(tmp_path):
    _, folder = saved_policy(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_policy(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        load_policy(folder)


def test_shape_mismatch_lists_keys(tmp_path):
    _, folder = saved_policy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape mismatches .*patch_embedding.weight: stored \\(32, 8, 4, 4\\), expected \\(64, 8, 4, 4\\)"):
        load_policy(folder)


def test_missing_and_unexpected_keys_listed(tmp_path):
    _, folder = saved_policy(tmp_path, "student")
    path = folder / "model.safetensors"
    weights = load_file(path)
    del weights["bin_head.bias"]
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as raised:
        load_policy(folder)
    assert "missing keys ['bin_head.bias']" in str(raised.value)
    assert "unexpected keys ['extra.weight']" in str(raised.value)


def test_reference_missing_raises(tmp_path, monkeypatch):
    import vla_distill.policies.io as policy_io

    monkeypatch.setattr(policy_io, "REFERENCE_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="reference teacher is not shipped"):
        load_policy("reference")


def test_shipped_reference_teacher_loads():
    model, _ = load_policy("reference")
    assert model.config.policy_kind == "teacher"
    assert model.config.preset == "reference"
    assert next(model.parameters()).dtype == torch.float32  # stored as float16


def test_read_policy_config_dispatches(tmp_path):
    _, teacher_folder = saved_policy(tmp_path, "teacher")
    _, student_folder = saved_policy(tmp_path, "student")
    assert read_policy_config(teacher_folder).policy_kind == "teacher"
    assert read_policy_config(student_folder).policy_kind == "student"


def test_check_compatible_lists_differences():
    teacher = create_policy("teacher", "tiny").config
    student = create_policy("student", "tiny").config
    check_compatible(teacher, student)
    other = create_policy("student", "tiny", image_size=32, n_bins=128).config
    with pytest.raises(ValueError) as raised:
        check_compatible(teacher, other)
    assert "n_bins: teacher=256 student=128" in str(raised.value)
    assert "image_size: teacher=64 student=32" in str(raised.value)


def test_checkpoint_hash_tracks_contents(tmp_path):
    _, folder = saved_policy(tmp_path)
    first = checkpoint_hash(folder)
    assert len(first) == 64
    assert checkpoint_hash(folder) == first
    (folder / "notes.txt").write_text("not part of the hash")
    assert checkpoint_hash(folder) == first
    config = json.loads((folder / "config.json").read_text())
    config["preset"] = "renamed"
    (folder / "config.json").write_text(json.dumps(config))
    assert checkpoint_hash(folder) != first
