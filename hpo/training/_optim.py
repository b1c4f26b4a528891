"""The optimizer and the learning-rate schedule a :class:`TrainConfig` names.

The schedule is a pure function of the optimizer step (plus the plateau scheduler's
accumulated reduction, kept in the loop's checkpointed state), so resuming needs no
scheduler object; tests hold it against torch's own scheduler classes step by step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hpo.training._config import TrainConfig

__all__ = ["learning_rate", "make_optimizer", "param_groups"]

_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    _NORMS = (*_NORMS, nn.RMSNorm)


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """One group, or (``no_decay_bias_norm``) a decayed group and one of biases and norms."""
    if not config.no_decay_bias_norm:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            exempt = isinstance(module, _NORMS) or name == "bias"
            (no_decay if exempt else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config)
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        kwargs.update(momentum=config.momentum, nesterov=config.nesterov)
    else:
        kwargs["betas"] = config.betas
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
        config.optimizer
    ]
    try:
        # One kernel for the whole update instead of a few per parameter tensor.
        return cls(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return cls(groups, **kwargs)


def _cosine_restarts(config: TrainConfig, t: int, cycle: int) -> float:
    """torch's ``CosineAnnealingWarmRestarts`` at step ``t`` (``T_0 = cycle`` steps)."""
    if config.restart_mult == 1:
        t_cur, t_i = t % cycle, cycle
    else:
        t_cur, t_i = t, cycle
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * config.restart_mult
    cos = 0.5 * (1 + math.cos(math.pi * t_cur / t_i))
    return config.min_lr + (config.lr - config.min_lr) * cos


def _one_cycle(config: TrainConfig, t: int, total: int) -> float:
    """torch's ``OneCycleLR`` (two phases, cosine annealing) at step ``t`` of ``total``."""
    top = config.lr
    start = top / config.onecycle_div_factor
    end = start / config.onecycle_final_div_factor
    peak = float(config.onecycle_pct_start * total) - 1
    if t <= peak:
        a, b, pct = start, top, t / peak
    else:
        a, b, pct = top, end, (t - peak) / (total - 1 - peak)
    return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)


def learning_rate(
    config: TrainConfig, step: int, steps_per_epoch: int, scale: float = 1.0
) -> float:
    """Learning rate at optimizer step ``step`` (counted over the whole run).

    Linear warm-up over ``warmup_epochs`` (torch's ``LinearLR`` from ``1/warmup_steps``),
    then the scheduler, which starts after the warm-up; ``scale`` is the plateau
    scheduler's accumulated reduction.
    """
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return config.lr * scale * (step + 1) / warmup_steps
    t = step - warmup_steps
    if config.scheduler == "cosine_warm_restarts":
        return _cosine_restarts(config, t, config.restart_epochs * steps_per_epoch) * scale
    if config.scheduler == "onecycle":
        total = max(2, (config.epochs - config.warmup_epochs) * steps_per_epoch)
        return _one_cycle(config, min(t, total - 1), total) * scale
    return config.lr * scale
