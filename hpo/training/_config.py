"""The loop's hyperparameters: :class:`TrainConfig`, validated once, and :class:`TrainResult`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("none", "plateau", "cosine_warm_restarts")
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

    _INTS: ClassVar[tuple[str, ...]] = (
        "epochs",
        "batch_size",
        "eval_batch_size",
        "warmup_epochs",
        "restart_epochs",
        "plateau_patience",
        "grad_accum",
        "patience",
    )
    _FLOATS: ClassVar[tuple[str, ...]] = (
        "lr",
        "weight_decay",
        "momentum",
        "plateau_factor",
        "label_smoothing",
        "grad_clip",
        "min_delta",
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
    confusion_matrix: list[list[int]]
    test_metrics: dict[str, float] | None
    device: str
    n_params: int

    @property
    def value(self) -> float | tuple[float, ...]:
        """What an objective returns: a float, or a tuple for multi-objective studies."""
        return self.values[0] if len(self.values) == 1 else self.values
