"""Giving a trial back for a retry: one path for every trial that will not finish.

A trial is given back when its process died, the worker is stopped before it finished, it
ran past ``trial_timeout`` (failed, not retried), its worker was lost (no heartbeat for the
grace period), its worker died before its first heartbeat, or its worker was preempted
(queued again whatever ``max_retries`` says). Each time: the reason is
recorded, the trial is failed (only if nobody finished it meanwhile), and a retry is queued
once, within the retry limit, resuming from the trial's checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import optuna
from optuna.trial import TrialState

from hpo._optuna._study import study_id
from hpo.storage import PREEMPTED_ATTR, StaleTrialRetry, orphan_trial_ids, stale_trials

if TYPE_CHECKING:
    from collections.abc import Collection

    from hpo.storage import WorkerStorage
    from hpo.study import Study

log = logging.getLogger("hpo.worker")


class GivenBack(NamedTuple):
    failed: bool  # this call failed the trial (False: it was finished meanwhile)
    retried: bool  # and queued its retry


@dataclass
class Recovery:
    study: Study
    storage: WorkerStorage

    def give_back(
        self, trial_id: int, reason: str, *, retry: bool = True, preempted: bool = False
    ) -> GivenBack:
        """Fail the trial with ``reason`` and, with ``retry``, queue its retry once.

        A ``preempted`` trial is marked so (``hpo.storage.PREEMPTED_ATTR``, which every view
        counts as its own outcome, and a user attribute the dashboard shows), and its retry
        does not count against ``max_retries``.
        """
        try:
            self.storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            if preempted:
                self.storage.set_trial_system_attr(trial_id, PREEMPTED_ATTR, True)
                self.storage.set_trial_user_attr(trial_id, PREEMPTED_ATTR, True)
            if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return GivenBack(False, False)
        except optuna.exceptions.UpdateFinishedTrialError:
            return GivenBack(False, False)  # finished meanwhile, or given back by another
        return GivenBack(True, retry and self.retry(trial_id))

    def retry(self, trial_id: int) -> bool:
        """Queue the retry of a failed trial once, within the retry limit."""
        frozen = self.storage.backend.get_trial(trial_id)
        if frozen.state != TrialState.FAIL or self._retry_queued(frozen.number):
            return False
        return StaleTrialRetry(self.study.spec.retry.max_retries).queue(self.study.optuna, frozen)

    def take_over_lost(self, mine: Collection[int]) -> None:
        """Give back other workers' trials: those whose heartbeat stopped (the worker is
        lost), and those that never got one (it died right after creating them)."""
        grace = self.study.spec.retry.grace_period
        engine, study_id = self.study.budget.engine, self.study.budget.study_id
        for stale in stale_trials(engine, study_id, grace_s=grace):
            if self.give_back(stale.trial_id, stale.reason).failed:
                log.warning("trial %d: %s; retrying it", stale.number, stale.reason)
        for trial_id in orphan_trial_ids(engine, study_id, grace_s=grace):
            if trial_id not in mine:
                reason = f"its worker died before the trial's first heartbeat ({grace} s)"
                if self.give_back(trial_id, reason).failed:
                    log.warning("trial id %d never started on its worker; retrying it", trial_id)

    def _retry_queued(self, number: int) -> bool:
        """Whether some worker already queued a retry of trial ``number`` (read fresh)."""
        trials = self.storage.backend.get_all_trials(study_id(self.study.optuna), deepcopy=False)
        return any(number in t.system_attrs.get("retry_history", ()) for t in trials)
