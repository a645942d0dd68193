"""Settings of one ONNX export, validated when the config is built."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

QUANTIZATION_MODES = ("none", "dynamic", "static")
DEFAULT_OPSET = 20
# LayerNormalization, used by every policy, is an ONNX operator from opset 17 on.
MIN_OPSET = 17
REPORT_FILE = "export_report.json"


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export: source policy, output path, quantization and the frames that check it."""

    policy: str
    """Policy checkpoint folder, or "reference" for the shipped reference teacher."""
    out: str
    """Path of the .onnx file to write. export_report.json goes into the same folder."""
    quantize: str = "none"
    """"none" (float32), "dynamic" (INT8 MatMul/Gemm weights) or "static" (INT8 QDQ, per channel)."""
    calibration: str | None = None
    """Episode HDF5 file whose frames calibrate static quantization, or None for the rollout frames."""
    opset: int = DEFAULT_OPSET
    """Opset of the default ONNX domain."""
    external_data: bool = False
    """Whether the weights go to a .data file beside the model, which weights above 2 GiB require."""
    parity_frames: int = 200
    """Number of real observations on which PyTorch and ONNX Runtime outputs are compared."""
    calibration_frames: int = 256
    """Maximum number of frames fed to static calibration."""
    rollout_tasks: str = "all"
    """Comma-separated tasks or task families of the expert rollouts, or "all"."""
    rollout_episodes: int = 2
    """Expert episodes per task that provide parity (and calibration) frames."""
    seed: int = 0
    """Reset seed of the first rollout episode of each task. Episode i uses seed + i."""
    quantize_action_head: bool = False
    """Whether the final action head is quantized too. By default it stays float32."""
    torch_threads: int | None = None
    """PyTorch intra-op threads, set for the whole process, or None for torch's default."""
    report: str | None = None
    """Path of the export report, or None for export_report.json in the folder of ``out``."""

    def __post_init__(self) -> None:
        self._check_paths()
        if self.quantize not in QUANTIZATION_MODES:
            raise ValueError(f"quantize must be one of {list(QUANTIZATION_MODES)}, got {self.quantize!r}")
        max_opset = onnx.defs.onnx_opset_version()
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= max_opset:
            raise ValueError(
                f"opset must be an integer from {MIN_OPSET} to {max_opset} (the newest opset of the "
                f"installed onnx {onnx.__version__}), got {self.opset!r}"
            )
        # Four frames is the largest parity batch size.
        check_count("parity_frames", self.parity_frames, 4)
        check_count("calibration_frames", self.calibration_frames, 1)
        check_count("rollout_episodes", self.rollout_episodes, 1)
        check_count("seed", self.seed, 0)
        if self.torch_threads is not None:
            check_count("torch_threads", self.torch_threads, 1)

    def _check_paths(self) -> None:
        if Path(self.out).suffix != ".onnx":
            raise ValueError(f"out must be a path ending in .onnx, got {self.out!r}")
        if self.calibration is None:
            return
        if self.quantize != "static":
            raise ValueError(
                f"a calibration file is used only by static quantization, but quantize={self.quantize!r}; "
                "pass --quantize static or drop --calibration"
            )
        if not Path(self.calibration).is_file():
            raise FileNotFoundError(
                f"calibration file not found: {self.calibration}; record one with `vla-distill collect`"
            )

    @property
    def out_path(self) -> Path:
        """The output model path."""
        return Path(self.out)

    @property
    def report_path(self) -> Path:
        """Path of the export report: ``report`` if set, else export_report.json beside the model.

        Two exports into one folder need distinct ``report`` paths, or the later replaces the earlier.
        """
        return Path(self.report) if self.report else self.out_path.parent / REPORT_FILE

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved settings as JSON-ready values."""
        return asdict(self)


def check_count(name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
