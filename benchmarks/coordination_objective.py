"""The benchmarks' objective: 4 parameters and a fixed sleep, so time beyond it is overhead."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import optuna

from hpo.context import TrialContext


def _value(x: float, y: int, lr: float, opt: str) -> float:
    return (
        (x - 2) ** 2 + abs(y) + abs(math.log10(lr) + 3) + {"adam": 0, "sgd": 1, "rmsprop": 2}[opt]
    )


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    time.sleep(float(ctx.params["sleep"]))
    p = trial.params
    return _value(p["x"], p["y"], p["lr"], p["opt"])


def define_by_run(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """The same 4 parameters, defined by the objective's suggest_* (no search_space)."""
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", -10, 10)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    opt = trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"])
    time.sleep(float(ctx.params["sleep"]))
    return _value(x, y, lr, opt)


def plain(sleep: float) -> Callable[[optuna.trial.Trial], float]:
    """The same objective as a plain Optuna user writes it."""

    def objective(trial: optuna.trial.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        y = trial.suggest_int("y", -10, 10)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        opt = trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"])
        time.sleep(sleep)
        return _value(x, y, lr, opt)

    return objective
