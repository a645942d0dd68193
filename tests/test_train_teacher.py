"""Teacher training: loss goes down, resume is exact, checkpoints are atomic, CLI works."""

import json
import math

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_distill.cli.main import main
from vla_distill.data.demos import Episode, EpisodeWriter, concat_demos, load_demos
from vla_distill.policies.io import create_policy_from_config, load_policy
from vla_distill.training import checkpointing, load_train_config, train_teacher
from vla_distill.training.checkpointing import list_checkpoints
from vla_distill.training.data import DemoBatches, EpochOrder, split_episodes
from vla_distill.training.losses import behaviour_cloning_loss, gaussian_bin_targets, target_offset_loss
from vla_distill.training.metrics import read_metrics
from vla_distill.training.optimization import build_optimizer, lr_factor

INSTRUCTIONS = ["push the red cube into the yellow zone", "lift the blue block", "reach the green cube"]


def write_demos(path, n_episodes=6, length=12, seed=0):
    """Write random images with actions that depend on the instruction and the state."""
    rng = np.random.default_rng(seed)
    with EpisodeWriter(path, 64, 4, {"env_id": "test"}, resume=False) as writer:
        for episode in range(n_episodes):
            family = episode % 3
            states = rng.normal(0.0, 0.1, (length, 4)).astype(np.float32)
            actions = np.tile(np.linspace(-0.9, 0.9, 7, dtype=np.float32) * (1 - family), (length, 1))
            actions[:, 0] = np.tanh(5 * states[:, 0])
            images = rng.integers(0, 256, (length, 64, 64, 3), dtype=np.uint8)
            # Target offsets follow from the state (cube at the origin) and, for family 0, a fixed zone.
            offsets = np.concatenate([-states[:, :3], np.tile([0.05, -0.05], (length, 1))], axis=1).astype(np.float32)
            offsets[:, 3:] = np.nan if family else offsets[:, 3:]
            writer.append(Episode(f"task-{family}", INSTRUCTIONS[family], episode, True, images, states, actions, offsets))
    return path


@pytest.fixture(scope="module")
def demos_path(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("data") / "demos.h5")


def tiny_config(**overrides):
    values = {"val_fraction": 0.34, "num_threads": 1, "total_steps": 40, "eval_every": 20, "checkpoint_every": 20}
    return load_train_config("teacher-tiny", **{**values, **overrides})


def test_training_lowers_loss(tmp_path, demos_path):
    config = tiny_config(total_steps=60, augment_shift_px=2)
    torch.manual_seed(config.seed)
    untrained = create_policy_from_config(config.teacher_config()).eval()
    trained = train_teacher(config, demos_path, tmp_path / "run")
    model, processor = load_policy(trained.final_dir)
    data = DemoBatches(load_demos(demos_path), processor, model.config.action_tokenizer(), 0.0, 0)
    batch, targets = data.batch(data.train_steps)
    with torch.no_grad():
        before, _ = behaviour_cloning_loss(untrained(batch).action_logits, targets)
        after, _ = behaviour_cloning_loss(model(batch).action_logits, targets)
    assert before > 5.0  # about ln(256) = 5.55 for near-uniform initial logits
    assert after < 0.7 * before


def test_gaussian_targets_on_three_bins():
    # exp(-0.5 * offset**2) for offsets (-1, 0, 1), normalised: e^-0.5 / (1 + 2 e^-0.5) and 1 / (1 + 2 e^-0.5)
    edge, centre = math.exp(-0.5) / (1 + 2 * math.exp(-0.5)), 1 / (1 + 2 * math.exp(-0.5))
    targets = gaussian_bin_targets(torch.tensor([1]), n_bins=3, sigma_bins=1.0)
    np.testing.assert_allclose(targets.numpy(), [[edge, centre, edge]], rtol=1e-6)
    logits = torch.tensor([[[0.0, 1.0, 0.0]]])
    log_z = math.log(2 + math.e)
    expected = -(2 * edge * (0.0 - log_z) + centre * (1.0 - log_z))
    loss, _ = behaviour_cloning_loss(logits, torch.tensor([[1]]), label_sigma_bins=1.0)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_gaussian_targets_at_edge_bins():
    targets = gaussian_bin_targets(torch.tensor([0, 255]), n_bins=256, sigma_bins=2.0)
    np.testing.assert_allclose(targets.sum(dim=-1).numpy(), [1.0, 1.0], rtol=1e-6)
    assert int(targets[0].argmax()) == 0
    assert int(targets[1].argmax()) == 255


