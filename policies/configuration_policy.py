"""Configuration fields shared by every policy: action space, image, state and instruction layout.

Teacher and student configs subclass ``PolicyConfig``, so a checkpoint's ``config.json``
always records the interface that a distillation pair must agree on (see
``vla_distill.policies.io.check_compatible``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from vla_distill.policies.action_tokenizer import ActionTokenizer
from vla_distill.policies.instruction_tokenizer import (
    DEFAULT_MAX_LENGTH,
    PAD_TOKEN_ID,
    build_instruction_tokenizer,
)

ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
STATE_NAMES = ["ee_x_m", "ee_y_m", "ee_z_m", "gripper_opening_m"]
CUSTOM_PRESET = "custom"


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_float(name: str, value: Any, minimum: float, maximum: float = math.inf) -> None:
    """Raise ValueError unless ``value`` is a finite number in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value!r}")


def check_names(name: str, values: Any, length: int) -> None:
    """Raise ValueError unless ``values`` is a list of ``length`` strings."""
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise ValueError(f"{name} must be a list of {length} names, got {values!r}")
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"{name} must contain only strings, got {values!r}")


def default_vocab_size() -> int:
    """Return the vocabulary size of the default instruction tokenizer, special tokens included."""
    return build_instruction_tokenizer().get_vocab_size()


class PolicyConfig(PreTrainedConfig):
    """Interface fields of a policy checkpoint. Subclasses add the architecture fields."""

    policy_kind: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    preset: str = CUSTOM_PRESET
    """Name of the preset the architecture was built from, or "custom"."""
    action_dim: int = 7
    """Number of action dimensions predicted per step."""
    action_names: list[str] = field(default_factory=lambda: list(ACTION_NAMES))
    """Name of each action dimension, in order."""
    n_bins: int = 256
    """Number of uniform bins per action dimension."""
    action_low: float = -1.0
    """Lower bound of every action dimension. Values below it are clipped before binning."""
    action_high: float = 1.0
    """Upper bound of every action dimension. Values above it are clipped before binning."""
    image_size: int = 64
    """Height and width in pixels of the square RGB camera image."""
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    """Per-channel mean subtracted from images scaled to [0, 1]."""
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    """Per-channel standard deviation that scaled images are divided by."""
    state_dim: int = 4
    """Number of proprioceptive state values."""
    state_names: list[str] = field(default_factory=lambda: list(STATE_NAMES))
    """Name and unit of each state value, in order."""
    vocab_size: int | None = None
    """Number of instruction token ids, or None for the size of the default tokenizer."""
    max_instruction_length: int = DEFAULT_MAX_LENGTH
    """Number of instruction tokens after padding or truncation."""
    pad_token_id: int = PAD_TOKEN_ID
    """Token id of padding, masked out by the attention mask."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of linear and embedding weights."""

    def __post_init__(self, **kwargs):
        if self.vocab_size is None:
            self.vocab_size = default_vocab_size()
        self.validate_interface()
        super().__post_init__(**kwargs)

    def validate_interface(self) -> None:
        """Raise ValueError if an interface field is out of range."""
        check_int("action_dim", self.action_dim, 1)
        check_names("action_names", self.action_names, self.action_dim)
        check_int("n_bins", self.n_bins, 2)
        ActionTokenizer(self.n_bins, self.action_low, self.action_high)
        check_int("image_size", self.image_size, 8)
        check_channel_stats(self.image_mean, self.image_std)
        check_int("state_dim", self.state_dim, 1)
        check_names("state_names", self.state_names, self.state_dim)
        check_int("vocab_size", self.vocab_size, 2)
        check_int("max_instruction_length", self.max_instruction_length, 1)
        check_int("pad_token_id", self.pad_token_id, 0)
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} must be < vocab_size {self.vocab_size}")
        check_float("initializer_range", self.initializer_range, 0.0)

    def action_tokenizer(self) -> ActionTokenizer:
        """Return the action tokenizer described by this config."""
        return ActionTokenizer(n_bins=self.n_bins, low=self.action_low, high=self.action_high)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PolicyConfig":
        """Build the config of a named preset, with fields replaced by ``overrides``.

        The result keeps the preset's name unless ``overrides`` sets ``preset``.
        """
        if name not in cls.presets:
            raise ValueError(
                f"unknown {cls.policy_kind} preset {name!r}; choose one of {sorted(cls.presets)}"
            )
        check_override_names(cls, overrides)
        values = {"preset": name, **cls.presets[name], **overrides}
        return cls(**values)


def check_channel_stats(mean: Any, std: Any) -> None:
    """Raise ValueError unless mean and std are 3 finite numbers each and std is positive."""
    for name, values in (("image_mean", mean), ("image_std", std)):
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            raise ValueError(f"{name} must be a list of 3 numbers (R, G, B), got {values!r}")
        for value in values:
            check_float(name, value, -math.inf)
    if min(std) <= 0:
        raise ValueError(f"image_std must be positive, got {std!r}")


def config_field_names(config_class: type) -> set[str]:
    """Return the dataclass field names that ``config_class`` adds to ``PreTrainedConfig``."""
    inherited = {item.name for item in dataclasses.fields(PreTrainedConfig)}
    return {item.name for item in dataclasses.fields(config_class)} - inherited


def check_override_names(config_class: type, overrides: dict[str, Any]) -> None:
    """Raise ValueError if ``overrides`` names a field that ``config_class`` does not have."""
    unknown = sorted(set(overrides) - config_field_names(config_class))
    if unknown:
        raise ValueError(
            f"unknown {config_class.__name__} fields {unknown}; "
            f"valid fields are {sorted(config_field_names(config_class))}"
        )
