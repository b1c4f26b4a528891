"""hpo's incremental TPE and Hyperband decide exactly as Optuna's own, trial for trial.

Each test drives two studies through the same history, one with Optuna's class and one with
hpo's, and compares every sample and every pruning decision. Trials finish out of order, some
stay running (the constant liar sees them), pruned trials report NaN or nothing, and ties in
value are common, so every rule of Optuna's split and of its bracket assignment is exercised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hpo._cache import WorkerStorage
from hpo._hyperband import HyperbandPruner
from hpo._tpe import IncrementalTPESampler

SPACE = {
    "x": FloatDistribution(-5, 5),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "units": IntDistribution(8, 512, log=True),
    "q": FloatDistribution(0, 1, step=0.25),
    "act": CategoricalDistribution(["relu", "tanh", "gelu"]),
}


def _drive(
    make_sampler: Callable[[], optuna.samplers.BaseSampler],
    make_pruner: Callable[[], optuna.pruners.BasePruner],
    direction: str,
    n_trials: int,
    seed: int,
    storage: optuna.storages.BaseStorage | None = None,
) -> list[tuple[Any, ...]]:
    """Run a scripted study and return what the sampler and the pruner decided."""
    study = optuna.create_study(
        direction=direction,
        sampler=make_sampler(),
        pruner=make_pruner(),
        study_name="s",
        storage=storage,
    )
    script = random.Random(seed)  # the same script for both studies: it never sees a decision
    running: list[optuna.Trial] = []
    log: list[tuple[Any, ...]] = []
    for i in range(n_trials):
        trial = study.ask(SPACE)
        log.append(("params", i, tuple(sorted(trial.params.items()))))
        fate = script.random()
        if fate < 0.15:
            running.append(trial)  # finishes later, out of order
            continue
        _finish(study, trial, script, fate, log)
        if running and script.random() < 0.4:
            _finish(study, running.pop(0), script, script.random(), log)
    return log


def _finish(
    study: optuna.Study,
    trial: optuna.Trial,
    script: random.Random,
    fate: float,
    log: list[tuple[Any, ...]],
) -> None:
    if fate < 0.2:
        study.tell(trial, state=TrialState.PRUNED)  # pruned before any report
        return
    base = round(abs(trial.params["x"]) + script.choice([0.0, 0.5, 1.0]), 1)  # many ties
    for step in range(9):
        value = math.nan if fate > 0.95 and step == 3 else base / (step + 1)
        trial.report(value, step)
        pruned = trial.should_prune()
        log.append(("prune", trial.number, step, pruned))
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            return
    study.tell(trial, base)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize(
    "options",
    [
        {"constant_liar": True, "multivariate": True},
        {"constant_liar": False, "multivariate": False},
        {
            "constant_liar": True,
            "multivariate": True,
            "n_startup_trials": 3,
            "gamma": lambda n: n // 2,
        },
    ],
    ids=["liar-multivariate", "independent", "half-below"],
)
def test_incremental_tpe_samples_what_optuna_samples(
    direction: str, options: dict[str, Any]
) -> None:
    def pruner() -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9)

    ours = _drive(lambda: IncrementalTPESampler(seed=3, **options), pruner, direction, 120, 7)
    theirs = _drive(
        lambda: optuna.samplers.TPESampler(seed=3, **options), pruner, direction, 120, 7
    )
    assert [e for e in ours if e[0] == "prune" and e[3]], "the script prunes nothing"
    assert ours == theirs


@pytest.mark.parametrize(
    "options",
    [
        {"min_resource": 1, "max_resource": 9},
        {"min_resource": 2, "max_resource": 9, "reduction_factor": 2},
        {"min_resource": 1, "max_resource": "auto", "reduction_factor": 3},
    ],
)
def test_hyperband_prunes_what_optuna_prunes(options: dict[str, Any]) -> None:
    def sampler() -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=5)

    ours = _drive(sampler, lambda: HyperbandPruner(**options), "minimize", 300, 11)
    theirs = _drive(sampler, lambda: optuna.pruners.HyperbandPruner(**options), "minimize", 300, 11)
    decisions = [e for e in ours if e[0] == "prune"]
    assert any(e[3] for e in decisions) and not all(e[3] for e in decisions)
    assert ours == theirs


def test_same_decisions_through_the_workers_storage(tmp_path: Path) -> None:
    """The worker's storage (its cached, batched view of a real database) changes nothing."""

    def storage(name: str) -> optuna.storages.BaseStorage:
        return WorkerStorage(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / name}.db"))

    def tpe(cls: type[optuna.samplers.TPESampler]) -> Callable[[], optuna.samplers.BaseSampler]:
        return lambda: cls(seed=3, constant_liar=True, multivariate=True, n_startup_trials=5)

    ours = _drive(
        tpe(IncrementalTPESampler),
        lambda: HyperbandPruner(min_resource=1, max_resource=9),
        "minimize",
        60,
        7,
        storage("ours"),
    )
    theirs = _drive(
        tpe(optuna.samplers.TPESampler),
        lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9),
        "minimize",
        60,
        7,
        storage("theirs"),
    )
    assert [e for e in ours if e[0] == "prune" and e[3]], "the script prunes nothing"
    assert ours == theirs
