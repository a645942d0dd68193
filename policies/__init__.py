"""Teacher and student policies, their processor and checkpoint loading.

The interface every policy implements is documented in ``vla_distill.policies.contract``.
Names are imported lazily, so ``from vla_distill.policies.action_tokenizer import
ActionTokenizer`` works without torch or transformers installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "ActionTokenizer": "vla_distill.policies.action_tokenizer",
    "PolicyOutput": "vla_distill.policies.contract",
    "PolicyProcessor": "vla_distill.policies.processor",
    "normalize_images": "vla_distill.policies.image_normalization",
    "ImageNormalizer": "vla_distill.policies.image_normalization",
    "TeacherConfig": "vla_distill.policies.teacher",
    "TeacherPolicy": "vla_distill.policies.teacher",
    "StudentConfig": "vla_distill.policies.student",
    "StudentPolicy": "vla_distill.policies.student",
    "create_policy": "vla_distill.policies.io",
    "save_policy": "vla_distill.policies.io",
    "load_policy": "vla_distill.policies.io",
    "read_policy_config": "vla_distill.policies.io",
    "check_compatible": "vla_distill.policies.io",
    "checkpoint_hash": "vla_distill.policies.io",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
