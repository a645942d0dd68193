"""Teacher training by behaviour cloning on demonstrations (see ``trainer``)."""

from vla_distill.training.config import TRAIN_PRESETS, TrainConfig, load_train_config
from vla_distill.training.trainer import TrainResult, train_teacher

__all__ = ["TRAIN_PRESETS", "TrainConfig", "TrainResult", "load_train_config", "train_teacher"]
