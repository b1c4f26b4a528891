"""What an hpo-style objective receives besides the Optuna trial."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class TrackedParams(Mapping[str, Any]):
    """A trial's params that remember which keys the objective read.

    A searched parameter the objective never reads would be searched to no effect (a spec's
    ``learning_rate`` for a loop that reads ``lr``); the trial process hands the objective
    this mapping and, when the trial finishes, names any such key. Reading means getting the
    value: ``params[k]``, ``params.get(k)``, ``params.items()``, ``dict(params)``; asking
    ``k in params`` does not count, so code that looks for optional keys does not hide one.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._data = dict(params)
        self.read: set[str] = set()
        self.asked: set[str] = set()  # keys looked up, present or not: for "did you mean"

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        value = self._data[key]
        self.read.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        if key in self._data:
            self.read.add(key)
            return self._data[key]
        return default

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self._data,))  # pickled (a checkpoint, a pipe) as the plain dict


def untracked(params: Mapping[str, Any]) -> dict[str, Any]:
    """All of ``params`` without counting them as read (for bookkeeping, not training)."""
    return dict(params._data) if isinstance(params, TrackedParams) else dict(params)
