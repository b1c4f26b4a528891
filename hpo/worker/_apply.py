"""Applying what a trial process asked for to the real Optuna trial, in the worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import TrialState

from hpo._optuna._study import forget_ahead, suggest, trial_id
from hpo.storage import is_transient
from hpo.worker import _protocol as msg
from hpo.worker._protocol import Method

if TYPE_CHECKING:
    from hpo.storage import WorkerStorage
    from hpo.worker._slots import TrialProcess

log = logging.getLogger("hpo.worker")


def apply_call(
    storage: WorkerStorage, proc: TrialProcess, trial: optuna.Trial, message: msg.Call | msg.Cast
) -> None:
    """Apply a trial process's call to its running trial; answer a Call, log a failed Cast.

    An error of the call goes back to the objective as Optuna's would; a storage outage
    is raised, so the message stays in the inbox and is applied again once storage is back.
    """
    try:
        reply = msg.Reply(True, apply_method(storage, trial, message.method, message.args))
    except Exception as e:
        if is_transient(e):
            raise
        reply = msg.Reply(False, f"{type(e).__name__}: {e}")
        if isinstance(message, msg.Cast):
            log.warning("trial %d: %s failed: %s", trial.number, message.method.value, e)
    if isinstance(message, msg.Call):
        proc.tell(reply)


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
        return storage.set_trial_system_attr(trial_id(trial), *args)
    if method is Method.SUGGEST:
        with storage.as_seen():  # the trial process waits: no database round trip
            return suggest_param(trial, *args)
    raise ValueError(f"unknown trial method {method!r}")


def suggest_param(trial: optuna.Trial, name: str, dist: str) -> Any:
    """A trial process's suggest_*: the value sampled ahead when it is asked for with the
    distribution it was sampled from, else a sample from the distribution asked for."""
    distribution = json_to_distribution(dist)
    forget_ahead(trial, name, distribution)
    return suggest(trial, name, distribution)


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
