"""ONNX export of tiny policies: parity with PyTorch, graph interface, metadata and report."""

import json

import numpy as np
import onnx
import pytest
import torch

from vla_distill import __version__
from vla_distill.export import ExportConfig, ExportMetadata, OnnxPolicy, export_policy
from vla_distill.export.frames import frames_from_rollouts
from vla_distill.export.metadata import GRAPH_INPUTS, KEY_INSTRUCTION_TOKENIZER, REQUIRED_KEYS
from vla_distill.export.parity import MAX_ABS_LOGIT_DIFF, MIN_ACTION_AGREEMENT, ParityResult
from vla_distill.policies.io import checkpoint_hash, create_policy, load_policy, save_policy

REPORT_KEYS = {
    "max_abs_diff",
    "action_agreement",
    "batch_sizes_checked",
    "opset",
    "quantization",
    "size_bytes",
    "source_hash",
    "config",
    "parity_passed",
}


def save_tiny_policy(kind, folder):
    torch.manual_seed(0)
    return save_policy(create_policy(kind, "tiny"), folder)


@pytest.fixture(scope="module")
def frames():
    # Two real expert episodes give about 50 frames, enough for batches of 1 and 4.
    return frames_from_rollouts("lift-red,push-blue", episodes=1, seed=0, image_size=64)


def export_tiny(kind, tmp_path_factory, frames, **options):
    folder = tmp_path_factory.mktemp(kind)
    checkpoint = save_tiny_policy(kind, folder / "checkpoint")
    config = ExportConfig(policy=str(checkpoint), out=str(folder / "onnx" / f"{kind}.onnx"), **options)
    return checkpoint, config, export_policy(config, frames=frames)


@pytest.fixture(scope="module")
def student_export(tmp_path_factory, frames):
    return export_tiny("student", tmp_path_factory, frames)


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory, frames):
    return export_tiny("teacher", tmp_path_factory, frames)


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_export_report_passes_parity(kind, request, frames):
    checkpoint, config, report = request.getfixturevalue(f"{kind}_export")
    assert REPORT_KEYS <= report.keys()
    assert json.loads(config.report_path.read_text()) == report
    assert report["parity_passed"] is True
    assert report["max_abs_diff"] <= MAX_ABS_LOGIT_DIFF
    assert report["action_agreement"] >= MIN_ACTION_AGREEMENT
    assert report["batch_sizes_checked"] == [1, 4] or {1, 4} <= set(report["batch_sizes_checked"])
    assert report["parity_frames"] == len(frames)
    assert report["opset"] == 20
    assert report["quantization"] == "none"
    assert report["int8"] is None
    assert report["source_hash"] == checkpoint_hash(checkpoint)
    assert report["config"]["policy"] == str(checkpoint)
    assert report["size_bytes"] == config.out_path.stat().st_size


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_export_writes_one_self_contained_file(kind, request):
    _, config, _ = request.getfixturevalue(f"{kind}_export")
    files = sorted(path.name for path in config.out_path.parent.iterdir())
    assert files == ["export_report.json", f"{kind}.onnx"]
    model = onnx.load(str(config.out_path), load_external_data=False)
    assert all(tensor.data_location != onnx.TensorProto.EXTERNAL for tensor in model.graph.initializer)


def dims(value_info):
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


