"""The spec's typed model: frozen dataclasses, a leaf that imports nothing of hpo."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PARAM_TYPES = ("float", "int", "categorical")
# A grid larger than this is almost always a typo (a float step of 1e-6, say) and would
# only fill the database with WAITING rows.
MAX_GRID_POINTS = 100_000
# Fixed params and sampler/pruner options are stored with the study; more is a mistake.
MAX_PLAIN_ITEMS = 10_000
Scalar = None | bool | int | float | str


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()
    values: tuple[Scalar, ...] = ()

    def grid_count(self) -> int:
        """How many points :meth:`grid_values` has, without building them."""
        if self.values or self.type == "categorical":
            return len(self.values or self.choices)
        low, _, step = self._grid_range()
        return int((Decimal(str(self.high)) - low) // step) + 1

    def grid_values(self) -> tuple[Scalar, ...]:
        """The points a grid search visits for this parameter."""
        if self.values or self.type == "categorical":
            return self.values or self.choices
        low, cast, step = self._grid_range()
        # Decimal arithmetic, as Optuna's FloatDistribution uses to adjust `high`, so every
        # point is exactly low + i * step and lies inside the distribution.
        return tuple(cast(low + i * step) for i in range(self.grid_count()))

    def _grid_range(self) -> tuple[Decimal, Callable[[Decimal], Scalar], Decimal]:
        assert self.low is not None and self.high is not None  # guaranteed by validation
        step = Decimal(str(self.step if self.step is not None else 1))
        return Decimal(str(self.low)), int if self.type == "int" else float, step


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None


@dataclass(frozen=True)
class BudgetSpec:
    n_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None


@dataclass(frozen=True)
class RetrySpec:
    """How killed trials are detected and retried."""

    max_retries: int = 2
    heartbeat_interval: int = 10
    grace_period: int = 30


@dataclass(frozen=True)
class StudySpec:
    name: str
    objective: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    search_space: tuple[ParamSpec, ...]
    fixed: Mapping[str, Any]
    sampler: SamplerSpec
    pruner: PrunerSpec
    budget: BudgetSpec
    retry: RetrySpec
    storage: str | None
    checkpoint_dir: str
    description: str = ""
    source: str = "<spec>"

    @property
    def is_grid(self) -> bool:
        return self.sampler.type == "grid"

    @property
    def n_trials(self) -> int | None:
        """The study-wide budget; a grid defaults to its size."""
        if self.budget.n_trials is not None:
            return self.budget.n_trials
        return self.grid_size() if self.is_grid else None

    def trial_seed(self, logical_number: int) -> int:
        """A trial's seed: the same for its retries and its retrain, distinct across trials."""
        return (self.sampler.seed or 0) * 1_000_003 + logical_number

    def grid_size(self) -> int:
        return math.prod(p.grid_count() for p in self.search_space)

    def to_dict(self) -> dict[str, Any]:
        """The normalized spec, as stored with the study and compared on resume."""
        space: dict[str, Any] = {}
        for p in self.search_space:
            entry: dict[str, Any] = {"type": p.type}
            if p.type == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry.update(low=p.low, high=p.high, log=p.log)
                if p.step is not None:
                    entry["step"] = p.step
            if p.values:
                entry["values"] = list(p.values)
            space[p.name] = entry
        return {
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            "objective": self.objective,
            "metrics": list(self.metrics),
            "directions": list(self.directions),
            "search_space": space,
            "fixed": dict(self.fixed),
            "sampler": {
                "type": self.sampler.type,
                "seed": self.sampler.seed,
                **self.sampler.options,
            },
            "pruner": pruner_dict(self.pruner),
            "budget": {
                "n_trials": self.budget.n_trials,
                "timeout": self.budget.timeout,
                "trial_timeout": self.budget.trial_timeout,
            },
            "retry": {
                "max_retries": self.retry.max_retries,
                "heartbeat_interval": self.retry.heartbeat_interval,
                "grace_period": self.retry.grace_period,
            },
            "checkpoint_dir": self.checkpoint_dir,
        }


def pruner_dict(p: PrunerSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"type": p.type, **p.options}
    if p.wrapped is not None:
        d["wrapped"] = pruner_dict(p.wrapped)
    return d
