"""Objectives and trial data for the growth and worker-memory benchmarks.

One search space (the 4 parameters of ``coordination.py``), one value function and one
learning curve, shared by everything that writes trials: the benchmarks' prefill, the plain
Optuna process per trial, and hpo's objectives (``growth_objective:objective`` with 10
report/should_prune steps, ``growth_objective:light`` with 3). None of them sleeps, so all the
time a trial takes is coordination: sampling, pruning, storage.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

if TYPE_CHECKING:
    from hpo.context import TrialContext

STEPS = 10  # intermediate values per trial, steps 0..9 (Hyperband max_resource 10)
LIGHT_STEPS = 3
OPTIMIZERS = ("adam", "sgd", "rmsprop")
# The same space as hpo's spec in growth.py (hpo.search.distribution builds these from it).
DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "x": FloatDistribution(-10.0, 10.0),
    "y": IntDistribution(-10, 10),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "opt": CategoricalDistribution(list(OPTIMIZERS)),
}
SPACE_YAML = """\
  x: {type: float, low: -10, high: 10}
  y: {type: int, low: -10, high: 10}
  lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
  opt: {type: categorical, choices: [adam, sgd, rmsprop]}
"""


def value(x: float, y: int, lr: float, opt: str) -> float:
    """The final loss of a configuration (minimized; 0 at x=2, y=0, lr=1e-3, adam)."""
    return (x - 2) ** 2 + abs(y) + abs(math.log10(lr) + 3) + OPTIMIZERS.index(opt)


def curve(final: float, step: int) -> float:
    """The loss reported at ``step``: decreasing towards ``final``, same ranking every step."""
    return final + 5.0 / (step + 1)


def final_value(params: dict[str, Any]) -> float:
    return value(params["x"], params["y"], params["lr"], params["opt"])


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """hpo's form: 10 x (report, should_prune), no work in between."""
    return _run(trial, STEPS)


def light(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """A near-zero-cost trial for the memory benchmark: 3 x (report, should_prune)."""
    return _run(trial, LIGHT_STEPS)


def _run(trial: optuna.trial.BaseTrial, steps: int) -> float:
    final = final_value(trial.params)
    for step in range(steps):
        trial.report(curve(final, step), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return curve(final, steps - 1)


# What optuna.load_study imports on first use (RDBStorage's schema check and the driver), so
# that plain_trial times the work, not the imports, as the benchmark intends.
LAZY_IMPORTS = (
    "alembic.command",
    "alembic.config",
    "alembic.migration",
    "alembic.script",
    "numpy.random",
    "optuna.storages._rdb.models",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
)


def warm_imports() -> None:
    import importlib

    for name in LAZY_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def plain_trial(url: str, study_name: str) -> dict[str, float]:
    """One trial as a plain Optuna user runs it in its own process; times in ms.

    Timed from before ``load_study`` to after ``tell`` (interpreter start and imports are
    not counted): TPE, Hyperband(1, 10), ask with the space, 10 x (report, should_prune)
    stopping when pruned, tell.
    """
    t0 = time.perf_counter()
    study = optuna.load_study(
        study_name=study_name,
        storage=url,
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=STEPS),
    )
    t1 = time.perf_counter()
    trial = study.ask(DISTRIBUTIONS)
    t2 = time.perf_counter()
    final = final_value(trial.params)
    pruned = False
    for step in range(STEPS):
        trial.report(curve(final, step), step)
        if trial.should_prune():
            pruned = True
            break
    t3 = time.perf_counter()
    if pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, curve(final, STEPS - 1))
    t4 = time.perf_counter()
    ms = 1000.0
    return {
        "total_ms": (t4 - t0) * ms,
        "load_ms": (t1 - t0) * ms,
        "ask_ms": (t2 - t1) * ms,
        "steps_ms": (t3 - t2) * ms,
        "tell_ms": (t4 - t3) * ms,
        "pruned": float(pruned),
    }


if __name__ == "__main__":  # python growth_objective.py URL STUDY: one plain trial, JSON out
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warm_imports()
    print(json.dumps(plain_trial(sys.argv[1], sys.argv[2])))
