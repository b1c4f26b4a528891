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

import functools
import gc
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from torch import nn

from hpo.context import TrialContext
from hpo.training._checkpoints import Checkpoints, LoopState, fingerprint
from hpo.training._config import DIRECTIONS, NonFiniteLossError, TrainConfig, TrainResult
from hpo.training._data import ClassificationData
from hpo.training._device import (
    autocast,
    autocast_dtype,
    configure_backend,
    device_name,
    place,
    resolve_device,
    seed_everything,
)
from hpo.training._metrics import CM_METRICS, METRIC_NAMES, confusion_matrix, metric_tensor
from hpo.training._optim import learning_rate, make_optimizer

__all__ = ["evaluate", "train"]

# The order of the values the loop fetches from the device once per epoch.
_ROW_METRICS = ("train_loss", "val_loss", *(f"val_{m}" for m in CM_METRICS))


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
        with autocast(device, amp_dtype):
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
        with autocast(device, amp_dtype):
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
    configure_backend(device)
    model.to(device)
    amp_dtype = autocast_dtype(config, device)
    # bf16 has fp32's range; only fp16 needs loss scaling.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    optimizer = make_optimizer(model, config)
    placed = place(data, device)
    n_train, n_val = len(data.y_train), len(data.y_val)
    steps_per_epoch = math.ceil(math.ceil(n_train / config.batch_size) / config.grad_accum)
    state, best_weights, best_cm = LoopState(), None, None
    ckpts = None
    if ctx.checkpoint_dir is not None:
        ckpts = Checkpoints(Path(ctx.checkpoint_dir), fingerprint(ctx))
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
        device=device_name(device),
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
