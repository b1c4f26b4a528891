"""The one training loop: an objective hands it a model, data and hyperparameters.

:func:`train` runs epochs of train -> validate -> metrics -> report/prune -> early stop, and
checkpoints so that a retried trial resumes where the killed one stopped and ends with the
same result as an uninterrupted run.

Speed comes from doing less, not from tricks: the data are tensors batched by slicing (no
``DataLoader``, no per-sample collation), kept resident on the GPU when they fit, and the
loop synchronizes with the device once per epoch, not once per batch. On CUDA it trains in
bf16 (or fp16 with a ``GradScaler``) autocast with fused optimizers.

Epochs are numbered from 0, like the steps reported to Optuna.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

from hpo.context import TrialContext, untracked
from hpo.training._data import ClassificationData
from hpo.training._metrics import CM_METRICS, METRIC_NAMES, confusion_matrix, metric_tensor

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "resolve_device",
    "seed_everything",
    "train",
]

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("none", "plateau", "cosine_warm_restarts")
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")
_CHECKPOINT_FORMAT = 1
# The order of the values the loop fetches from the device once per epoch.
_ROW_METRICS = ("train_loss", "val_loss", *(f"val_{m}" for m in CM_METRICS))


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite; the trial cannot recover."""


# --------------------------------------------------------------------------------------
# Configuration


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


# --------------------------------------------------------------------------------------
# Device, seeds, data placement


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if present, else MPS if present, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested, but CUDA is not available.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r} was requested, but MPS is not available.")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global generators.

    Objectives call this before building their model so that initialization is
    reproducible; :func:`train` calls it again for dropout and friends.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass
