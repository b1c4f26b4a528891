"""One optimizer step, one epoch of training, one pass of evaluation.

The step hook turns a batch into ``(outputs, targets)``; :class:`Stepper` accumulates
gradients over a group of batches, cut into micro-batches, and halves the micro-batch on
an out-of-memory error (same effective batch: the parts' losses are weighted by their
share).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from hpo.training._batches import Batch, batch_len, split_batch, to_device
from hpo.training._checkpoints import LoopState
from hpo.training._config import TrainConfig
from hpo.training._device import autocast
from hpo.training._metrics import MetricAccumulator
from hpo.training._tasks import LossFn

__all__ = ["Step", "Stepper", "default_step", "evaluate_batches", "train_epoch"]


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
class Stepper:
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

    def _accumulate(self, group: list[Batch]) -> list[tuple[torch.Tensor, int]]:
        """Forward and backward over ``group``, each batch in ``state.micro_splits`` parts.

        Each part's mean loss is weighted by its share of its batch and by ``1/len(group)``,
        so the gradient is the same however the batches are cut. Returns each part's
        detached loss and size, added to the epoch's sum only once the whole group is done.
        """
        losses: list[tuple[torch.Tensor, int]] = []
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
                losses.append((loss.detach(), n))
        return losses

    def optimizer_step(self, group: list[Batch], loss_sum: torch.Tensor) -> None:
        """One optimizer step over ``group``; halves the micro-batch on out-of-memory."""
        while True:
            try:
                losses = self._accumulate(group)
                break
            except torch.OutOfMemoryError as e:
                if not self.config.oom_fallback:
                    raise
                reason = str(e).splitlines()[0] if str(e) else "out of memory"
            # Out of the handler, the failed step's activations are unreferenced: free them.
            self.optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._halve(max(batch_len(b) for b in group), reason)
        for loss, n in losses:
            # note: accumulating on the device; a .item() here would sync every batch
            loss_sum.add_(loss, alpha=n)
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


def train_epoch(
    stepper: Stepper,
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
def evaluate_batches(
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
