"""INT8 exports of tiny policies: dynamic MatMul/Gemm and static per-channel QDQ."""

import numpy as np
import onnx
import pytest
import torch

from vla_distill.export import ExportConfig, OnnxPolicy, export_policy
from vla_distill.export.frames import frames_from_rollouts
from vla_distill.export.quantization import action_head_nodes, activation_matmul_nodes, quantize_model
from vla_distill.policies.io import create_policy, save_policy

QUANTIZED_INPUT = "DequantizeLinear"


@pytest.fixture(scope="module")
def frames():
    return frames_from_rollouts("lift-red,push-blue", episodes=1, seed=0, image_size=64)


@pytest.fixture(scope="module")
def float_export(tmp_path_factory, frames):
    """Return a function that exports a tiny policy once per kind and returns (checkpoint, model path)."""
    exports = {}

    def get(kind):
        if kind not in exports:
            folder = tmp_path_factory.mktemp(kind)
            torch.manual_seed(0)
            checkpoint = save_policy(create_policy(kind, "tiny"), folder / "checkpoint")
            config = ExportConfig(policy=str(checkpoint), out=str(folder / "float32" / "model.onnx"))
            export_policy(config, frames=frames)
            exports[kind] = (checkpoint, config.out_path)
        return exports[kind]

    return get


def load_graph(path):
    return onnx.load(str(path)).graph


def op_types(graph):
    return {node.op_type for node in graph.node}


def input_producers(graph, node):
    producers = {name: item for item in graph.node for name in item.output}
    return [producers[name].op_type for name in node.input if name in producers]


def nodes_named(graph, names):
    return [node for node in graph.node if node.name in set(names)]


def check_runs_and_is_smaller(path, float_path, frames, mode):
    policy = OnnxPolicy(path)
    assert policy.metadata.quantization == mode
    actions = policy.predict_action(next(frames.batches(4)))
    assert actions.shape == (4, 7)
    assert actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    assert path.stat().st_size < float_path.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)


def test_dynamic_student_export(float_export, frames, tmp_path):
    checkpoint, float_path = float_export("student")
    config = ExportConfig(policy=str(checkpoint), out=str(tmp_path / "int8.onnx"), quantize="dynamic")
    report = export_policy(config, frames=frames)
    check_runs_and_is_smaller(config.out_path, float_path, frames, "dynamic")

    graph = load_graph(config.out_path)
    assert "ConvInteger" not in op_types(graph)
    assert "MatMulInteger" in op_types(graph)
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        assert QUANTIZED_INPUT not in input_producers(graph, conv), conv.name

    head = nodes_named(graph, report["int8"]["float32_nodes"])
    assert "MatMul" in {node.op_type for node in head}  # the bin head stays a float32 MatMul

    int8 = report["int8"]
    assert report["quantization"] == "dynamic"
    assert report["parity_passed"] is True
    assert int8["size_bytes"] == report["size_bytes"] == config.out_path.stat().st_size
    assert int8["size_bytes"] < int8["float32_size_bytes"]
    assert 0.0 <= int8["action_agreement_vs_float32"] <= 1.0
    assert 0.0 <= int8["max_abs_diff_vs_float32"] < 1.0
    assert int8["calibration_frames"] == 0


def test_dynamic_teacher_keeps_conv_and_attention_float(float_export, frames, tmp_path):
    _, float_path = float_export("teacher")
    float_graph = load_graph(float_path)
    out = tmp_path / "teacher_dynamic.onnx"
    summary = quantize_model(float_path, out, "dynamic", frames, quantize_action_head=False, external_data=False)
    check_runs_and_is_smaller(out, float_path, frames, "dynamic")

    graph = load_graph(out)
    assert "ConvInteger" not in op_types(graph)
    assert "MatMulInteger" in op_types(graph)
    attention = activation_matmul_nodes(float_graph)
    assert len(attention) == 2 * 3  # scores and weighted sum in each of the 3 transformer layers
    assert [node.op_type for node in nodes_named(graph, attention)] == ["MatMul"] * len(attention)
    assert set(attention) <= set(summary.excluded_nodes)


def test_static_teacher_is_per_channel_qdq(float_export, frames, tmp_path):
    _, float_path = float_export("teacher")
    float_graph = load_graph(float_path)
    out = tmp_path / "teacher_static.onnx"
    summary = quantize_model(float_path, out, "static", frames, quantize_action_head=False, external_data=False)
    check_runs_and_is_smaller(out, float_path, frames, "static")
    assert summary.calibration_frames == len(frames)

    model = onnx.load(str(out))
    graph = model.graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(graph)
    assert not {"ConvInteger", "MatMulInteger"} & op_types(graph)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    weight_scales = [
        initializers[node.input[1]]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers and node.input[1] in initializers
    ]
    assert any(np.prod(scale.dims) > 1 for scale in weight_scales)  # one scale per output channel

    for node in graph.node:
        if node.op_type in ("Softmax", "LayerNormalization"):
            assert QUANTIZED_INPUT not in input_producers(graph, node), node.name
    for node in nodes_named(graph, activation_matmul_nodes(float_graph) + action_head_nodes(float_graph)):
        assert QUANTIZED_INPUT not in input_producers(graph, node), node.name


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # Linear(hidden_size, n_bins) on a 3-D input exports as MatMul + Add.
        ("student", ["Add", "MatMul"]),
        # The teacher's per-dimension head is einsum("bad,adn->ban") + bias.
        ("teacher", ["Add", "Einsum"]),
    ],
)
def test_action_head_nodes_end_at_weight_operator(float_export, kind, expected):
    graph = load_graph(float_export(kind)[1])
    head = nodes_named(graph, action_head_nodes(graph))
    assert sorted(node.op_type for node in head) == expected


def test_quantize_action_head_option(float_export, frames, tmp_path):
    _, float_path = float_export("student")
    head = action_head_nodes(load_graph(float_path))
    out = tmp_path / "student_dynamic_head.onnx"
    summary = quantize_model(float_path, out, "dynamic", frames, quantize_action_head=True, external_data=False)
    assert not set(head) & set(summary.excluded_nodes)
    graph = load_graph(out)
    assert "MatMul" not in {node.op_type for node in nodes_named(graph, head)}
    assert OnnxPolicy(out).predict_action(next(frames.batches(2))).shape == (2, 7)


def test_int8_with_external_data(float_export, frames, tmp_path):
    _, float_path = float_export("student")
    out = tmp_path / "student_dynamic.onnx"
    quantize_model(float_path, out, "dynamic", frames, quantize_action_head=False, external_data=True)
    data = tmp_path / "student_dynamic.onnx.data"
    assert data.is_file()
    # Rewriting the metadata must replace the weights file, not append a second copy to it.
    assert out.stat().st_size + data.stat().st_size < float_path.stat().st_size
    assert sorted(path.name for path in tmp_path.iterdir()) == ["student_dynamic.onnx", "student_dynamic.onnx.data"]
    # The pre-processed intermediate model and its weights are removed again.
    assert sorted(path.name for path in float_path.parent.iterdir()) == ["export_report.json", "model.onnx"]
    policy = OnnxPolicy(out)
    assert policy.metadata.quantization == "dynamic"
    assert policy.predict_action(next(frames.batches(2))).shape == (2, 7)
