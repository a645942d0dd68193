"""ONNX export of policies, INT8 quantization and the torch-free runtime ``OnnxPolicy``.

Names are imported lazily: ``from vla_distill.export import OnnxPolicy`` loads ONNX Runtime,
numpy and tokenizers only, while ``export_policy`` also loads torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "OnnxPolicy": "vla_distill.export.onnx_policy",
    "ExportMetadata": "vla_distill.export.metadata",
    "ExportConfig": "vla_distill.export.config",
    "ParityError": "vla_distill.export.parity",
    "ParityResult": "vla_distill.export.parity",
    "FrameSet": "vla_distill.export.frames",
    "export_policy": "vla_distill.export.exporter",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