class _Placed:
    """The data where the loop reads it: on the device, or pinned on the host for CUDA."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None
    device: torch.device
    # Pinned buffers the shuffled training set is gathered into when it stays on the host.
    shuffle_buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def shuffled_train(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # The permutation comes from a CPU generator, so the order is the same on every device.
        x, y = self.train
        perm = torch.randperm(len(y), generator=generator)
        if self.shuffle_buffers is None:
            perm = perm.to(x.device)
            return x.index_select(0, perm), y.index_select(0, perm)
        # Safe to overwrite: the previous epoch ended with a sync, so its copies are done.
        bx, by = self.shuffle_buffers
        return torch.index_select(x, 0, perm, out=bx), torch.index_select(y, 0, perm, out=by)


def _place(data: ClassificationData, device: torch.device) -> _Placed:
    splits = [(data.x_train, data.y_train), (data.x_val, data.y_val)]
    test = (data.x_test, data.y_test) if data.x_test is not None else None
    resident = device.type != "cuda"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Twice the training set: each epoch gathers a shuffled copy of it.
        resident = data.nbytes + data.x_train.nbytes + data.y_train.nbytes < free // 2
    if resident:
        # One copy per trial; afterwards batches are views, never host-to-device copies.
        moved = [(x.to(device), y.to(device)) for x, y in splits]
        test_moved = (test[0].to(device), test[1].to(device)) if test else None
        return _Placed(moved[0], moved[1], test_moved, device)
    pinned = [(x.pin_memory(), y.pin_memory()) for x, y in splits]
    test_pinned = (test[0].pin_memory(), test[1].pin_memory()) if test else None
    buffers = (
        torch.empty_like(data.x_train).pin_memory(),
        torch.empty_like(data.y_train).pin_memory(),
    )
    return _Placed(pinned[0], pinned[1], test_pinned, device, buffers)


def _configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN pick the fastest kernels (not bitwise reproducible).
        torch.backends.cudnn.benchmark = True
        # TF32 for whatever runs in fp32 (amp=False). torch >= 2.9 has a new flag and
        # refuses a mix of new and legacy settings, so use the new one where it exists.
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "tf32"
        else:
            matmul.allow_tf32 = True


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    enabled = device.type == "cuda" if config.amp == "auto" else config.amp
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    # nullcontext rather than autocast(enabled=False): it costs nothing per batch.
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
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


# --------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: TrainConfig,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    lr_at: Callable[[int], float],
    first_step: int,
) -> tuple[torch.Tensor, float]:
    """Sum of the per-sample training loss (a device tensor) and the last learning rate."""
    model.train()
    bs, accum = config.batch_size, config.grad_accum
    n_batches = math.ceil(len(y) / bs)
    copy = x.device.type != device.type  # host-resident data (pinned): copy each batch
    loss_sum = torch.zeros((), device=device)
    lr, step = optimizer.param_groups[0]["lr"], first_step
    for i in range(n_batches):
        xb, yb = x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
        if copy:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
        # the last accumulation group of an epoch may be short; average over what it has
        group = min(accum, n_batches - i // accum * accum)
        scaled = loss / group if group > 1 else loss
        (scaler.scale(scaled) if scaler else scaled).backward()
        # note: accumulating on the device; a .item() here would sync every batch
        loss_sum.add_(loss.detach(), alpha=len(yb))
        if (i + 1) % accum and i + 1 < n_batches:
            continue
        if (new_lr := lr_at(step)) != lr:
            lr = new_lr
            for g in optimizer.param_groups:
                g["lr"] = lr
        if config.grad_clip is not None:
            if scaler:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
    return loss_sum, lr


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_classes: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (no label smoothing) and confusion matrix, both on the device."""
    model.eval()
    copy = x.device.type != device.type
    loss_sum = torch.zeros((), device=device)
    cm = torch.zeros((n_classes, n_classes), dtype=torch.int64, device=device)
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if copy:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        cm += confusion_matrix(logits.argmax(dim=1), yb, n_classes)
    return loss_sum, cm


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_classes: int,
    device: str | torch.device | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Loss, accuracy and macro F1/precision/recall of ``model`` on ``(x, y)``."""
    dev = resolve_device(device)
    model.to(dev)
    loss_sum, cm = _evaluate(
        model, x, y, n_classes=n_classes, batch_size=batch_size, device=dev, amp_dtype=None
    )
    return dict(zip(("loss", *CM_METRICS), _fetch([loss_sum / len(y)], cm), strict=True))


def _fetch(means: list[torch.Tensor], cm: torch.Tensor) -> list[float]:
    """``means`` followed by the metrics of ``cm``, in one device-to-host transfer."""
    metrics = metric_tensor(cm)
    return torch.cat([torch.stack(means).to(metrics.dtype), metrics]).tolist()


# --------------------------------------------------------------------------------------
# Loop state and checkpoints


def _better(value: float, reference: float | None, maximize: bool, min_delta: float) -> bool:
    if reference is None:
        return True
    return value > reference + min_delta if maximize else value < reference - min_delta


@dataclass
class _LoopState:
    """Everything besides tensors that a resumed run needs to continue identically."""

    epoch: int = 0  # next epoch to run
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = -1
    # Early stopping: the value of the last improvement larger than min_delta.
    stop_reference: float | None = None
    bad_epochs: int = 0
    # Plateau scheduler.
    plateau_reference: float | None = None
    plateau_bad_epochs: int = 0
    lr_scale: float = 1.0

    def record(self, row: dict[str, float], ctx: TrialContext, config: TrainConfig) -> bool:
        """Append an epoch's metrics; return whether it is the new best epoch."""
        self.history.append(row)
        self.epoch += 1
        value, maximize = row[ctx.metric], ctx.direction == "maximize"
        # The best epoch is the best value, however small the gain; min_delta only
        # decides whether the gain is worth more patience.
        improved = _better(value, self.best_value, maximize, 0.0)
        if improved:
            self.best_value, self.best_epoch = value, int(row["epoch"])
        if _better(value, self.stop_reference, maximize, config.min_delta):
            self.stop_reference, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if config.scheduler == "plateau" and self.epoch > config.warmup_epochs:
            if _better(value, self.plateau_reference, maximize, 0.0):
                self.plateau_reference, self.plateau_bad_epochs = value, 0
            else:
                self.plateau_bad_epochs += 1
                if self.plateau_bad_epochs > config.plateau_patience:
                    self.lr_scale *= config.plateau_factor
                    self.plateau_bad_epochs = 0
        return improved

    def early_stopped(self, config: TrainConfig) -> bool:
        return config.patience is not None and self.bad_epochs >= config.patience


def _rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
        "shuffle": shuffle.get_state(),
    }


def _set_rng_state(state: Mapping[str, Any], shuffle: torch.Generator) -> None:
    random.setstate(state["python"])
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        # Resuming on a machine with fewer GPUs restores the ones it has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    if state["mps"] is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    shuffle.set_state(state["shuffle"])


