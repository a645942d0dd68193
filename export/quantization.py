"""INT8 quantization of an exported float32 policy with ONNX Runtime's quantization tools.

Dynamic mode quantizes only the weights of MatMul and Gemm; activations are quantized at
run time. Convolutions stay float32 because dynamic INT8 turns them into ConvInteger, which
ONNX Runtime runs slower than float32 Conv on CPUs. On a 2-core x86 CPU with AVX2 and no
VNNI (ONNX Runtime 1.32, one thread, batch 1), the tiny student took 0.39 ms per step with
ConvInteger against 0.28 ms in float32 and 0.30 ms with only MatMul/Gemm quantized.

Static mode writes QuantizeLinear/DequantizeLinear (QDQ) pairs around Conv, MatMul and
Gemm, with per-channel weight scales and activation ranges calibrated on real frames.

In both modes LayerNormalization and Softmax are not quantized, MatMuls between two
activations (attention scores and their weighted sum) stay float32 so Softmax receives
float32 scores, and the final action head stays float32 unless requested otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from vla_distill.export.feeds import load_instruction_tokenizer, observation_feeds
from vla_distill.export.frames import FrameSet
from vla_distill.export.metadata import KEY_QUANTIZATION, LOGITS_OUTPUT, ExportMetadata

logger = logging.getLogger(__name__)

OP_TYPES_TO_QUANTIZE = {"dynamic": ["MatMul", "Gemm"], "static": ["Conv", "MatMul", "Gemm"]}
# Operators that apply a learned weight. The walk back from the logits stops at the first one.
WEIGHT_OP_TYPES = {"MatMul", "Gemm", "Conv", "Einsum"}
CALIBRATION_BATCH_SIZE = 16


@dataclass(frozen=True)
class QuantizationSummary:
    """Summary of one quantization run, for the export report."""

    mode: str
    """"dynamic" or "static"."""
    excluded_nodes: tuple[str, ...]
    """Names of the nodes that were kept in float32."""
    calibration_source: str | None
    """Description of the calibration frames' origin (static mode only)."""
    calibration_frames: int
    """Number of calibration frames (0 in dynamic mode)."""


def preprocess(float_path: Path, out_path: Path, external_data: bool) -> None:
    """Run ONNX Runtime's quantization pre-processing: shape inference and graph optimisation."""
    quant_pre_process(
        str(float_path),
        str(out_path),
        save_as_external_data=external_data,
        all_tensors_to_one_file=True,
        external_data_location=f"{out_path.name}.data",
    )


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Return the names of initializers and Constant node outputs of ``graph``."""
    names = {initializer.name for initializer in graph.initializer}
    names.update(output for node in graph.node if node.op_type == "Constant" for output in node.output)
    return names


def activation_matmul_nodes(graph: onnx.GraphProto) -> list[str]:
    """Return the MatMul nodes whose two inputs are both computed activations."""
    constants = constant_names(graph)
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


def action_head_nodes(graph: onnx.GraphProto, output: str = LOGITS_OUTPUT) -> list[str]:
    """Return the nodes from the logits output back to and including the head's weight operator.

    The walk does not pass through Shape nodes, which read only a tensor's dimensions.
    """
    producers = {name: node for node in graph.node for name in node.output}
    names: list[str] = []
    pending = [output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in names:
            continue
        names.append(node.name)
        if node.op_type in WEIGHT_OP_TYPES or node.op_type == "Shape":
            continue
        pending.extend(node.input)
    return names


def float32_nodes(graph: onnx.GraphProto, quantize_action_head: bool) -> list[str]:
    """Return the nodes to exclude from quantization."""
    excluded = activation_matmul_nodes(graph)
    if not quantize_action_head:
        excluded += [name for name in action_head_nodes(graph) if name not in excluded]
    return excluded


class FrameCalibrationReader(CalibrationDataReader):
    """Feed real frames to static calibration, in batches of the exported graph's inputs."""

    def __init__(self, frames: FrameSet, metadata: ExportMetadata) -> None:
        tokenizer = load_instruction_tokenizer(metadata)
        self._feeds = (
            observation_feeds(obs, metadata, tokenizer)[0] for obs in frames.batches(CALIBRATION_BATCH_SIZE)
        )

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def read_metadata(path: Path) -> ExportMetadata:
    """Read the vla-distill metadata of an ONNX file, without loading external weights."""
    model = onnx.load(str(path), load_external_data=False)
    return ExportMetadata.from_props({prop.key: prop.value for prop in model.metadata_props}, source=str(path))


