"""Distillation of a teacher policy into a student: losses, labelled rollouts, rounds."""

from vla_distill.distill.config import DISTILL_PRESETS, DistillConfig, load_distill_config
from vla_distill.distill.pipeline import DistillResult, distill

__all__ = ["DISTILL_PRESETS", "DistillConfig", "DistillResult", "distill", "load_distill_config"]
