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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch
from torch import nn

from hpo.context import TrialContext
from hpo.training._batches import Batch, BatchSource, LoaderData, batch_len, split_batch, to_device
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
from hpo.training._metrics import CM_METRICS, MetricAccumulator, MetricFn
from hpo.training._optim import learning_rate, make_optimizer
from hpo.training._tasks import LossFn, make_loss, metric_names, valid_metric

__all__ = ["Step", "default_step", "evaluate", "train"]


class Step(Protocol):
    """Turns a batch into ``(outputs, targets)``: the model's call is yours to make.

    ``train(..., step=lambda model, b: (model(b["features"]), b["labels"]))`` feeds a model
    a dict batch; ``model(b["x"], b["mask"])`` feeds it several inputs. Runs under autocast,
    in training and in evaluation; the loop computes the loss and metrics from its result.
    """

    def __call__(self, model: nn.Module, batch: Batch, /) -> tuple[torch.Tensor, torch.Tensor]: ...


def default_step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(*inputs, targets)`` tuples and lists: ``model(*inputs), targets``."""
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        *inputs, targets = batch
        return model(*inputs), targets
    raise TypeError(
        f"The default step takes (inputs, targets) batches, but got a {type(batch).__name__}; "
        "pass `step=lambda model, batch: (model(batch['features']), batch['labels'])` "
        "(or whatever your batch holds) to `train`."
    )


# --------------------------------------------------------------------------------------
# One optimizer step, one epoch of training, one pass of evaluation


@dataclass
class _Stepper:
    """What every training step needs; ``state.micro_splits`` survives across epochs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    config: TrainConfig
    step: Step
    loss_fn: LossFn
    amp_dtype: torch.dtype | None
    device: torch.device
    state: LoopState
    on_oom: Callable[[], None]

    def _accumulate(self, group: list[Batch], loss_sum: torch.Tensor) -> None:
        """Forward and backward over ``group``, each batch in ``state.micro_splits`` parts.

        Each part's mean loss is weighted by its share of its batch and by ``1/len(group)``,
        so the gradient is the same however the batches are cut.
        """
        splits = self.state.micro_splits
        for batch in group:
            n_batch = batch_len(batch)
            parts = [batch] if splits == 1 else split_batch(batch, math.ceil(n_batch / splits))
            for part in parts:
                with autocast(self.device, self.amp_dtype):
                    outputs, targets = self.step(self.model, part)
                loss = self.loss_fn(outputs.float(), targets)
                n = len(targets)
                weight = n / (n_batch * len(group))
                scaled = loss * weight if weight != 1 else loss
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                # note: accumulating on the device; a .item() here would sync every batch
                loss_sum.add_(loss.detach(), alpha=n)

    def optimizer_step(self, group: list[Batch], loss_sum: torch.Tensor) -> None:
        """One optimizer step over ``group``; halves the micro-batch on out-of-memory."""
        while True:
            before = loss_sum.clone() if self.config.oom_fallback else loss_sum
            try:
                self._accumulate(group, loss_sum)
                break
            except torch.OutOfMemoryError as e:
                if not self.config.oom_fallback:
                    raise
                reason = str(e).splitlines()[0] if str(e) else "out of memory"
            # Out of the handler, the failed step's activations are unreferenced: free them.
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum.copy_(before)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._halve(max(batch_len(b) for b in group), reason)
        config = self.config
        if config.grad_clip is not None:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _halve(self, n_batch: int, reason: str) -> None:
        state, floor = self.state, self.config.min_micro_batch
        micro = math.ceil(n_batch / state.micro_splits)
        half = math.ceil(n_batch / (2 * state.micro_splits))
        event = {"epoch": state.epoch, "micro_batch": micro, "reason": reason}
        if micro <= 1 or half < floor:
            state.oom_events.append({**event, "gave_up": True})
            self.on_oom()
            raise torch.OutOfMemoryError(
                f"out of memory at micro-batch {micro}; halving it would go below "
                f"min_micro_batch={floor}: {reason}"
            )
        state.micro_splits *= 2
        state.oom_events.append({**event, "new_micro_batch": half})
        self.on_oom()


def _groups(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    """The batches of each optimizer step (the last group of an epoch may be short)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _train_epoch(
    stepper: _Stepper,
    batches: Iterator[Batch],
    *,
    on_device: bool,
    lr_at: Callable[[int], float],
    first_step: int,
) -> tuple[torch.Tensor, int, float]:
    """Summed per-sample training loss (device tensor), samples seen, last learning rate."""
    stepper.model.train()
    optimizer, device = stepper.optimizer, stepper.device
    loss_sum = torch.zeros((), device=device)
    n_seen, lr, step = 0, optimizer.param_groups[0]["lr"], first_step
    if not on_device:
        batches = (to_device(b, device) for b in batches)
    for group in _groups(batches, stepper.config.grad_accum):
        if (new_lr := lr_at(step)) != lr:
            lr = new_lr
            for g in optimizer.param_groups:
                g["lr"] = lr
        stepper.optimizer_step(group, loss_sum)
        n_seen += sum(batch_len(b) for b in group)
        step += 1
    return loss_sum, n_seen, lr


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    metrics: MetricAccumulator,
    *,
    step: Step,
    loss_fn: LossFn,
    on_device: bool,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Summed loss (no label smoothing), on the device; ``metrics`` accumulates the rest."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    for batch in batches:
        if not on_device:
            batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            outputs, targets = step(model, batch)
        outputs = outputs.float()
        loss_sum += loss_fn(outputs, targets) * len(targets)
        metrics.update(outputs, targets)
    return loss_sum


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
    loss_sum = _evaluate(
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
        raise ValueError(
            f"Unknown metric {name!r} for task {task!r}; valid metrics: {list(valid)}."
        )
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

    stepper = _Stepper(
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

    def evaluate_on(split: str) -> tuple[torch.Tensor, MetricAccumulator, int] | None:
        batches = source.eval_batches(split)
        if batches is None:
            return None
        acc = MetricAccumulator(config.task, device, n_classes=n_classes, user=user_metrics)
        loss_sum = _evaluate(
            model,
            batches,
            acc,
            step=step,
            loss_fn=eval_loss,
            on_device=source.on_device,
            device=device,
            amp_dtype=amp_dtype,
        )
        return loss_sum, acc, acc.n

    while state.epoch < config.epochs and not state.early_stopped(config):
        epoch, t0 = state.epoch, time.perf_counter()
        # train one epoch on a fresh shuffle
        train_loss_sum, n_train, lr = _train_epoch(
            stepper,
            source.train_batches(epoch),
            on_device=source.on_device,
            lr_at=lr_at,
            first_step=epoch * steps_per_epoch,
        )
        # validate
        val = evaluate_on("val")
        assert val is not None
        val_loss_sum, val_metrics, n_val = val
        # metrics: the epoch's one device-to-host transfer (note: a sync point)
        values = _fetch([train_loss_sum / max(n_train, 1), val_loss_sum / n_val], val_metrics)
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
    return _finish(trial, ctx, model, config, device, state, best_cm, evaluate_on("test"))


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
    test: tuple[torch.Tensor, MetricAccumulator, int] | None,
) -> TrainResult:
    test_metrics = None
    if test is not None:
        test_loss_sum, test_acc, n_test = test
        test_values = _fetch([test_loss_sum / n_test], test_acc)
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