def _atomic_save(obj: Any, path: Path) -> None:
    """Write-then-rename: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fingerprint(ctx: TrialContext) -> str:
    """Identifies the configuration a checkpoint belongs to.

    ``epochs`` is left out on purpose: nothing in the loop depends on it but where it
    stops, so a finished trial can be resumed with a larger budget and continue exactly.
    """
    params = {k: v for k, v in untracked(ctx.params).items() if k != "epochs"}
    return json.dumps(
        {"params": params, "seed": ctx.seed, "metrics": list(ctx.metrics)},
        sort_keys=True,
        default=repr,
    )


@dataclass
class _Checkpoints:
    """``best.pt`` (the best epoch's weights) and ``last.pt`` (everything to resume)."""

    directory: Path
    fingerprint: str

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def save_best(self, model: nn.Module, epoch: int, cm: torch.Tensor) -> None:
        _atomic_save(
            {
                "format": _CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "confusion_matrix": cm.cpu(),
            },
            self.best,
        )

    def save_last(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        state: _LoopState,
        shuffle: torch.Generator,
    ) -> None:
        _atomic_save(
            {
                "format": _CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "loop": dataclasses.asdict(state),
                "rng": _rng_state(shuffle),
            },
            self.last,
        )

    def _load(self, path: Path) -> dict[str, Any]:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != _CHECKPOINT_FORMAT or ckpt.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{path} belongs to a different configuration (params, seed or metrics) or "
                "checkpoint format; resume only into the directory of the same trial, or "
                "use an empty one."
            )
        return ckpt

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        shuffle: torch.Generator,
    ) -> tuple[_LoopState, dict[str, torch.Tensor], torch.Tensor]:
        """Load last.pt into the objects; return loop state, best weights and best cm."""
        last, best = self._load(self.last), self._load(self.best)
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        if scaler is not None and last["scaler"] is not None:
            scaler.load_state_dict(last["scaler"])
        _set_rng_state(last["rng"], shuffle)
        device = next(model.parameters()).device
        best_weights = {k: v.to(device) for k, v in best["model"].items()}
        return _LoopState(**last["loop"]), best_weights, best["confusion_matrix"].to(device)


# --------------------------------------------------------------------------------------
# The loop


MODEL_METRICS = ("n_params",)


def _validate_metrics(ctx: TrialContext) -> None:
    if not ctx.metrics or len(ctx.metrics) != len(ctx.directions):
        raise ValueError(
            f"`metrics` and `directions` must be non-empty and of equal length, but got "
            f"metrics={list(ctx.metrics)} and directions={list(ctx.directions)}."
        )
    # The first metric is reported per epoch; later ones may also be properties of the
    # model, such as its size for an accuracy-versus-size Pareto front.
    for i, name in enumerate(ctx.metrics):
        valid = METRIC_NAMES if i == 0 else (*METRIC_NAMES, *MODEL_METRICS)
        if name not in valid:
            raise ValueError(f"Unknown metric {name!r}; valid metrics: {list(valid)}.")
    for direction in ctx.directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"Unknown direction {direction!r}; use one of {list(DIRECTIONS)}.")


def _rounded(value: Any) -> Any:
    """Six significant digits: enough to compare trials, short in the database."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _replay_history(trial: optuna.trial.BaseTrial, ctx: TrialContext, history: list) -> None:
    """Re-report restored epochs so a resumed trial's learning curve is complete."""
    if len(ctx.metrics) > 1:
        return
    with warnings.catch_warnings():
        # Retrying the same Optuna trial: it already holds these steps and ignores them.
        warnings.filterwarnings("ignore", message="The reported value is ignored")
        for row in history:
            trial.report(row[ctx.metric], int(row["epoch"]))


