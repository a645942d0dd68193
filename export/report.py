"""The export_report.json written beside every exported model."""

from __future__ import annotations

import json
import logging
import math
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import onnx
import onnxruntime

from vla_distill import __version__
from vla_distill.export.config import ExportConfig
from vla_distill.export.metadata import ExportMetadata
from vla_distill.export.parity import MAX_ABS_LOGIT_DIFF, MIN_ACTION_AGREEMENT, ParityResult
from vla_distill.export.quantization import QuantizationSummary

logger = logging.getLogger(__name__)


def json_number(value: float) -> float | str:
    """Return ``value``, or its text ("inf", "nan") when it has no JSON number form."""
    return value if math.isfinite(value) else str(value)


def model_size_bytes(path: Path) -> int:
    """Return the size in bytes of an ONNX file plus its external data file, if it has one."""
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def model_opset(path: Path) -> int:
    """Return the opset of the default ONNX domain of the model at ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def float32_report(
    config: ExportConfig, metadata: ExportMetadata, float_path: Path, parity: ParityResult
) -> dict[str, Any]:
    """Return the report fields of the float32 export and its parity with PyTorch."""
    return {
        "model": str(config.out_path),
        "quantization": config.quantize,
        "size_bytes": None,
        "opset": model_opset(float_path),
        "source_policy": config.policy,
        "source_hash": metadata.source_hash,
        "policy_kind": metadata.policy_kind,
        "preset": metadata.preset,
        "parity_reference": "PyTorch policy vs float32 ONNX model",
        "max_abs_diff": json_number(parity.max_abs_diff),
        "action_agreement": parity.action_agreement,
        "batch_sizes_checked": list(parity.batch_sizes),
        "parity_frames": parity.frames,
        "parity_thresholds": {"max_abs_diff": MAX_ABS_LOGIT_DIFF, "action_agreement": MIN_ACTION_AGREEMENT},
        "parity_passed": parity.passed,
        "int8": None,
        "config": config.to_dict(),
        "versions": {
            "vla_distill": __version__,
            "torch": package_metadata.version("torch"),
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def int8_report(
    summary: QuantizationSummary, parity: ParityResult, float32_size_bytes: int, int8_size_bytes: int
) -> dict[str, Any]:
    """Return the report section that compares an INT8 model with its float32 source model."""
    return {
        "mode": summary.mode,
        "size_bytes": int8_size_bytes,
        "float32_size_bytes": float32_size_bytes,
        "size_ratio": int8_size_bytes / float32_size_bytes,
        "max_abs_diff_vs_float32": json_number(parity.max_abs_diff),
        "action_agreement_vs_float32": parity.action_agreement,
        "batch_sizes_checked": list(parity.batch_sizes),
        "calibration_source": summary.calibration_source,
        "calibration_frames": summary.calibration_frames,
        "float32_nodes": list(summary.excluded_nodes),
    }


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write ``report`` as indented JSON to ``path`` and return the path."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path
