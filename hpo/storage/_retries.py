"""Facts about a trial's attempts, read from its system attributes, and queuing a retry.

A retry is a new trial row (WAITING, the same parameters) whose ``failed_trial`` names the
first attempt: it shares that attempt's checkpoints and seed, and the budget counts it as the
same logical trial. ``retry_history`` lists every attempt before it, ``preempted_attempts``
those of them whose worker was preempted: they do not count against ``max_retries``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

log = logging.getLogger("hpo.worker")
#: System attribute of an attempt its worker was preempted in (a FAIL with it is "preempted").
PREEMPTED_ATTR = "preempted"
#: System attribute of a retry: the numbers of the attempts before it that were preempted.
PREEMPTED_ATTEMPTS_ATTR = "preempted_attempts"
#: Attributes of an attempt that its retry does not inherit.
_OWN_ATTRS = ("retry_history", PREEMPTED_ATTR, PREEMPTED_ATTEMPTS_ATTR)


def logical_trial_number(trial: optuna.trial.FrozenTrial) -> int:
    """The number of the first attempt: retries share its checkpoints and seed."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def retried_numbers(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of failed attempts that were retried: their retry is the finished trial."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def state_counts(trials: Sequence[optuna.trial.FrozenTrial]) -> Counter[str]:
    """Trials by state name, retried attempts counted as RETRIED rather than FAIL."""
    retried = retried_numbers(trials)
    return Counter("RETRIED" if t.number in retried else t.state.name for t in trials)


@dataclass(frozen=True)
class StaleTrialRetry:
    """Re-queue a trial whose worker died, up to ``max_retries`` times (preempted attempts
    not counted).

    The retry is a WAITING trial with the same parameters; it keeps ``failed_trial`` (the
    first attempt's number) so it finds that attempt's checkpoints and seed, and so the
    budget counts it as the same logical trial.
    """

    max_retries: int

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """As Optuna's stale- and failed-trial callback: queue the retry if the limit allows."""
        self.queue(study, trial)

    def queue(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Queue the retry; False when the retry limit is reached."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        preempted = [*trial.system_attrs.get(PREEMPTED_ATTEMPTS_ATTR, [])]
        if trial.system_attrs.get(PREEMPTED_ATTR):
            preempted.append(trial.number)  # not the trial's fault: it does not count
        if len(history) - len(preempted) > self.max_retries:
            log.warning("trial %d failed; retry limit (%d) reached", trial.number, self.max_retries)
            return False
        # One row, atomically: the retry counts as the same logical trial (it has
        # "failed_trial"), so the budget needs no update and a kill here loses nothing.
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs={
                    **{k: v for k, v in trial.system_attrs.items() if k not in _OWN_ATTRS},
                    "failed_trial": history[0],
                    "retry_history": history,
                    **({PREEMPTED_ATTEMPTS_ATTR: preempted} if preempted else {}),
                },
            )
        )
        log.warning("trial %d will be retried (attempt %d)", trial.number, len(history) + 1)
        return True
