"""Applying what a trial process asked for to the real Optuna trial, in the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import TrialState

from hpo.worker._protocol import Method

if TYPE_CHECKING:
    from hpo.storage import WorkerStorage


def apply_method(
    storage: WorkerStorage, trial: optuna.Trial, method: Method, args: tuple[Any, ...]
) -> Any:
    if method is Method.REPORT:
        return trial.report(*args)
    if method is Method.SHOULD_PRUNE:
        return trial.should_prune()
    if method is Method.SET_USER_ATTR:
        return trial.set_user_attr(*args)
    if method is Method.SET_SYSTEM_ATTR:
        return storage.set_trial_system_attr(trial._trial_id, *args)
    if method is Method.SUGGEST:
        name, dist = args
        return trial._suggest(name, json_to_distribution(dist))
    raise ValueError(f"unknown trial method {method!r}")


def close_trial(
    ostudy: optuna.Study,
    trial: optuna.Trial,
    state: TrialState,
    values: list[float] | None,
    attrs: dict[str, Any],
) -> bool:
    """Record attributes and the final state; False if the trial was already finished.

    Idempotent on purpose: after a lost connection the same result is applied again,
    and a trial may have been failed as stale by another worker meanwhile.
    """
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if state == TrialState.COMPLETE:
            ostudy.tell(trial, values)
        else:
            ostudy.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True
