"""The one training loop: an objective hands it a model, data and hyperparameters.

:func:`train` runs epochs of train -> validate -> metrics -> report/prune -> early stop, and
checkpoints so that a retried trial resumes where the killed one stopped and ends with the
same result as an uninterrupted run.

Speed comes from doing less, not from tricks: in-memory data are tensors batched by slicing
(no ``DataLoader``, no per-sample collation), kept resident on the GPU when they fit;
``DataLoader`` batches are moved with ``non_blocking`` from pinned memory. The loop
synchronizes with the device once per epoch, not once per batch. On CUDA it trains in bf16
(or fp16 with a ``GradScaler``) autocast with fused optimizers.

Epochs are numbered from 0, like the steps reported to Optuna.
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from hpo.context import TrialContext
from hpo.errors import StopStudy
from hpo.training._batches import Batch, BatchSource, LoaderData
from hpo.training._checkpoints import Checkpoints, LoopState, fingerprint
from hpo.training._config import DIRECTIONS, NonFiniteLossError, TrainConfig, TrainResult
from hpo.training._data import ClassificationData
from hpo.training._device import (
    autocast_dtype,
    configure_backend,
    device_name,
    place,
    resolve_device,
    seed_everything,
)
from hpo.training._metrics import CM_METRICS, MetricAccumulator, MetricFn
from hpo.training._optim import learning_rate, make_optimizer
from hpo.training._step import Step, Stepper, default_step, evaluate_batches, train_epoch
from hpo.training._tasks import make_loss, metric_names, valid_metric

__all__ = ["evaluate", "train"]


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
    xd, yd = x.to(dev), y.to(dev)
    batches = [
        (xd[i : i + batch_size], yd[i : i + batch_size]) for i in range(0, len(y), batch_size)
    ]
    acc = MetricAccumulator("classification", dev, n_classes=n_classes)
    loss_fn = make_loss(TrainConfig(), dev, training=False)
    loss_sum = evaluate_batches(
        model,
        batches,
        acc,
        step=default_step,
        loss_fn=loss_fn,
        on_device=True,
        device=dev,
        amp_dtype=None,
    )
    return dict(zip(("loss", *CM_METRICS), _fetch([loss_sum / len(y)], acc), strict=True))


def _fetch(means: list[torch.Tensor], metrics: MetricAccumulator) -> list[float]:
    """``means`` followed by ``metrics``' values, in one device-to-host transfer."""
    values = metrics.values()
    return torch.cat([torch.stack(means).to(values.dtype), values]).tolist()


# --------------------------------------------------------------------------------------
# The loop


MODEL_METRICS = ("n_params",)