def test_graph_inputs_and_outputs(student_export):
    _, config, _ = student_export
    graph = onnx.load(str(config.out_path)).graph
    inputs = {item.name: item for item in graph.input}
    outputs = {item.name: item for item in graph.output}
    assert list(inputs) == list(GRAPH_INPUTS)
    assert list(outputs) == ["action_logits", "actions"]

    batch = dims(inputs["image"])[0]
    assert isinstance(batch, str) and batch  # a named dynamic axis, not a fixed size
    expected_inputs = {
        "image": (onnx.TensorProto.UINT8, [batch, 64, 64, 3]),
        "state": (onnx.TensorProto.FLOAT, [batch, 4]),
        "input_ids": (onnx.TensorProto.INT64, [batch, 16]),
        "attention_mask": (onnx.TensorProto.INT64, [batch, 16]),
    }
    for name, (dtype, shape) in expected_inputs.items():
        assert inputs[name].type.tensor_type.elem_type == dtype, name
        assert dims(inputs[name]) == shape, name
    assert outputs["action_logits"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(outputs["action_logits"]) == [batch, 7, 256]
    assert outputs["actions"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(outputs["actions"]) == [batch, 7]


def test_metadata_round_trip(student_export):
    checkpoint, config, _ = student_export
    model = onnx.load(str(config.out_path))
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert set(REQUIRED_KEYS) <= props.keys()

    metadata = ExportMetadata.from_props(props)
    assert OnnxPolicy(config.out_path).metadata == metadata
    policy_config = load_policy(checkpoint)[0].config
    assert metadata.source_hash == checkpoint_hash(checkpoint)
    assert metadata.vla_distill_version == __version__
    assert (metadata.policy_kind, metadata.preset) == ("student", "tiny")
    assert (metadata.n_bins, metadata.action_low, metadata.action_high) == (256, -1.0, 1.0)
    assert list(metadata.action_names) == policy_config.action_names
    assert metadata.image_size == 64
    assert list(metadata.image_mean) == policy_config.image_mean
    assert list(metadata.image_std) == policy_config.image_std
    assert list(metadata.state_names) == policy_config.state_names
    assert metadata.max_instruction_length == 16
    assert metadata.quantization == "none"
    saved_tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    assert json.loads(props[KEY_INSTRUCTION_TOKENIZER]) == saved_tokenizer
    assert json.loads(props["vla_distill.image"])["layout"] == "NHWC"


def test_metadata_rejects_foreign_and_incomplete_props(student_export):
    _, config, _ = student_export
    props = {prop.key: prop.value for prop in onnx.load(str(config.out_path)).metadata_props}
    with pytest.raises(ValueError, match="no vla-distill metadata"):
        ExportMetadata.from_props({})
    with pytest.raises(ValueError, match="format version"):
        ExportMetadata.from_props({**props, "vla_distill.format_version": "99"})
    with pytest.raises(ValueError, match="invalid vla-distill metadata"):
        ExportMetadata.from_props({**props, "vla_distill.image": "{not json"})


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_onnx_matches_pytorch_at_batch_1_and_4(kind, request, frames):
    # Recomputed here without the exporter's comparison code, on the same real frames.
    checkpoint, config, _ = request.getfixturevalue(f"{kind}_export")
    policy, processor = load_policy(checkpoint)
    onnx_policy = OnnxPolicy(config.out_path)
    for batch_size in (1, 4):
        for obs in frames.batches(batch_size):
            with torch.no_grad():
                expected = policy(processor(obs)).action_logits.numpy()
            outputs = onnx_policy.run(obs)
            assert outputs["action_logits"].shape == expected.shape
            assert np.abs(outputs["action_logits"] - expected).max() <= MAX_ABS_LOGIT_DIFF
            assert np.array_equal(outputs["actions"], policy.predict_action(obs))

    single = {"image": frames.images[0], "state": frames.states[0], "instruction": frames.instructions[0]}
    action = onnx_policy.predict_action(single)
    assert action.shape == (7,)
    assert action.dtype == np.float32
    assert np.array_equal(action, policy.predict_action(single))


def test_parity_result_reports_margins():
    # 3e-4 exceeds the 1e-4 bound by 2e-4, and 99.0% agreement is 0.9 points below 99.9%.
    failing = ParityResult(max_abs_diff=3e-4, action_agreement=0.99, batch_sizes=(1, 4), frames=10)
    problems = failing.failures()
    assert not failing.passed
    assert len(problems) == 2
    assert "exceeds 0.0001 by 0.0002" in problems[0]
    assert "below 99.9% by 0.9000%" in problems[1]

    at_bounds = ParityResult(MAX_ABS_LOGIT_DIFF, MIN_ACTION_AGREEMENT, (1, 4), 10)
    assert at_bounds.passed
    not_finite = ParityResult(float("inf"), 1.0, (1, 4), 10)
    assert not not_finite.passed


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"out": "model.pt"}, ValueError, "ending in .onnx"),
        ({"quantize": "int4"}, ValueError, "quantize must be one of"),
        ({"opset": 16}, ValueError, "opset must be an integer from 17"),
        ({"parity_frames": 3}, ValueError, "parity_frames must be an integer >= 4"),
        ({"calibration": "demos.h5"}, ValueError, "only by static quantization"),
        ({"quantize": "static", "calibration": "missing.h5"}, FileNotFoundError, "calibration file not found"),
        ({"torch_threads": 0}, ValueError, "torch_threads must be an integer >= 1"),
    ],
)
def test_export_config_rejects_invalid_values(options, error, message):
    values = {"policy": "checkpoint", "out": "model.onnx", **options}
    with pytest.raises(error, match=message):
        ExportConfig(**values)


def test_external_data_option(tmp_path_factory, frames):
    _, config, report = export_tiny("student", tmp_path_factory, frames, external_data=True)
    data = config.out_path.with_name(f"{config.out_path.name}.data")
    assert data.is_file()
    assert report["size_bytes"] == config.out_path.stat().st_size + data.stat().st_size
    assert report["parity_passed"] is True
    assert OnnxPolicy(config.out_path).predict_action(next(frames.batches(4))).shape == (4, 7)
