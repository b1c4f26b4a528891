"""What an hpo-style objective receives besides the Optuna trial."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrialContext:
    """Everything an objective needs to train one configuration.

    ``params`` holds the sampled hyperparameters merged over the spec's ``fixed`` values,
    so an objective reads one mapping. ``checkpoint_dir`` is stable across retries of the
    same logical trial, which is what lets a retried trial resume where the killed one
    stopped; ``None`` disables checkpoints.
    """

    params: Mapping[str, Any]
    metrics: tuple[str, ...] = ("val_loss",)
    directions: tuple[str, ...] = ("minimize",)
    checkpoint_dir: Path | None = None
    device: str | None = None
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The metric that is reported per epoch, pruned on and early-stopped on."""
        return self.metrics[0]

    @property
    def direction(self) -> str:
        return self.directions[0]
