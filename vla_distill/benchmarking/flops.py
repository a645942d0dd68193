"""FLOPs of one batch-1 policy call, counted for PyTorch models or from an ONNX graph.

One multiply-add counts as 2 FLOPs. Only matrix products and convolutions are counted
(MatMul, Gemm, Conv and their integer and QDQ forms). Elementwise ops, normalisation and
softmax are left out, which by estimate undercounts the models here by a few percent.
"""

from __future__ import annotations

import math

import numpy as np


def torch_flops(model, batch: dict) -> int:
    """Count the FLOPs of ``model(batch)`` with torch's FLOP counter."""
    import torch  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return int(counter.get_total_flops())


def onnx_flops(path: str, batch_size: int = 1) -> int:
    """Count the FLOPs of one call of an ONNX model with the batch axis fixed to ``batch_size``."""
    import onnx  # noqa: PLC0415

    model = onnx.load(path)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch_size
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: _shape(v) for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    return sum(_node_flops(node, shapes) for node in model.graph.node)


def _shape(value) -> list[int] | None:
    dims = value.type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]


def _node_flops(node, shapes: dict) -> int:
    if node.op_type in ("MatMul", "MatMulInteger", "Gemm", "QLinearMatMul", "FusedMatMul"):
        a = shapes.get(node.input[0])
        out = shapes.get(node.output[0])
        if a is None or out is None:
            return 0
        inner = a[-2] if (node.op_type == "Gemm" and _attribute(node, "transA", 0)) else a[-1]
        return 2 * int(np.prod(out)) * inner
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight_index = 3 if node.op_type == "QLinearConv" else 1
        weight = shapes.get(node.input[weight_index])
        out = shapes.get(node.output[0])
        if weight is None or out is None:
            return 0
        return 2 * int(np.prod(out)) * int(math.prod(weight[1:]))
    return 0


def _attribute(node, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default