def set_quantization_metadata(path: Path, mode: str, external_data: bool) -> None:
    """Record the quantization mode in the metadata of the model at ``path``."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == KEY_QUANTIZATION:
            prop.value = mode
    # onnx appends to an existing external data file, so the old one goes first. The weights
    # are in memory because onnx.load read them.
    remove_model(path)
    onnx.save_model(model, str(path), save_as_external_data=external_data, location=f"{path.name}.data")


def quantize_model(
    float_path: Path,
    out_path: Path,
    mode: str,
    frames: FrameSet | None,
    quantize_action_head: bool,
    external_data: bool,
) -> QuantizationSummary:
    """Write an INT8 copy of the float32 model at ``float_path`` to ``out_path``.

    ``frames`` calibrate activation ranges in static mode, which requires them. Dynamic mode
    ignores them.
    """
    if mode not in OP_TYPES_TO_QUANTIZE:
        raise ValueError(f"quantization mode must be one of {sorted(OP_TYPES_TO_QUANTIZE)}, got {mode!r}")
    if mode == "static" and frames is None:
        raise ValueError("static quantization needs calibration frames, got None")
    prepared = float_path.with_name(f"{float_path.stem}.preprocessed.onnx")
    preprocess(float_path, prepared, external_data)
    try:
        excluded = float32_nodes(onnx.load(str(prepared), load_external_data=False).graph, quantize_action_head)
        if mode == "dynamic":
            quantize_dynamic_int8(prepared, out_path, excluded, external_data)
        else:
            quantize_static_int8(prepared, out_path, excluded, frames, external_data)
    finally:
        remove_model(prepared)
    set_quantization_metadata(out_path, mode, external_data)
    logger.info("wrote %s INT8 model %s; %d nodes kept in float32", mode, out_path, len(excluded))
    return QuantizationSummary(
        mode=mode,
        excluded_nodes=tuple(excluded),
        calibration_source=frames.source if mode == "static" else None,
        calibration_frames=len(frames) if mode == "static" else 0,
    )


def quantize_dynamic_int8(source: Path, out_path: Path, excluded: list[str], external_data: bool) -> None:
    """Quantize MatMul and Gemm weights to int8, per tensor."""
    quantize_dynamic(
        str(source),
        str(out_path),
        op_types_to_quantize=OP_TYPES_TO_QUANTIZE["dynamic"],
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        use_external_data_format=external_data,
    )


def quantize_static_int8(
    source: Path, out_path: Path, excluded: list[str], frames: FrameSet, external_data: bool
) -> None:
    """Quantize Conv, MatMul and Gemm in QDQ format with per-channel int8 weights."""
    # uint8 activations with int8 weights (U8S8) is the combination that the ONNX Runtime 1.32
    # quantize_static documentation recommends for x86 CPUs.
    # NOTE: reduce_range stays False. That documentation advises 7-bit weights (reduce_range=True)
    # on x86 CPUs without VNNI to avoid saturation, and the target CPU is not known at export time.
    quantize_static(
        str(source),
        str(out_path),
        FrameCalibrationReader(frames, read_metadata(source)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=OP_TYPES_TO_QUANTIZE["static"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        use_external_data_format=external_data,
        calibrate_method=CalibrationMethod.MinMax,
    )


def remove_model(path: Path) -> None:
    """Delete an ONNX file and its external data file, if present."""
    for candidate in (path, path.with_name(f"{path.name}.data")):
        candidate.unlink(missing_ok=True)
