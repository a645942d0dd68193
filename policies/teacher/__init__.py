"""Transformer teacher policy: ViT image encoder, text encoder and fusion transformer."""

from vla_distill.policies.teacher.configuration_teacher import TEACHER_PRESETS, TeacherConfig
from vla_distill.policies.teacher.modeling_teacher import TeacherPolicy

__all__ = ["TEACHER_PRESETS", "TeacherConfig", "TeacherPolicy"]
