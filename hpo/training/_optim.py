"""The optimizer and the learning-rate schedule a :class:`TrainConfig` names."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hpo.training._config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
        config.optimizer
    ]
    try:
        # One kernel for the whole update instead of a few per parameter tensor.
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return cls(params, **kwargs)


def learning_rate(
    config: TrainConfig, step: int, steps_per_epoch: int, scale: float = 1.0
) -> float:
    """Learning rate at optimizer step ``step`` (counted over the whole run).

    Linear warm-up over ``warmup_epochs``, then cosine annealing with warm restarts if
    configured; ``scale`` is the plateau scheduler's accumulated reduction.
    """
    base = config.lr * scale
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if config.scheduler == "cosine_warm_restarts":
        cycle = config.restart_epochs * steps_per_epoch
        return base * 0.5 * (1 + math.cos(math.pi * ((step - warmup_steps) % cycle) / cycle))
    return base
