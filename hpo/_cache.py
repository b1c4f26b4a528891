"""The worker's view of a study: Optuna's trial cache, read at most once a second.

A worker asks for trials, reports for them and tells them, and Optuna reads the whole study
several times per ask (sampler, pruner, the trial itself). Plain ``_CachedStorage`` re-reads
every unfinished trial from the database on each of those reads. Here:

- other workers' trials are re-read at most every ``max_age`` seconds: the sampler and the
  pruner tolerate a view that is a second old, and that is where most of a worker's time went;
- the trials this worker runs ("owned") are kept current in memory, since this process is the
  only writer of them; every write still goes to the database first;
- reads that must be exact go to the database: the queue of WAITING trials (a trial must be
  popped by exactly one worker) and :meth:`sync`, which the worker calls where it needs a
  fresh view (before it enqueues a grid point).
"""

from __future__ import annotations

import time
from collections.abc import Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage, _CachedStorage
from optuna.trial import FrozenTrial, TrialState

_WAITING = (TrialState.WAITING,)


class WorkerStorage(_CachedStorage):
    def __init__(self, backend: RDBStorage, *, max_age: float = 1.0) -> None:
        super().__init__(backend)
        self.max_age = max_age
        self._synced: dict[int, float] = {}
        self._owned: set[int] = set()

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    def sync(self, study_id: int) -> None:
        """Read every trial that changed since the last sync."""
        self._read_trials_from_remote_storage(study_id)
        self._synced[study_id] = time.monotonic()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states is not None and tuple(states) == _WAITING:  # type: ignore[arg-type]
            return self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if time.monotonic() - self._synced.get(study_id, float("-inf")) > self.max_age:
            self.sync(study_id)
        with self._lock:
            study = self._studies[study_id]
            trials = sorted(
                (t for t in study.trials.values() if states is None or t.state in states),
                key=lambda t: t.number,
            )
        if deepcopy:
            import copy

            return copy.deepcopy(trials)
        return trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        owned = self._owned_trial(trial_id)
        return owned if owned is not None else super().get_trial(trial_id)

    # -- writes: to the database first, then to the owned trial in memory ---------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._owned.add(trial_id)
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        ok = self._backend.set_trial_state_values(trial_id, state=state, values=values)
        if ok and state == TrialState.RUNNING:
            self._own(trial_id)  # popped from the queue: this worker runs it now
        trial = self._owned_trial(trial_id)
        if ok and trial is not None:
            fresh = self._backend.get_trial(trial_id)  # the database sets the timestamps
            trial.state, trial._values = fresh.state, fresh._values
            trial._datetime_start, trial.datetime_complete = (
                fresh.datetime_start,
                fresh.datetime_complete,
            )
        if state.is_finished():
            self._owned.discard(trial_id)
        return ok

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        trial = self._owned_trial(trial_id)
        if trial is not None:
            trial._params[param_name] = distribution.to_external_repr(param_value_internal)
            trial._distributions[param_name] = distribution

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        self._backend.set_trial_intermediate_value(trial_id, step, value)
        trial = self._owned_trial(trial_id)
        if trial is not None:
            trial.intermediate_values[step] = value

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_user_attr(trial_id, key=key, value=value)
        trial = self._owned_trial(trial_id)
        if trial is not None:
            trial._user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_system_attr(trial_id, key=key, value=value)
        trial = self._owned_trial(trial_id)
        if trial is not None:
            trial._system_attrs[key] = value

    # -- owned trials ------------------------------------------------------------------
    def _own(self, trial_id: int) -> None:
        with self._lock:
            known = trial_id in self._trial_id_to_study_id_and_number
            studies = list(self._studies)
        if not known:  # a queued trial this view has not read yet
            for study_id in studies:
                self.sync(study_id)
        self._owned.add(trial_id)

    def _owned_trial(self, trial_id: int) -> FrozenTrial | None:
        if trial_id not in self._owned:
            return None
        with self._lock:
            key = self._trial_id_to_study_id_and_number.get(trial_id)
            if key is None:
                return None
            study_id, number = key
            return self._studies[study_id].trials.get(number)
