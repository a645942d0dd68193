"""Compact CNN student policies for edge CPUs."""

from vla_distill.policies.student.configuration_student import STUDENT_PRESETS, StudentConfig
from vla_distill.policies.student.modeling_student import StudentPolicy

__all__ = ["STUDENT_PRESETS", "StudentConfig", "StudentPolicy"]
