"""Checkpoints of a trial: model, optimizer, loop state and every RNG state, written atomically.

A retried trial resumes from ``last.pt`` and ends with the same result as an uninterrupted run;
``best.pt`` holds the best epoch's weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from hpo.context import TrialContext, untracked
from hpo.training._config import TrainConfig

_CHECKPOINT_FORMAT = 2


def better(value: float, reference: float | None, maximize: bool, min_delta: float) -> bool:
    if reference is None:
        return True
    return value > reference + min_delta if maximize else value < reference - min_delta


@dataclass
class LoopState:
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
    # Out-of-memory fallback: each batch is cut into this many micro-batches from now on.
    micro_splits: int = 1
    oom_events: list[dict[str, Any]] = field(default_factory=list)

    def record(self, row: dict[str, float], ctx: TrialContext, config: TrainConfig) -> bool:
        """Append an epoch's metrics; return whether it is the new best epoch."""
        self.history.append(row)
        self.epoch += 1
        value, maximize = row[ctx.metric], ctx.direction == "maximize"
        # The best epoch is the best value, however small the gain; min_delta only
        # decides whether the gain is worth more patience.
        improved = better(value, self.best_value, maximize, 0.0)
        if improved:
            self.best_value, self.best_epoch = value, int(row["epoch"])
        if better(value, self.stop_reference, maximize, config.min_delta):
            self.stop_reference, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if config.scheduler == "plateau" and self.epoch > config.warmup_epochs:
            if better(value, self.plateau_reference, maximize, 0.0):
                self.plateau_reference, self.plateau_bad_epochs = value, 0
            else:
                self.plateau_bad_epochs += 1
                if self.plateau_bad_epochs > config.plateau_patience:
                    self.lr_scale *= config.plateau_factor
                    self.plateau_bad_epochs = 0
        return improved

    def early_stopped(self, config: TrainConfig) -> bool:
        return config.patience is not None and self.bad_epochs >= config.patience


def _rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    _, key, pos, has_gauss, cached = cast(
        "tuple[str, np.ndarray, int, int, float]", np.random.get_state()
    )
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
        "shuffle": [g.get_state() for g in generators],
    }


def _set_rng_state(state: Mapping[str, Any], generators: list[torch.Generator]) -> None:
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
    for generator, saved in zip(generators, state["shuffle"], strict=True):
        generator.set_state(saved)


def _atomic_save(obj: Any, path: Path) -> None:
    """Write-then-rename: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fingerprint(ctx: TrialContext) -> str:
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
class Checkpoints:
    """``best.pt`` (the best epoch's weights) and ``last.pt`` (everything to resume)."""

    directory: Path
    fingerprint: str

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def save_best(self, model: nn.Module, epoch: int, cm: torch.Tensor | None) -> None:
        _atomic_save(
            {
                "format": _CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "confusion_matrix": cm.cpu() if cm is not None else None,
            },
            self.best,
        )

    def save_last(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        state: LoopState,
        generators: list[torch.Generator],
    ) -> None:
        _atomic_save(
            {
                "format": _CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "loop": dataclasses.asdict(state),
                "rng": _rng_state(generators),
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
        generators: list[torch.Generator],
    ) -> tuple[LoopState, dict[str, torch.Tensor], torch.Tensor | None]:
        """Load last.pt into the objects; return loop state, best weights and best cm."""
        last, best = self._load(self.last), self._load(self.best)
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        if scaler is not None and last["scaler"] is not None:
            scaler.load_state_dict(last["scaler"])
        _set_rng_state(last["rng"], generators)
        device = next(model.parameters()).device
        best_weights = {k: v.to(device) for k, v in best["model"].items()}
        cm = best["confusion_matrix"]
        return LoopState(**last["loop"]), best_weights, cm.to(device) if cm is not None else None
