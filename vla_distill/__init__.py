"""vla-distill: distill vision-language-action robot policies into small students for edge CPUs.

Importing this package loads neither torch nor transformers, so a robot that only runs
ONNX models (``vla_distill.export.OnnxPolicy``) needs ONNX Runtime and numpy alone.
"""

__version__ = "0.1.0"