def train(
    trial: optuna.trial.BaseTrial,
    ctx: TrialContext,
    model: nn.Module,
    data: ClassificationData,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` for one trial; return the best epoch's metrics.

    Per epoch: train, validate, compute metrics, report ``ctx.metric`` to the trial and
    ask the pruner (single-objective only), checkpoint, early-stop. Raises
    ``optuna.TrialPruned`` when the pruner says so, :class:`NonFiniteLossError` on a NaN or
    infinite loss and ``torch.OutOfMemoryError`` after freeing what the trial held.

    ``config`` defaults to ``TrainConfig.from_params(ctx.params)``. The global RNGs are
    seeded with ``ctx.seed`` here; call :func:`seed_everything` before building the model
    to make its initialization reproducible too. On return, ``model`` holds the best
    epoch's weights.
    """
    config = config if config is not None else TrainConfig.from_params(ctx.params)
    _validate_metrics(ctx)
    device = resolve_device(ctx.device)
    try:
        return _fit(trial, ctx, model, data, config, device)
    except torch.OutOfMemoryError as e:
        message = str(e)
    # Out of the handler, the exception's traceback (which pins the failed step's batches
    # and activations) is released; only now can the cached memory be handed back, so
    # the worker process can run its next trial.
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raise torch.OutOfMemoryError(message)


def _fit(
    trial: optuna.trial.BaseTrial,
    ctx: TrialContext,
    model: nn.Module,
    data: ClassificationData,
    config: TrainConfig,
    device: torch.device,
) -> TrainResult:
    # -- setup ---------------------------------------------------------------------------
    seed_everything(ctx.seed)
    shuffle = torch.Generator().manual_seed(ctx.seed)
    _configure_backend(device)
    model.to(device)
    amp_dtype = _amp_dtype(config, device)
    # bf16 has fp32's range; only fp16 needs loss scaling.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    optimizer = _make_optimizer(model, config)
    placed = _place(data, device)
    n_train, n_val = len(data.y_train), len(data.y_val)
    steps_per_epoch = math.ceil(math.ceil(n_train / config.batch_size) / config.grad_accum)
    state, best_weights, best_cm = _LoopState(), None, None
    ckpts = None
    if ctx.checkpoint_dir is not None:
        ckpts = _Checkpoints(Path(ctx.checkpoint_dir), _fingerprint(ctx))
        ckpts.directory.mkdir(parents=True, exist_ok=True)
        if ckpts.last.exists():
            state, best_weights, best_cm = ckpts.restore(model, optimizer, scaler, shuffle)
            _replay_history(trial, ctx, state.history)
    single_objective = len(ctx.metrics) == 1

    def lr_at(step: int) -> float:
        return learning_rate(config, step, steps_per_epoch, state.lr_scale)

    train_epoch = functools.partial(
        _train_epoch,
        model,
        optimizer,
        scaler,
        config=config,
        amp_dtype=amp_dtype,
        device=device,
        lr_at=lr_at,
    )
    evaluate_on = functools.partial(
        _evaluate,
        model,
        n_classes=data.n_classes,
        batch_size=config.eval_batch_size,
        device=device,
        amp_dtype=amp_dtype,
    )

    while state.epoch < config.epochs and not state.early_stopped(config):
        epoch, t0 = state.epoch, time.perf_counter()
        # train one epoch on a fresh shuffle
        x, y = placed.shuffled_train(shuffle)
        train_loss_sum, lr = train_epoch(x, y, first_step=epoch * steps_per_epoch)
        # validate
        val_loss_sum, cm = evaluate_on(*placed.val)
        # metrics: the epoch's one device-to-host transfer (note: a sync point)
        values = _fetch([train_loss_sum / n_train, val_loss_sum / n_val], cm)
        row = dict(zip(_ROW_METRICS, values, strict=True))
        for name in ("train_loss", "val_loss"):
            if not math.isfinite(row[name]):
                raise NonFiniteLossError(f"non-finite {name} ({row[name]}) at epoch {epoch}")
        row.update(epoch=epoch, lr=lr, epoch_time=time.perf_counter() - t0)
        # bookkeeping: best epoch, early stopping, plateau
        if state.record(row, ctx, config):
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_cm = cm
            if ckpts:
                ckpts.save_best(model, epoch, cm)
        # checkpoint after best.pt, so last.pt never refers to a best epoch not on disk
        if ckpts:
            ckpts.save_last(model, optimizer, scaler, state, shuffle)
        # report and prune: the only place the loop talks to the pruner
        if single_objective:
            trial.report(row[ctx.metric], epoch)
            if trial.should_prune():
                trial.set_user_attr("history", _rounded(state.history))
                trial.set_user_attr("epochs_run", state.epoch)
                trial.set_user_attr("stop_reason", "pruned")
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    # -- finish: best weights back into the model, test score, user attributes -----------
    if best_weights is None or best_cm is None:  # unreachable: epochs >= 1
        raise RuntimeError("training ended without running an epoch")
    model.load_state_dict(best_weights)
    test_metrics = None
    if placed.test is not None:
        test_loss_sum, test_cm = evaluate_on(*placed.test)
        test_values = _fetch([test_loss_sum / len(placed.test[1])], test_cm)
        test_metrics = dict(zip(("loss", *CM_METRICS), test_values, strict=True))
    n_params = sum(p.numel() for p in model.parameters())
    best_row = {**state.history[state.best_epoch], "n_params": float(n_params)}
    result = TrainResult(
        values=tuple(best_row[m] for m in ctx.metrics),
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stop_reason="early_stopped" if state.early_stopped(config) else "completed",
        history=state.history,
        best_metrics={k: best_row[k] for k in METRIC_NAMES},
        confusion_matrix=best_cm.tolist(),
        test_metrics=test_metrics,
        device=_device_name(device),
        n_params=n_params,
    )
    attrs: dict[str, Any] = {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stop_reason": result.stop_reason,
        **result.best_metrics,
        "confusion_matrix": result.confusion_matrix,
        "device": result.device,
        "n_params": result.n_params,
    }
    if test_metrics is not None:
        attrs.update(test_accuracy=test_metrics["accuracy"], test_f1=test_metrics["f1"])
    for key, value in attrs.items():
        trial.set_user_attr(key, _rounded(value))
    return result
