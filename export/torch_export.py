"""Trace a policy into a float32 ONNX file with the torch.onnx dynamo exporter."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

from vla_distill.export.frames import FrameSet
from vla_distill.export.graph_module import ExportModule
from vla_distill.export.metadata import GRAPH_INPUTS, GRAPH_OUTPUTS, ExportMetadata

logger = logging.getLogger(__name__)

# Two rows, so the exporter cannot specialise the batch axis to the values 0 or 1.
EXAMPLE_BATCH_SIZE = 2
# Loggers of the exporter's graph passes, which log every pass at INFO level.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir")
# A protobuf message, and so an ONNX file without external data, cannot exceed 2 GiB.
PROTOBUF_LIMIT_BYTES = 2**31


def example_inputs(processor, frames: FrameSet) -> tuple[torch.Tensor, ...]:
    """Return (image, state, input_ids, attention_mask) of the first frames, in graph input order."""
    indices = np.arange(EXAMPLE_BATCH_SIZE) % len(frames)
    input_ids, attention_mask = processor.tokenize([frames.instructions[i] for i in indices])
    image = torch.from_numpy(np.ascontiguousarray(frames.images[indices]))
    state = torch.from_numpy(np.ascontiguousarray(frames.states[indices], dtype=np.float32))
    return image, state, input_ids, attention_mask


def weight_bytes(model: torch.nn.Module) -> int:
    """Return the bytes of all parameters and buffers of ``model``."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def needs_external_data(model: torch.nn.Module, requested: bool) -> bool:
    """Return whether the weights go to a .data file: on request, or when they exceed 2 GiB."""
    if requested:
        return True
    size = weight_bytes(model)
    if size >= PROTOBUF_LIMIT_BYTES:
        logger.warning("weights take %d bytes, above the 2 GiB protobuf limit; writing external data", size)
        return True
    return False


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Raise the exporter's pass loggers to WARNING and hide its expected warnings."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Every input shares the single "batch" axis, which the exporter reports as a warning.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")
            # torch 2.13's export internals call a pytree API that torch itself deprecates.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def export_float32(
    policy: torch.nn.Module,
    processor,
    frames: FrameSet,
    path: Path,
    opset: int,
    metadata: ExportMetadata,
    external_data: bool,
) -> None:
    """Export ``policy`` wrapped in ``ExportModule`` to ``path`` with a dynamic batch axis and metadata."""
    module = ExportModule(policy).eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in GRAPH_INPUTS}
    with quiet_exporter():
        program = torch.onnx.export(
            module,
            example_inputs(processor, frames),
            dynamo=True,
            opset_version=opset,
            input_names=list(GRAPH_INPUTS),
            output_names=list(GRAPH_OUTPUTS),
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
        program.model.metadata_props.update(metadata.to_props())
        program.save(str(path), external_data=external_data)
    logger.info("exported float32 graph to %s (opset %d)", path, opset)


def check_onnx_file(path: Path) -> None:
    """Run onnx.checker with full_check (strict shape inference) on the file at ``path``."""
    onnx.checker.check_model(str(path), full_check=True)
    logger.info("onnx.checker (full_check) passed for %s", path)