def _validate_metrics(ctx: TrialContext, task: str, user: Iterable[str]) -> None:
    if not ctx.metrics or len(ctx.metrics) != len(ctx.directions):
        raise ValueError(
            f"`metrics` and `directions` must be non-empty and of equal length, but got "
            f"metrics={list(ctx.metrics)} and directions={list(ctx.directions)}."
        )
    # The first metric is reported per epoch; later ones may also be properties of the
    # model, such as its size for an accuracy-versus-size Pareto front.
    user = tuple(user)
    for i, name in enumerate(ctx.metrics):
        if valid_metric(name, task, user) or (i > 0 and name in MODEL_METRICS):
            continue
        valid = metric_names(task, user) + (MODEL_METRICS if i else ())
        raise StopStudy(f"Unknown metric {name!r} for task {task!r}; valid metrics: {list(valid)}.")
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
    data: ClassificationData | LoaderData,
    config: TrainConfig | None = None,
    *,
    step: Step | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` for one trial; return the best epoch's metrics.

    Per epoch: train, validate, compute metrics, report ``ctx.metric`` to the trial and
    ask the pruner (single-objective only), checkpoint, early-stop. Raises
    ``optuna.TrialPruned`` when the pruner says so, :class:`NonFiniteLossError` on a NaN or
    infinite loss and ``torch.OutOfMemoryError`` (after freeing what the trial held) when
    even the smallest micro-batch ``config.min_micro_batch`` does not fit.

    ``data`` is in-memory tensors (:class:`ClassificationData`, the fast path) or
    :class:`LoaderData` (datasets or your ``DataLoader``s; see
    :mod:`hpo.training._batches` for what a resumed trial replays exactly). ``step`` turns
    a batch into ``(outputs, targets)`` (default: ``model(*inputs), targets`` for tuple
    batches). ``metrics`` are extra validation metrics ``name -> fn(outputs, targets)``
    returning the batch's mean; they appear as ``val_<name>`` and ``ctx.metric`` may name
    them. The loss must be a batch mean too: the loop weights it by the batch's share.

    ``config`` defaults to ``TrainConfig.from_params(ctx.params)``. The global RNGs are
    seeded with ``ctx.seed`` here; call :func:`seed_everything` before building the model
    to make its initialization reproducible too. On return, ``model`` holds the best
    epoch's weights.
    """
    config = config if config is not None else TrainConfig.from_params(ctx.params)
    _validate_metrics(ctx, config.task, metrics or {})
    device = resolve_device(ctx.device)
    try:
        return _fit(trial, ctx, model, data, config, device, step or default_step, metrics)
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
    data: ClassificationData | LoaderData,
    config: TrainConfig,
    device: torch.device,
    step: Step,
    user_metrics: Mapping[str, MetricFn] | None,
) -> TrainResult:
    # -- setup ---------------------------------------------------------------------------
    seed_everything(ctx.seed)
    configure_backend(device)
    model.to(device)
    amp_dtype = autocast_dtype(config, device)
    # bf16 has fp32's range; only fp16 needs loss scaling.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    optimizer = make_optimizer(model, config)
    n_classes = data.n_classes if isinstance(data, ClassificationData) else None
    source = BatchSource(
        place(data, device) if isinstance(data, ClassificationData) else data,
        seed=ctx.seed,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        device=device,
    )
    steps_per_epoch = _steps_per_epoch(source.n_batches, config)
    state: LoopState = LoopState()
    best_weights: dict[str, torch.Tensor] | None = None
    best_cm: torch.Tensor | None = None
    ckpts = None
    if ctx.checkpoint_dir is not None:
        ckpts = Checkpoints(Path(ctx.checkpoint_dir), fingerprint(ctx))
        ckpts.directory.mkdir(parents=True, exist_ok=True)
        if ckpts.last.exists():
            state, best_weights, best_cm = ckpts.restore(
                model, optimizer, scaler, source.generators
            )
            _replay_history(trial, ctx, state.history)
    single_objective = len(ctx.metrics) == 1

    def lr_at(step: int) -> float:
        return learning_rate(config, step, steps_per_epoch, state.lr_scale)

    def record_oom() -> None:
        trial.set_user_attr("oom_fallback", _rounded(state.oom_events))

    stepper = Stepper(
        model,
        optimizer,
        scaler,
        config,
        step,
        make_loss(config, device, training=True),
        amp_dtype,
        device,
        state,
        record_oom,
    )
    eval_loss = make_loss(config, device, training=False)

    def evaluate_on(batches: Iterable[Batch]) -> tuple[torch.Tensor, MetricAccumulator]:
        acc = MetricAccumulator(config.task, device, n_classes=n_classes, user=user_metrics)
        loss_sum = evaluate_batches(
            model,
            batches,
            acc,
            step=step,
            loss_fn=eval_loss,
            on_device=source.on_device,
            device=device,
            amp_dtype=amp_dtype,
        )
        return loss_sum, acc

    while state.epoch < config.epochs and not state.early_stopped(config):
        epoch, t0 = state.epoch, time.perf_counter()
        # train one epoch on a fresh shuffle
        train_loss_sum, n_train, lr = train_epoch(
            stepper,
            source.train_batches(epoch),
            on_device=source.on_device,
            lr_at=lr_at,
            first_step=epoch * steps_per_epoch,
        )
        # validate
        val_loss_sum, val_metrics = evaluate_on(source.val_batches())
        # metrics: the epoch's one device-to-host transfer (note: a sync point)
        means = [train_loss_sum / max(n_train, 1), val_loss_sum / val_metrics.n]
        values = _fetch(means, val_metrics)
        names = ("train_loss", "val_loss", *(f"val_{m}" for m in val_metrics.names))
        row = dict(zip(names, values, strict=True))
        for name in ("train_loss", "val_loss"):
            if not math.isfinite(row[name]):
                raise NonFiniteLossError(f"non-finite {name} ({row[name]}) at epoch {epoch}")
        row.update(epoch=epoch, lr=lr, epoch_time=time.perf_counter() - t0)
        # bookkeeping: best epoch, early stopping, plateau
        if state.record(row, ctx, config):
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_cm = val_metrics.cm
            if ckpts:
                ckpts.save_best(model, epoch, best_cm)
        # checkpoint after best.pt, so last.pt never refers to a best epoch not on disk
        if ckpts:
            ckpts.save_last(model, optimizer, scaler, state, source.generators)
        # report and prune: the only place the loop talks to the pruner
        if single_objective:
            trial.report(row[ctx.metric], epoch)
            if trial.should_prune():
                trial.set_user_attr("history", _rounded(state.history))
                trial.set_user_attr("epochs_run", state.epoch)
                trial.set_user_attr("stop_reason", "pruned")
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    # -- finish: best weights back into the model, test score, user attributes -----------
    if best_weights is None:  # unreachable: epochs >= 1
        raise RuntimeError("training ended without running an epoch")
    model.load_state_dict(best_weights)
    test_batches = source.test_batches()
    test = evaluate_on(test_batches) if test_batches is not None else None
    return _finish(trial, ctx, model, config, device, state, best_cm, test)


def _steps_per_epoch(n_batches: int | None, config: TrainConfig) -> int:
    if n_batches is not None:
        return math.ceil(n_batches / config.grad_accum)
    if config.warmup_epochs or config.scheduler in ("cosine_warm_restarts", "onecycle"):
        raise ValueError(
            f"`scheduler`={config.scheduler!r} and `warmup_epochs`={config.warmup_epochs} "
            "count optimizer steps per epoch, but the training data have no length; give "
            "your IterableDataset a __len__."
        )
    return 1  # unused: the learning rate is constant


def _finish(
    trial: optuna.trial.BaseTrial,
    ctx: TrialContext,
    model: nn.Module,
    config: TrainConfig,
    device: torch.device,
    state: LoopState,
    best_cm: torch.Tensor | None,
    test: tuple[torch.Tensor, MetricAccumulator] | None,
) -> TrainResult:
    test_metrics = None
    if test is not None:
        test_loss_sum, test_acc = test
        test_values = _fetch([test_loss_sum / test_acc.n], test_acc)
        test_metrics = dict(zip(("loss", *test_acc.names), test_values, strict=True))
    n_params = sum(p.numel() for p in model.parameters())
    best_row = {**state.history[state.best_epoch], "n_params": float(n_params)}
    result = TrainResult(
        values=tuple(best_row[m] for m in ctx.metrics),
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stop_reason="early_stopped" if state.early_stopped(config) else "completed",
        history=state.history,
        best_metrics={
            k: v
            for k, v in best_row.items()
            if k not in ("epoch", "lr", "epoch_time", *MODEL_METRICS)
        },
        confusion_matrix=best_cm.tolist() if best_cm is not None else None,
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
        "device": result.device,
        "n_params": result.n_params,
    }
    if result.confusion_matrix is not None:
        attrs["confusion_matrix"] = result.confusion_matrix
    if test_metrics is not None:
        attrs.update({f"test_{k}": v for k, v in test_metrics.items() if k != "loss"})
    for key, value in attrs.items():
        trial.set_user_attr(key, _rounded(value))
    return result
