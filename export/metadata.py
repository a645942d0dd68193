"""Metadata that an exported policy carries in its ONNX ``metadata_props``.

Every key starts with ``vla_distill.``. Structured values are JSON strings, so any ONNX
reader can recover them. The instruction tokenizer is stored inline as the full
``tokenizer.json`` string, so a self-contained ``.onnx`` file is the only artefact a robot needs.

This module imports neither torch nor onnx: ``OnnxPolicy`` reads the same keys through
ONNX Runtime's ``custom_metadata_map``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "vla_distill."
FORMAT_VERSION = 1

KEY_FORMAT_VERSION = PREFIX + "format_version"
KEY_VERSION = PREFIX + "version"
KEY_SOURCE_HASH = PREFIX + "source_hash"
KEY_POLICY_KIND = PREFIX + "policy_kind"
KEY_PRESET = PREFIX + "preset"
KEY_ACTION_TOKENIZER = PREFIX + "action_tokenizer"
KEY_ACTION_NAMES = PREFIX + "action_names"
KEY_IMAGE = PREFIX + "image"
KEY_STATE = PREFIX + "state"
KEY_INSTRUCTION_TOKENIZER = PREFIX + "instruction_tokenizer"
KEY_MAX_INSTRUCTION_LENGTH = PREFIX + "max_instruction_length"
KEY_QUANTIZATION = PREFIX + "quantization"

# Graph input and output names, shared by the exporter and the runtime.
IMAGE_INPUT = "image"
STATE_INPUT = "state"
INPUT_IDS_INPUT = "input_ids"
ATTENTION_MASK_INPUT = "attention_mask"
GRAPH_INPUTS = (IMAGE_INPUT, STATE_INPUT, INPUT_IDS_INPUT, ATTENTION_MASK_INPUT)
LOGITS_OUTPUT = "action_logits"
ACTIONS_OUTPUT = "actions"
GRAPH_OUTPUTS = (LOGITS_OUTPUT, ACTIONS_OUTPUT)

REQUIRED_KEYS = (
    KEY_FORMAT_VERSION,
    KEY_VERSION,
    KEY_SOURCE_HASH,
    KEY_POLICY_KIND,
    KEY_PRESET,
    KEY_ACTION_TOKENIZER,
    KEY_ACTION_NAMES,
    KEY_IMAGE,
    KEY_STATE,
    KEY_INSTRUCTION_TOKENIZER,
    KEY_MAX_INSTRUCTION_LENGTH,
    KEY_QUANTIZATION,
)

IMAGE_LAYOUT = "NHWC"


@dataclass(frozen=True)
class ExportMetadata:
    """Interface of an exported policy: what the graph expects and where it came from."""

    source_hash: str
    """Hex sha256 of the source checkpoint (``vla_distill.policies.checkpoint_hash``)."""
    vla_distill_version: str
    """Version of vla-distill that wrote the file."""
    policy_kind: str
    """"teacher" or "student"."""
    preset: str
    """Preset name of the source architecture, or "custom"."""
    n_bins: int
    """Number of uniform action bins per action dimension."""
    action_low: float
    """Lower edge of the first action bin, in action units."""
    action_high: float
    """Upper edge of the last action bin, in action units."""
    action_names: tuple[str, ...]
    """Name of each action dimension, in output order."""
    image_size: int
    """Height and width in pixels of the square uint8 RGB image input."""
    image_mean: tuple[float, ...]
    """Per-channel mean that the graph subtracts from pixels scaled to [0, 1]."""
    image_std: tuple[float, ...]
    """Per-channel standard deviation that the graph divides by after the mean."""
    state_names: tuple[str, ...]
    """Name and unit of each state value, in input order."""
    instruction_tokenizer: str
    """Full ``tokenizer.json`` content of the instruction tokenizer."""
    max_instruction_length: int
    """Number of instruction tokens per row of ``input_ids``."""
    quantization: str = "none"
    """"none", "dynamic" or "static"."""

    @property
    def action_dim(self) -> int:
        """Number of action dimensions."""
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        """Number of state values."""
        return len(self.state_names)

    def to_props(self) -> dict[str, str]:
        """Return the metadata as the string key-value pairs of ONNX ``metadata_props``."""
        action_tokenizer = {"n_bins": self.n_bins, "low": self.action_low, "high": self.action_high}
        image = {
            "height": self.image_size,
            "width": self.image_size,
            "channels": 3,
            "layout": IMAGE_LAYOUT,
            "dtype": "uint8",
            "color": "RGB",
            "mean": list(self.image_mean),
            "std": list(self.image_std),
        }
        state = {"dim": self.state_dim, "names": list(self.state_names), "dtype": "float32"}
        return {
            KEY_FORMAT_VERSION: str(FORMAT_VERSION),
            KEY_VERSION: self.vla_distill_version,
            KEY_SOURCE_HASH: self.source_hash,
            KEY_POLICY_KIND: self.policy_kind,
            KEY_PRESET: self.preset,
            KEY_ACTION_TOKENIZER: json.dumps(action_tokenizer),
            KEY_ACTION_NAMES: json.dumps(list(self.action_names)),
            KEY_IMAGE: json.dumps(image),
            KEY_STATE: json.dumps(state),
            KEY_INSTRUCTION_TOKENIZER: self.instruction_tokenizer,
            KEY_MAX_INSTRUCTION_LENGTH: str(self.max_instruction_length),
            KEY_QUANTIZATION: self.quantization,
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the model") -> "ExportMetadata":
        """Parse ``metadata_props`` written by ``to_props``, raising ValueError for a missing or invalid key."""
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ValueError(
                f"{source} has no vla-distill metadata (missing keys {missing}); "
                "export the policy with `vla-distill export`"
            )
        version = props[KEY_FORMAT_VERSION]
        if version != str(FORMAT_VERSION):
            raise ValueError(
                f"{source} has metadata format version {version!r}, this vla-distill reads "
                f"version {FORMAT_VERSION}; export the policy again with this version"
            )
        try:
            return cls._parse(props)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} has invalid vla-distill metadata: {error!r}") from error

    @classmethod
    def _parse(cls, props: Mapping[str, str]) -> "ExportMetadata":
        action_tokenizer = json.loads(props[KEY_ACTION_TOKENIZER])
        image = json.loads(props[KEY_IMAGE])
        state = json.loads(props[KEY_STATE])
        if image["layout"] != IMAGE_LAYOUT or image["height"] != image["width"]:
            raise ValueError(f"expected a square {IMAGE_LAYOUT} image, got {image}")
        return cls(
            source_hash=props[KEY_SOURCE_HASH],
            vla_distill_version=props[KEY_VERSION],
            policy_kind=props[KEY_POLICY_KIND],
            preset=props[KEY_PRESET],
            n_bins=int(action_tokenizer["n_bins"]),
            action_low=float(action_tokenizer["low"]),
            action_high=float(action_tokenizer["high"]),
            action_names=tuple(json.loads(props[KEY_ACTION_NAMES])),
            image_size=int(image["height"]),
            image_mean=tuple(float(value) for value in image["mean"]),
            image_std=tuple(float(value) for value in image["std"]),
            state_names=tuple(state["names"]),
            instruction_tokenizer=props[KEY_INSTRUCTION_TOKENIZER],
            max_instruction_length=int(props[KEY_MAX_INSTRUCTION_LENGTH]),
            quantization=props[KEY_QUANTIZATION],
        )
