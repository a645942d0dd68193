"""Distillation pipeline: outputs, label file, on-policy rounds, resume, determinism and CLI.

Every run uses the ``distill-test`` preset: a tiny random teacher, the tiny student, the tasks
reach-red and lift-blue, 4 optimizer steps per round and one on-policy round, with real
MuJoCo rollouts.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_distill.cli.main import main
from vla_distill.data.demos import load_demos
from vla_distill.distill import collection
from vla_distill.distill.collection import demonstration_steps
from vla_distill.distill.config import ROUND_SEED_STRIDE, load_distill_config
from vla_distill.distill.labels import LabelledRound, LabelStore, label_file_path, label_steps, teacher_label_key
from vla_distill.distill.pipeline import (
    build_source,
    build_student_and_heads,
    check_resumed_demos,
    distill,
    dry_run,
    load_frozen_teacher,
)
from vla_distill.distill.run_logs import METRIC_COLUMNS, ROUND_COLUMNS, read_rounds
from vla_distill.distill.trainer import DistillTrainer, LabelBatches
from vla_distill.policies import checkpoint_hash, create_policy, load_policy, save_policy

TASKS = ("reach-red", "lift-blue")
ROUNDS = 1
STEPS_PER_ROUND = 4


def preset_config(**overrides):
    """Return the distill-test preset on one thread, with ``overrides`` applied."""
    return load_distill_config("distill-test", num_threads=1, **overrides)


def student_weights(run_dir):
    return load_file(str(run_dir / "student" / "model.safetensors"))


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"weights differ in {name}"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_policy(create_policy("teacher", "tiny"), tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture(scope="module")
def demos_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "demos.h5"
    code = main(["collect", "--tasks", ",".join(TASKS), "--episodes", "2", "--seed", "0", "--out", str(path)])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, teacher_dir, demos_path):
    """An uninterrupted run that other tests compare with."""
    out_dir = tmp_path_factory.mktemp("runs") / "reference"
    return distill(teacher_dir, preset_config(), out_dir, demos=demos_path)


def test_run_writes_student_and_tables(reference_run, teacher_dir):
    out_dir = reference_run.out_dir
    assert reference_run.finished
    assert reference_run.step == STEPS_PER_ROUND * (ROUNDS + 1)
    model, _ = load_policy(reference_run.student_dir)
    assert model.config.policy_kind == "student"
    assert model.config.preset == "tiny"

    rounds = read_rounds(out_dir / "rounds.csv")
    assert [row["round"] for row in rounds] == [0, 1]
    assert tuple(rounds[0]) == ROUND_COLUMNS
    assert [row["steps"] for row in rounds] == [4, 8]
    assert all(row["n_episodes"] == len(TASKS) for row in rounds)
    assert rounds[1]["label_rows"] > rounds[0]["label_rows"]
    assert reference_run.rounds == rounds

    metrics_lines = (out_dir / "metrics.csv").read_text().splitlines()
    assert tuple(metrics_lines[0].split(",")) == METRIC_COLUMNS
    steps = [int(line.split(",")[0]) for line in metrics_lines[1:]]
    assert steps == [2, 4, 6, 8]  # log_every = 2
    for line in metrics_lines[1:]:
        assert all(np.isfinite(float(cell)) for cell in line.split(","))
    assert (out_dir / "tb").is_dir()

    source = json.loads((reference_run.student_dir / "source.json").read_text())
    assert source["teacher_sha256"] == checkpoint_hash(teacher_dir)
    assert source["seeds"] == {"seed": 0, "rollout_seed": 0, "eval_seed": 5000}
    saved_config = json.loads((reference_run.student_dir / "distill_config.json").read_text())
    assert saved_config == preset_config().to_dict()


def test_label_file_contains_both_rounds(reference_run, teacher_dir, demos_path):
    teacher = load_frozen_teacher(teacher_dir)
    key = teacher_label_key(teacher_dir, teacher.processor)
    assert reference_run.label_path == label_file_path(reference_run.out_dir, key)
    assert reference_run.label_path.name == f"labels-{key[:16]}.h5"
    demo_steps = len(load_demos(demos_path).actions)

    with h5py.File(reference_run.label_path, "r") as labels:
        assert labels.attrs["teacher_key"] == key
        assert labels.attrs["collected_rounds"] == ROUNDS + 1
        rounds = labels["round"][:]
        has_expert = labels["has_expert"][:]
        assert labels["teacher_logits"].dtype == np.float16
        assert labels["teacher_logits"].shape == (len(rounds), 7, 256)
        assert labels["teacher_features"].dtype == np.float16
        assert labels["images"].compression == "gzip"
        assert list(labels["episode_round"][:]) == [0, 0, 0, 0, 1, 1]
        cached_logits = labels["teacher_logits"][:3].astype(np.float32)
        images, states = labels["images"][:3], labels["states"][:3]
        instructions = [labels["episode_instruction"][i].decode() for i in labels["episode_index"][:3]]

    assert np.count_nonzero(rounds == 0) == demo_steps
    assert np.count_nonzero(rounds == 1) > 0
    assert has_expert[rounds == 0].all()
    assert not has_expert[rounds == 1].any()

    # The cached labels equal a fresh teacher forward pass through the processor, up to float16 rounding.
    with torch.no_grad():
        fresh = teacher(teacher.processor({"image": images, "state": states, "instruction": instructions}))
    np.testing.assert_allclose(cached_logits, fresh.action_logits.numpy(), rtol=1e-2, atol=1e-3)


def test_old_label_format_raises(tmp_path, teacher_dir):
    path = tmp_path / "labels.h5"
    LabelStore(path, "key", str(teacher_dir), {"images": (64, 64, 3)}).close()
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1  # files without the target_offsets column
    with pytest.raises(ValueError, match="label format version 1, expected 2"):
        LabelStore(path, "key", str(teacher_dir), {})


def test_reference_preset_enables_offset_term():
    config = load_distill_config("student-reference")
    assert config.loss.target_offset_weight == 1.0
    assert config.total_steps == 50000  # 4 on-policy rounds after round 0, 10,000 steps each


def test_changed_teacher_gets_new_label_file(reference_run, teacher_dir, tmp_path):
    torch.manual_seed(1)
    other_dir = save_policy(create_policy("teacher", "tiny"), tmp_path / "other")
    other = load_frozen_teacher(other_dir)
    other_key = teacher_label_key(other_dir, other.processor)
    original_key = teacher_label_key(teacher_dir, load_frozen_teacher(teacher_dir).processor)
    assert other_key != original_key
    assert label_file_path(reference_run.out_dir, other_key) != reference_run.label_path

    with pytest.raises(ValueError, match="not of the requested teacher"):
        LabelStore(reference_run.label_path, other_key, str(other_dir), {})
    with pytest.raises(ValueError, match="started with teacher key"):
        distill(other_dir, preset_config(), reference_run.out_dir, resume=True)


def test_one_step_updates_adapter_not_teacher(teacher_dir, demos_path, tmp_path):
    teacher = load_frozen_teacher(teacher_dir)
    teacher_before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    steps = demonstration_steps([demos_path], teacher.config)
    logits, features = label_steps(teacher, steps.images, steps.states, steps.step_instructions(), 64)
    store = LabelStore(tmp_path / "labels.h5", "key", str(teacher_dir), {
        "images": (64, 64, 3), "states": (4,), "expert_actions": (7,),
        "teacher_logits": (7, 256), "teacher_features": tuple(features.shape[1:]),
    })
    store.append_round(LabelledRound(0, steps, logits, features))
    labels = store.read(0)
    store.close()

    config = preset_config()
    student, adapter, offset_head = build_student_and_heads(config, dry_run(teacher))
    adapter_before = {name: tensor.clone() for name, tensor in adapter.state_dict().items()}
    head_before = {name: tensor.clone() for name, tensor in offset_head.state_dict().items()}
    trainer = DistillTrainer(config, student, adapter, offset_head)
    data = LabelBatches(labels, student.processor, student.config.action_tokenizer(), 8, 0, 0)
    scalars = trainer.train_step(data.train_batch(0, 0, 0))

    assert trainer.step == 1
    assert scalars["hard"] > 0  # demonstration rows have expert actions
    for name, tensor in adapter.state_dict().items():
        assert not torch.equal(tensor, adapter_before[name]), f"adapter {name} did not change"
    assert scalars["offset"] > 0  # demonstration rows have target offsets
    for name, tensor in offset_head.state_dict().items():
        assert not torch.equal(tensor, head_before[name]), f"offset head {name} did not change"
    assert not teacher.training
    for name, parameter in teacher.named_parameters():
        assert not parameter.requires_grad
        assert parameter.grad is None
        assert torch.equal(parameter, teacher_before[name]), f"teacher {name} changed"


def test_same_seed_gives_identical_weights(reference_run, teacher_dir, demos_path, tmp_path):
    again = distill(teacher_dir, preset_config(), tmp_path / "again", demos=demos_path)
    assert_same_weights(student_weights(again.out_dir), student_weights(reference_run.out_dir))


def test_saved_student_is_weight_average(reference_run):
    last = sorted((reference_run.out_dir / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(last, weights_only=False)
    average = state["weight_average"]["average"]
    saved = student_weights(reference_run.out_dir)
    assert_same_weights(saved, {name: average[name] for name in saved})
    assert any(not torch.equal(saved[name], state["student"][name]) for name in saved)
    assert state["weight_average"]["decay"] == preset_config().ema_decay


def test_resume_fills_fields_added_later(teacher_dir, demos_path, tmp_path):
    out_dir = tmp_path / "older"
    distill(teacher_dir, preset_config(ema_decay=0.0), out_dir, demos=demos_path, stop_after_step=3)
    last = sorted((out_dir / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(last, weights_only=False)
    del state["config"]["ema_decay"]  # as written before the field existed
    torch.save(state, last)
    resumed = distill(teacher_dir, preset_config(ema_decay=0.0), out_dir, resume=True, demos=demos_path)
    assert resumed.finished


def test_resume_after_stop_matches_uninterrupted(reference_run, teacher_dir, demos_path, tmp_path):
    out_dir = tmp_path / "stopped"
    stopped = distill(teacher_dir, preset_config(), out_dir, demos=demos_path, stop_after_step=5)
    assert not stopped.finished
    assert stopped.student_dir is None
    assert stopped.step == 5
    with h5py.File(stopped.label_path, "r") as labels:
        rows_before_resume = int(labels.attrs["n_rows"])
        assert labels.attrs["collected_rounds"] == 2

    resumed = distill(teacher_dir, preset_config(), out_dir, resume=True, demos=demos_path)
    assert resumed.finished
    assert_same_weights(student_weights(out_dir), student_weights(reference_run.out_dir))
    with h5py.File(resumed.label_path, "r") as labels:
        assert int(labels.attrs["n_rows"]) == rows_before_resume  # round 1 was not collected again
    assert [row["round"] for row in resumed.rounds] == [0, 1]
    steps = [int(line.split(",")[0]) for line in (out_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [2, 4, 6, 8]
    source = json.loads((out_dir / "source.json").read_text())
    assert len(source["resumed_by"]) == 1


def test_round_zero_joins_demonstration_files(teacher_dir, demos_path):
    config = load_frozen_teacher(teacher_dir).config
    once = demonstration_steps([demos_path], config)
    twice = demonstration_steps([demos_path, demos_path], config)
    assert len(twice.states) == 2 * len(once.states)
    assert twice.episode_index.max() == 2 * once.episode_index.max() + 1


def test_resume_checks_order_of_demonstration_files(teacher_dir, demos_path, tmp_path):
    other = tmp_path / "other.h5"
    shutil.copy(demos_path, other)
    with h5py.File(other, "a") as f:
        f.attrs["note"] = "changed copy"
    paths = [demos_path, other]
    source = build_source(preset_config(), teacher_dir, "key", paths, None)
    (tmp_path / "source.json").write_text(json.dumps(source))
    check_resumed_demos(tmp_path, paths, collected_rounds=0)
    with pytest.raises(ValueError, match="not the data the run started with"):
        check_resumed_demos(tmp_path, paths[::-1], collected_rounds=0)
    with pytest.raises(ValueError, match="without --demos"):
        check_resumed_demos(tmp_path, [], collected_rounds=0)


def test_resume_redoes_interrupted_collection(reference_run, teacher_dir, demos_path, tmp_path, monkeypatch):
    real_run_episodes = collection.run_episodes

    def crash_after_first_episode(policy, episodes, **options):
        assert min(seed for _, seed in episodes) >= ROUND_SEED_STRIDE  # round 0 comes from demos

        def crash(record):
            raise RuntimeError("simulated crash during the round 1 rollouts")

        return real_run_episodes(policy, episodes, **{**options, "on_episode": crash})

    out_dir = tmp_path / "crashed"
    monkeypatch.setattr(collection, "run_episodes", crash_after_first_episode)
    with pytest.raises(RuntimeError, match="simulated crash"):
        distill(teacher_dir, preset_config(), out_dir, demos=demos_path)
    monkeypatch.undo()
    with h5py.File(out_dir / reference_run.label_path.name, "r") as labels:
        assert labels.attrs["collected_rounds"] == 1

    resumed = distill(teacher_dir, preset_config(), out_dir, resume=True, demos=demos_path)
    assert resumed.finished
    assert_same_weights(student_weights(out_dir), student_weights(reference_run.out_dir))


@pytest.mark.parametrize(
    "overrides",
    [{"n_bins": 128}, {"state_dim": 5, "state_names": ["x", "y", "z", "gripper", "extra"]}],
    ids=["action_bins", "state_dim"],
)
def test_incompatible_student_fails_before_collection(teacher_dir, tmp_path, overrides):
    out_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="incompatible"):
        distill(teacher_dir, preset_config(student_overrides=overrides), out_dir)
    assert not out_dir.exists()


def test_new_run_rejects_used_folder(reference_run, teacher_dir):
    with pytest.raises(ValueError, match="already contains a distillation run"):
        distill(teacher_dir, preset_config(), reference_run.out_dir)


def test_cli_distills_with_seed(reference_run, teacher_dir, demos_path, tmp_path, capsys):
    out_dir = tmp_path / "cli"
    code = main([
        "distill", "--teacher", str(teacher_dir), "--student-config", "distill-test",
        "--suite", "tabletop", "--out", str(out_dir), "--demos", str(demos_path),
        "--rounds", "1", "--seed", "1", "--num-envs", "1", "--num-threads", "1",
    ])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"]
    assert [row["round"] for row in summary["rounds"]] == [0, 1]
    load_policy(out_dir / "student")
    source = json.loads((out_dir / "source.json").read_text())
    assert "--seed 1" in source["command"]
    assert source["seeds"]["seed"] == 1
    # A different --seed changes initialisation and sample order, so the weights differ.
    reference = student_weights(reference_run.out_dir)
    changed = student_weights(out_dir)
    assert any(not torch.equal(reference[name], changed[name]) for name in reference)


def test_cli_missing_teacher_exits_2(tmp_path, capsys):
    code = main([
        "distill", "--teacher", str(tmp_path / "missing"), "--student-config", "distill-test",
        "--out", str(tmp_path / "run"),
    ])
    assert code == 2
    assert "policy checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_json_config_merges_loss_fields(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"preset": "distill-test", "steps_per_round": 6, "loss": {"temperature": 4.0}}))
    config = load_distill_config(path)
    assert config.steps_per_round == 6
    assert config.loss.temperature == 4.0
    assert config.loss.relation_loss_weight == 0.1  # from the preset
    assert config.loss.hard_label_weight == 0.5  # from the default loss
    assert config.task_names() == list(TASKS)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 0.1}, "unknown distillation config fields"),
        ({"loss": {"temp": 2.0}}, "unknown loss fields"),
        ({"eval_seed": 10000}, "evaluation seeds overlap"),
        ({"tasks": "fly-red"}, "unknown task"),
        ({"teacher_action_share": 1.5}, "teacher_action_share"),
        ({"warmup_steps": 9}, "warmup_steps 9 exceeds"),
        ({"rollout_tasks": "push-red"}, "are not among the run's tasks"),
        ({"ema_decay": 1.0}, "invalid ema_decay 1.0"),
        ({"ema_decay": "0.9"}, "invalid ema_decay '0.9'"),
    ],
)
def test_invalid_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset_config(**overrides)


def test_rollout_tasks_spare_evaluation(teacher_dir, demos_path, tmp_path):
    result = distill(teacher_dir, preset_config(rollout_tasks="lift-blue"), tmp_path / "run", demos=demos_path)
    with h5py.File(result.label_path, "r") as labels:
        rounds = labels["episode_round"][:]
        tasks = [name.decode() for name in labels["episode_task"][:]]
    assert sorted({task for task, r in zip(tasks, rounds) if r == 0}) == sorted(TASKS)
    assert [task for task, r in zip(tasks, rounds) if r == 1] == ["lift-blue"]
    assert all(row["n_episodes"] == len(TASKS) for row in result.rounds)


def test_foreign_demos_file_writes_nothing(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    save_policy(create_policy("teacher", "tiny"), teacher)
    notes = tmp_path / "notes.h5"
    notes.write_text("not an episode file")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        distill(str(teacher), "distill-test", out, demos=notes)
    assert not out.exists()


def test_round0_from_copies_labels(reference_run, teacher_dir, demos_path, tmp_path, monkeypatch):
    def fail_if_called(*args, **kwargs):
        raise AssertionError("round 0 demonstrations were labelled again")

    monkeypatch.setattr(collection, "demonstration_steps", fail_if_called)
    reused = distill(teacher_dir, preset_config(), tmp_path / "reused", demos=demos_path, round0_from=reference_run.out_dir)
    assert_same_weights(student_weights(reused.out_dir), student_weights(reference_run.out_dir))
    with h5py.File(reused.label_path, "r") as copy, h5py.File(reference_run.label_path, "r") as original:
        np.testing.assert_array_equal(copy["teacher_logits"][:], original["teacher_logits"][:])
        np.testing.assert_array_equal(copy["episode_round"][:], original["episode_round"][:])
    source = json.loads((reused.out_dir / "source.json").read_text())
    assert source["round0_labels_from"] == str(reference_run.label_path.resolve())


def test_round0_from_rejects_other_data(reference_run, teacher_dir, demos_path, tmp_path):
    other = tmp_path / "other.h5"
    shutil.copy(demos_path, other)
    with h5py.File(other, "a") as f:
        f.attrs["note"] = "changed copy"
    with pytest.raises(ValueError, match="other demonstration files"):
        distill(teacher_dir, preset_config(), tmp_path / "a", demos=other, round0_from=reference_run.out_dir)
    with pytest.raises(ValueError, match="no label file of this teacher"):
        distill(teacher_dir, preset_config(), tmp_path / "b", demos=demos_path, round0_from=tmp_path)
    with pytest.raises(ValueError, match="needs the demonstration files"):
        distill(teacher_dir, preset_config(), tmp_path / "c", round0_from=reference_run.out_dir)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()
