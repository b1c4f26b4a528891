"""The loop's hyperparameters: :class:`TrainConfig`, validated once, and :class:`TrainResult`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("none", "plateau", "cosine_warm_restarts", "onecycle")
TASKS: tuple[str, ...] = ("classification", "binary", "multilabel", "regression")
LOSSES: tuple[str, ...] = ("cross_entropy", "bce_with_logits", "mse", "l1", "huber")
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite; the trial cannot recover."""


def _require(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"`{key}` must be {what}, but got {key}={value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters of the training loop, validated on construction.

    ``batch_size`` is the micro-batch; with ``grad_accum`` > 1 the optimizer steps once per
    ``grad_accum`` micro-batches. ``warmup_epochs`` ramps the learning rate linearly per
    optimizer step and combines with either scheduler, which starts after the warm-up.
    ``plateau`` multiplies the learning rate by ``plateau_factor`` after ``plateau_patience``
    epochs without improvement of the trial's metric; ``cosine_warm_restarts`` anneals to 0
    over cycles of ``restart_epochs`` epochs. ``patience`` (``None``: off) stops after that
    many epochs without an improvement larger than ``min_delta``. ``amp="auto"`` means mixed
    precision on CUDA only; ``True`` elsewhere means bf16 autocast.

    ``cosine_warm_restarts`` is torch's ``CosineAnnealingWarmRestarts`` per optimizer step
    with ``T_0 = restart_epochs`` epochs, ``T_mult = restart_mult`` and
    ``eta_min = min_lr``; ``onecycle`` is torch's ``OneCycleLR`` (cosine, ``max_lr = lr``,
    ``onecycle_pct_start``, ``onecycle_div_factor``, ``onecycle_final_div_factor``; the
    learning rate only, momentum is not cycled) over all epochs. ``no_decay_bias_norm``
    exempts biases and normalization layers' weights from weight decay.

    ``task`` picks the metrics and the default ``loss`` (cross-entropy for classification,
    BCE-with-logits for binary and multi-label, MSE for regression); ``loss`` is a name of
    :data:`LOSSES` or any callable ``(outputs, targets) -> scalar``. ``class_weights``
    weight cross-entropy; ``huber_delta`` is Huber's delta.

    On a CUDA out-of-memory error in a step, ``oom_fallback`` retries the step with half the
    micro-batch and twice the accumulation (same effective batch), down to
    ``min_micro_batch`` samples.
    """

    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 1024
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "none"
    warmup_epochs: int = 0
    restart_epochs: int = 10
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    grad_accum: int = 1
    patience: int | None = None
    min_delta: float = 0.0
    amp: bool | Literal["auto"] = "auto"
    task: str = "classification"
    loss: str | Callable[..., Any] | None = None
    class_weights: tuple[float, ...] | None = None
    huber_delta: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    nesterov: bool = False
    no_decay_bias_norm: bool = False
    restart_mult: int = 1
    min_lr: float = 0.0
    onecycle_pct_start: float = 0.3
    onecycle_div_factor: float = 25.0
    onecycle_final_div_factor: float = 1e4
    oom_fallback: bool = True
    min_micro_batch: int = 1

    _INTS: ClassVar[tuple[str, ...]] = (
        "epochs",
        "batch_size",
        "eval_batch_size",
        "warmup_epochs",
        "restart_epochs",
        "plateau_patience",
        "grad_accum",
        "patience",
        "restart_mult",
        "min_micro_batch",
    )
    _FLOATS: ClassVar[tuple[str, ...]] = (
        "lr",
        "weight_decay",
        "momentum",
        "plateau_factor",
        "label_smoothing",
        "grad_clip",
        "min_delta",
        "huber_delta",
        "min_lr",
        "onecycle_pct_start",
        "onecycle_div_factor",
        "onecycle_final_div_factor",
    )

    def __post_init__(self) -> None:
        for key in self._INTS:
            value = getattr(self, key)
            if value is None and key == "patience":
                continue
            _require(_is_int(value), key, value, "an integer")
        for key in self._FLOATS:
            value = getattr(self, key)
            if value is None and key == "grad_clip":
                continue
            _require(_is_number(value) and math.isfinite(value), key, value, "a finite number")
            object.__setattr__(self, key, float(value))
        for key in ("epochs", "batch_size", "eval_batch_size", "restart_epochs", "grad_accum"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        for key in ("warmup_epochs", "plateau_patience"):
            _require(getattr(self, key) >= 0, key, getattr(self, key), ">= 0")
        _require(self.lr > 0, "lr", self.lr, "> 0")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _require(self.scheduler in SCHEDULERS, "scheduler", self.scheduler, f"one of {SCHEDULERS}")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        _require(0 < self.plateau_factor < 1, "plateau_factor", self.plateau_factor, "in (0, 1)")
        _require(
            0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)"
        )
        _require(
            self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "> 0 or None"
        )
        _require(
            self.patience is None or self.patience >= 1, "patience", self.patience, ">= 1 or None"
        )
        _require(self.min_delta >= 0, "min_delta", self.min_delta, ">= 0")
        _require(self.amp in ("auto", True, False), "amp", self.amp, "'auto', true or false")
        self._check_task_and_extras()

    def _check_task_and_extras(self) -> None:
        _require(self.task in TASKS, "task", self.task, f"one of {TASKS}")
        _require(
            self.loss is None or callable(self.loss) or self.loss in LOSSES,
            "loss",
            self.loss,
            f"one of {LOSSES} or a callable",
        )
        for key in ("nesterov", "no_decay_bias_norm", "oom_fallback"):
            _require(isinstance(getattr(self, key), bool), key, getattr(self, key), "true or false")
        if self.class_weights is not None:
            weights = self.class_weights
            ok = isinstance(weights, list | tuple) and all(
                _is_number(w) and w >= 0 for w in weights
            )
            _require(ok and len(weights) >= 2, "class_weights", weights, "a list of numbers >= 0")
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights))
        betas = self.betas
        ok = isinstance(betas, list | tuple) and len(betas) == 2
        _require(
            ok and all(_is_number(b) and 0 <= b < 1 for b in betas),
            "betas",
            betas,
            "two numbers in [0, 1)",
        )
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        _require(self.huber_delta > 0, "huber_delta", self.huber_delta, "> 0")
        _require(self.restart_mult >= 1, "restart_mult", self.restart_mult, ">= 1")
        _require(0 <= self.min_lr < self.lr, "min_lr", self.min_lr, "in [0, lr)")
        _require(
            0 < self.onecycle_pct_start < 1,
            "onecycle_pct_start",
            self.onecycle_pct_start,
            "in (0, 1)",
        )
        for key in ("onecycle_div_factor", "onecycle_final_div_factor"):
            _require(getattr(self, key) > 0, key, getattr(self, key), "> 0")
        _require(self.min_micro_batch >= 1, "min_micro_batch", self.min_micro_batch, ">= 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """The loop's settings among a trial's params; other keys belong to the model.

        Integral floats (``10.0`` from a YAML ``1e1``) are accepted for integer settings.
        """
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            value = params[f.name]
            if f.name in cls._INTS and isinstance(value, float) and value.is_integer():
                value = int(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` found. ``values`` are ``ctx.metrics`` at the best epoch."""

    values: tuple[float, ...]
    best_epoch: int
    epochs_run: int
    stop_reason: Literal["completed", "early_stopped"]  # a pruned trial raises instead
    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    confusion_matrix: list[list[int]] | None  # classification and binary tasks only
    test_metrics: dict[str, float] | None
    device: str
    n_params: int

    @property
    def value(self) -> float | tuple[float, ...]:
        """What an objective returns: a float, or a tuple for multi-objective studies."""
        return self.values[0] if len(self.values) == 1 else self.values
