"""Tasks and losses: what the model's outputs mean and how they are scored.

A task (``TrainConfig.task``) fixes the default loss and the metrics
(:data:`hpo.training.TASK_METRICS`). Targets are reshaped to the outputs' shape where the
loss compares them element by element, so a regression model may return ``(batch, 1)``
for ``(batch,)`` targets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from hpo.training._config import TrainConfig
from hpo.training._metrics import TASK_METRICS

__all__ = ["DEFAULT_LOSS", "LossFn", "make_loss", "metric_names", "valid_metric"]

#: ``(outputs, targets) ->`` the batch's mean loss, a 0-d tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_LOSS: dict[str, str] = {
    "classification": "cross_entropy",
    "binary": "bce_with_logits",
    "multilabel": "bce_with_logits",
    "regression": "mse",
}


def _like(targets: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    if targets.numel() == outputs.numel():
        targets = targets.reshape(outputs.shape)
    return targets.to(outputs.dtype)


def make_loss(config: TrainConfig, device: torch.device, *, training: bool) -> LossFn:
    """The loss ``config`` names; label smoothing only while ``training``."""
    loss = config.loss if config.loss is not None else DEFAULT_LOSS[config.task]
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        weight = None
        if config.class_weights is not None:
            weight = torch.tensor(config.class_weights, dtype=torch.float32, device=device)
        smoothing = config.label_smoothing if training else 0.0

        def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(outputs, targets, weight=weight, label_smoothing=smoothing)

        return cross_entropy

    def huber(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(outputs, targets, delta=config.huber_delta)

    elementwise: dict[str, LossFn] = {
        "bce_with_logits": F.binary_cross_entropy_with_logits,
        "mse": F.mse_loss,
        "l1": F.l1_loss,
        "huber": huber,
    }
    fn = elementwise[loss]

    def compare(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return fn(outputs, _like(targets, outputs))

    return compare


def metric_names(task: str, user: Iterable[str] = ()) -> tuple[str, ...]:
    """The per-epoch metrics of ``task``: losses, then ``val_`` metrics, then user metrics."""
    return (
        "train_loss",
        "val_loss",
        *(f"val_{m}" for m in TASK_METRICS[task]),
        *(f"val_{m}" for m in user),
    )


def valid_metric(name: str, task: str, user: Iterable[str] = ()) -> bool:
    """Whether ``name`` is a metric of ``task``; multi-label adds ``val_f1_<label>``."""
    if name in metric_names(task, user):
        return True
    return task == "multilabel" and re.fullmatch(r"val_f1_\d+", name) is not None
