"""A spec's search space as Optuna distributions, and a grid's points in order."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from hpo.spec._model import ParamSpec, StudySpec


def distribution(p: ParamSpec) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if p.type == "categorical":
        return CategoricalDistribution(list(p.choices))
    assert p.low is not None and p.high is not None  # the spec's loader guarantees bounds
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)


def distributions(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    return {p.name: distribution(p) for p in spec.search_space}


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every grid point in a fixed order: the k-th logical trial of a grid is point k."""
    names = [p.name for p in spec.search_space]
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(p.grid_values() for p in spec.search_space))
    ]
