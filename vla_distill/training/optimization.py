"""AdamW parameter groups and the warm-up plus cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters of these modules are never weight-decayed: decay would pull normalisation
# gains towards 0 and shrink position and query embeddings that carry no input signal.
NO_DECAY_MODULES = (nn.LayerNorm, nn.Embedding)
# Modules trained at ``stem_lr`` when a config sets it: the teacher's convolutional stem, its
# keypoint projection and patch embedding, and the auxiliary offset head.
STEM_MODULES = ("stem", "keypoint_projection", "patch_embedding", "offset_head")


def parameter_groups(model: nn.Module, weight_decay: float, stem_lr: float | None = None) -> list[dict]:
    """Split trainable parameters into a weight-decayed group and a group without decay.

    Biases and the parameters of LayerNorm and Embedding modules get no decay. With
    ``stem_lr``, the parameters of ``STEM_MODULES`` form two more groups with that learning rate.
    """
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{name}" if module_name else name
            if isinstance(module, NO_DECAY_MODULES) or name.endswith("bias"):
                no_decay.add(full_name)
    groups = {(decay, stem): [] for decay in (True, False) for stem in (False, True)}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            stem = stem_lr is not None and any(part in STEM_MODULES for part in name.split("."))
            groups[(name not in no_decay, stem)].append(parameter)
    result = []
    for (decay, stem), params in groups.items():
        if stem and not params:
            continue
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if stem:
            group["lr"] = stem_lr
        result.append(group)
    return result


def build_optimizer(model: nn.Module, config) -> torch.optim.AdamW:
    """Return AdamW over the model's parameter groups with the config's lr, betas and decay."""
    groups = parameter_groups(model, config.weight_decay, getattr(config, "stem_lr", None))
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas))


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Return the learning-rate multiplier of optimizer step ``step`` (0-based).

    Linear warm-up: (step + 1) / warmup_steps for step < warmup_steps. Then cosine decay
    from 1 to ``min_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config) -> torch.optim.lr_scheduler.LambdaLR:
    """Return the warm-up plus cosine schedule of the config, stepped once per optimizer step."""

    def factor(step: int) -> float:
        return lr_factor(step, config.warmup_steps, config.total_steps, config.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