def test_resume_matches_uninterrupted_run(tmp_path, demos_path):
    config = tiny_config(model_overrides={"dropout": 0.1}, augment_shift_px=2)
    straight = train_teacher(config, demos_path, tmp_path / "straight")
    first_half = train_teacher(config, demos_path, tmp_path / "resumed", stop_after_step=20)
    assert first_half.final_dir is None
    assert first_half.step == 20
    resumed = train_teacher(config, demos_path, tmp_path / "resumed", resume=True)
    assert resumed.step == 40

    expected = load_file(straight.final_dir / "model.safetensors")
    actual = load_file(resumed.final_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_target_offset_loss_values():
    predicted = torch.tensor([[1.0, 2.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    offsets_m = torch.tensor([[0.1, 0.1, 0.0, float("nan"), float("nan")], [0.0, 0.0, 0.0, 0.05, -0.05]])
    # Known entries in decimetres: errors 0, 1, 0 in row 1 and 0, 0, 0, -0.5, 0.5 in row 2: 1.5 / 8.
    predicted.requires_grad_(True)
    loss = target_offset_loss(predicted, offsets_m)
    assert float(loss) == pytest.approx(1.5 / 8)
    loss.backward()
    assert torch.isfinite(predicted.grad).all()
    assert predicted.grad[0, 3:].abs().sum() == 0


def test_offset_head_lowers_its_loss_and_resumes_exactly(tmp_path, demos_path):
    config = tiny_config(total_steps=150, checkpoint_every=50, eval_every=50, log_every=10, target_offset_weight=1.0)
    straight = train_teacher(config, demos_path, tmp_path / "straight")
    train_teacher(config, demos_path, tmp_path / "resumed", stop_after_step=50)
    resumed = train_teacher(config, demos_path, tmp_path / "resumed", resume=True)
    expected = load_file(straight.final_dir / "model.safetensors")
    actual = load_file(resumed.final_dir / "model.safetensors")
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    rows = read_metrics(straight.run_dir / "metrics.csv")
    errors = [value for _, name, value in rows if name == "train/target_offset_mse_dm2"]
    assert errors[-1] < 0.2 * errors[0]


def test_offset_weight_needs_offsets_in_the_data(tmp_path):
    path = write_demos(tmp_path / "old.h5")
    with h5py.File(path, "a") as f:
        del f["target_offsets"]
    with pytest.raises(ValueError, match="no target_offsets"):
        train_teacher(tiny_config(target_offset_weight=1.0), path, tmp_path / "run")


def test_joined_files_renumber_episodes(tmp_path, demos_path):
    second = write_demos(tmp_path / "second.h5", n_episodes=3, length=5, seed=1)
    with h5py.File(second, "a") as f:
        del f["target_offsets"]
    first, other = load_demos(demos_path), load_demos(second)
    joined = concat_demos([first, other])
    assert joined.n_episodes == 9
    assert len(joined.actions) == 6 * 12 + 3 * 5
    assert joined.episode_start.tolist() == [0, 12, 24, 36, 48, 60, 72, 77, 82]
    assert joined.episode_index[72:].tolist() == [6] * 5 + [7] * 5 + [8] * 5
    assert np.array_equal(joined.actions[72:], other.actions)
    assert np.isnan(joined.target_offsets[72:]).all()
    assert np.array_equal(joined.target_offsets[:72], first.target_offsets, equal_nan=True)


def test_resume_checks_every_data_file(tmp_path, demos_path):
    second = write_demos(tmp_path / "second.h5", n_episodes=3, length=5, seed=1)
    config = tiny_config(total_steps=20, checkpoint_every=10)
    train_teacher(config, [demos_path, second], tmp_path / "run", stop_after_step=10)
    source = json.loads((tmp_path / "run" / "source.json").read_text())
    assert [item["path"] for item in source["data"]] == [str(demos_path.resolve()), str(second.resolve())]
    with pytest.raises(ValueError, match="not the data the run started with"):
        train_teacher(config, [second, demos_path], tmp_path / "run", resume=True)
    assert train_teacher(config, [demos_path, second], tmp_path / "run", resume=True).step == 20


def test_init_from_copies_weights(tmp_path, demos_path):
    base = train_teacher(tiny_config(total_steps=10), demos_path, tmp_path / "base")
    config = tiny_config(init_from=str(base.final_dir), total_steps=1, warmup_steps=0, lr=1e-12, stem_lr=1e-12)
    tuned = train_teacher(config, demos_path, tmp_path / "tuned")
    before, after = load_file(base.final_dir / "model.safetensors"), load_file(tuned.final_dir / "model.safetensors")
    assert all(torch.allclose(before[name], after[name], atol=1e-6) for name in before)
    source = json.loads((tuned.final_dir / "source.json").read_text())
    assert source["init_from"]["policy"] == str(base.final_dir)
    assert len(source["init_from"]["sha256"]) == 64


def test_init_from_another_architecture_raises(tmp_path, demos_path):
    base = train_teacher(tiny_config(total_steps=10), demos_path, tmp_path / "base")
    config = tiny_config(init_from=str(base.final_dir), model_overrides={"fusion_layers": 2})
    with pytest.raises(ValueError, match=r"its config differs \(fusion_layers: checkpoint=1 model=2\)"):
        train_teacher(config, demos_path, tmp_path / "tuned")


def test_same_seed_gives_same_weights(tmp_path, demos_path):
    config = tiny_config(total_steps=10)
    first = train_teacher(config, demos_path, tmp_path / "a")
    second = train_teacher(config, demos_path, tmp_path / "b")
    expected = load_file(first.final_dir / "model.safetensors")
    actual = load_file(second.final_dir / "model.safetensors")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_run_outputs(tmp_path, demos_path):
    result = train_teacher(tiny_config(), demos_path, tmp_path / "run", command="vla-distill train-teacher ...")
    run_dir = tmp_path / "run"
    names = {name for _, name, _ in read_metrics(run_dir / "metrics.csv")}
    assert {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/accuracy", "val/accuracy_gripper"} <= names
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [20, 40]
    source = json.loads((result.final_dir / "source.json").read_text())
    assert source["command"] == "vla-distill train-teacher ..."
    assert source["seed"] == 0
    assert [len(item["sha256"]) for item in source["data"]] == [64]
    assert "init_from" not in source
    assert json.loads((result.final_dir / "train_config.json").read_text())["total_steps"] == 40


def test_logged_action_error_matches_model(tmp_path, demos_path):
    config = tiny_config(label_sigma_bins=2.0)
    result = train_teacher(config, demos_path, tmp_path / "run")
    logged = {(step, name): value for step, name, value in read_metrics(tmp_path / "run" / "metrics.csv")}
    model, processor = load_policy(result.final_dir)
    tokenizer = model.config.action_tokenizer()
    data = DemoBatches(load_demos(demos_path), processor, tokenizer, config.val_fraction, config.seed)
    batch, targets = data.batch(data.val_subset(config.eval_max_samples))
    with torch.no_grad():
        decoded = tokenizer.decode(model(batch).action_logits.argmax(dim=-1))
    expected = float((decoded - tokenizer.decode(targets)).abs().mean())
    assert logged[(40, "val/action_mae")] == pytest.approx(expected, abs=1e-5)


def test_resume_drops_metrics_after_checkpoint(tmp_path, demos_path):
    config = tiny_config(log_every=5)
    train_teacher(config, demos_path, tmp_path / "run", stop_after_step=20)
    with (tmp_path / "run" / "metrics.csv").open("a") as stream:
        stream.write("25,train/loss,9.0\n")  # written by a run that died before its next checkpoint
    train_teacher(config, demos_path, tmp_path / "run", resume=True)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert (25, "train/loss", 9.0) not in rows
    assert len([row for row in rows if row[:2] == (25, "train/loss")]) == 1


def test_failed_checkpoint_write_keeps_previous(tmp_path, demos_path, monkeypatch):
    config = tiny_config()
    real_save = torch.save
    calls = []

    def failing_save(payload, path):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as stream:
                stream.write(b"partial")
            raise OSError("disk full")
        real_save(payload, path)

    monkeypatch.setattr(checkpointing.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train_teacher(config, demos_path, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints"
    assert [step for step, _ in list_checkpoints(folder)] == [20]
    assert sorted(path.name for path in folder.iterdir()) == ["step_00000020.pt"]
    monkeypatch.undo()
    resumed = train_teacher(config, demos_path, tmp_path / "run", resume=True)
    assert resumed.step == 40


def test_existing_run_needs_resume(tmp_path, demos_path):
    config = tiny_config(total_steps=20)
    train_teacher(config, demos_path, tmp_path / "run")
    with pytest.raises(ValueError, match="already contains a training run"):
        train_teacher(config, demos_path, tmp_path / "run")


def test_resume_with_other_config_raises(tmp_path, demos_path):
    train_teacher(tiny_config(), demos_path, tmp_path / "run", stop_after_step=20)
    with pytest.raises(ValueError, match="lr: saved=0.001 requested=0.002"):
        train_teacher(tiny_config(lr=0.002), demos_path, tmp_path / "run", resume=True)


def test_resume_with_other_data_raises(tmp_path, demos_path):
    train_teacher(tiny_config(), demos_path, tmp_path / "run", stop_after_step=20)
    other = write_demos(tmp_path / "other.h5", seed=1)
    with pytest.raises(ValueError, match="is not the data the run started with"):
        train_teacher(tiny_config(), other, tmp_path / "run", resume=True)


def test_resume_without_checkpoint_raises(tmp_path, demos_path):
    with pytest.raises(ValueError, match="no training checkpoint"):
        train_teacher(tiny_config(), demos_path, tmp_path / "empty", resume=True)


def test_config_from_json_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"preset": "teacher-tiny", "lr": 0.01, "model_overrides": {"dropout": 0.1}}))
    config = load_train_config(path, seed=3)
    assert config.lr == 0.01
    assert config.seed == 3
    assert config.batch_size == 16  # from the teacher-tiny preset
    assert config.teacher_config().dropout == 0.1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_sise": 8}, "unknown training config fields \\['batch_sise'\\]"),
        ({"lr": -1.0}, "lr must be"),
        ({"warmup_steps": 500, "total_steps": 100}, "exceeds total_steps"),
        ({"model_preset": "giant"}, "unknown model_preset"),
        ({"model_overrides": {"hidden_size": 32}}, "divisible"),  # small preset has 3 heads
        ({"model_overrides": {"hidden": 30}}, "unknown TeacherConfig fields"),
        ({"label_smoothing": 0.1, "label_sigma_bins": 2.0}, "not both"),
        ({"label_sigma_bins": -1.0}, "label_sigma_bins must be"),
        ({"stem_lr": 0.0}, "stem_lr must be"),
        ({"target_offset_weight": -1.0}, "target_offset_weight must be"),
    ],
)
def test_invalid_config_raises(tmp_path, values, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=message):
        load_train_config(path)


def test_unknown_config_name_raises():
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_train_config("teacher-enormous")


def test_split_and_order_cover_every_step():
    train, val = split_episodes(10, 0.2, seed=0)
    assert len(val) == 2
    assert sorted([*train, *val]) == list(range(10))
    order = EpochOrder(n_samples=10, batch_size=4, seed=0)
    first_epoch = np.concatenate([order.indices(0), order.indices(1), order.indices(2)[:2]])
    assert sorted(first_epoch) == list(range(10))


def test_stem_lr_gets_its_own_groups():
    model = create_policy_from_config(tiny_config().teacher_config())
    plain = build_optimizer(model, tiny_config())
    assert {group["lr"] for group in plain.param_groups} == {1e-3}
    split = build_optimizer(model, tiny_config(stem_lr=5e-3))
    stem_ids = {id(p) for name, p in model.named_parameters() if name.startswith(("stem.", "keypoint_projection.", "patch_embedding."))}
    for group in split.param_groups:
        in_stem = {id(p) in stem_ids for p in group["params"]}
        assert in_stem == {group["lr"] == 5e-3}
    assert sum(len(group["params"]) for group in split.param_groups) == len(list(model.parameters()))


def test_lr_schedule_values():
    assert lr_factor(0, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(9, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(60, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(0.55)  # half-way: cos = 0
    assert lr_factor(110, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(0.1)


def test_cli_train_teacher_and_info(tmp_path, demos_path, capsys):
    out = tmp_path / "cli-run"
    argv = ["train-teacher", "--data", str(demos_path), "--config", "teacher-tiny", "--out", str(out)]
    assert main([*argv, "--steps", "10", "--num-threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 10

    assert main(["info", "--policy", summary["final"]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "teacher"
    assert info["preset"] == "tiny"
    assert info["parameters"] == sum(p.numel() for p in load_policy(summary["final"])[0].parameters())
    assert info["action_space"] == {"dim": 7, "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"], "bins": 256, "low": -1.0, "high": 1.0}
    assert info["image"]["height"] == 64
    assert info["instruction_tokenizer"]["max_length"] == 16
    assert info["size_bytes"] > 4 * info["parameters"]
    assert "--steps 10" in info["source"]["command"]


def test_cli_resume_uses_saved_config(tmp_path, demos_path, capsys):
    out = tmp_path / "cli-run"
    base = ["train-teacher", "--data", str(demos_path), "--out", str(out), "--num-threads", "1"]
    assert main([*base, "--config", "teacher-tiny", "--steps", "20", "--stop-after", "10"]) == 0
    capsys.readouterr()
    assert main([*base, "--resume", "--steps", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 20


def test_cli_user_errors_exit_2(tmp_path, demos_path, capsys):
    missing = ["train-teacher", "--data", str(tmp_path / "none.h5"), "--config", "teacher-tiny", "--out", str(tmp_path / "x")]
    assert main(missing) == 2
    assert "demonstration file not found" in capsys.readouterr().err
    assert main(["train-teacher", "--data", str(demos_path), "--out", str(tmp_path / "y")]) == 2
    assert "--config is required" in capsys.readouterr().err
    assert main(["info", "--policy", str(tmp_path / "nothing")]) == 2
    assert "policy checkpoint not found" in capsys.readouterr().err


def test_foreign_data_file_writes_no_run_folder(tmp_path):
    notes = tmp_path / "notes.h5"
    notes.write_text("not an episode file")
    out = tmp_path / "run"
    code = main(["train-teacher", "--data", str(notes), "--config", "teacher-tiny", "--out", str(out)])
    assert code == 2
    assert not out.exists()
