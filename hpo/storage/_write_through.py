"""Optuna's own storage for a study, with the methods hpo's worker calls on its storage.

This is what the worker runs on when hpo may not use Optuna's internals (an Optuna release or
a database schema hpo was not tested with, or ``HPO_OPTUNA_INTERNALS=off``): Optuna's trial
cache over ``RDBStorage``, exactly as ``optuna.create_study(storage=url)`` builds it, every
write going straight to the database. The worker's methods (:meth:`flush`, :meth:`beat`,
:meth:`requeue`, ...) are here so the worker needs no branches; with nothing batched most of
them have nothing to do. It uses no private name of Optuna's beyond the cache class itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Container, Iterator, Sequence

import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo._optuna._rdb import CachedStorage

_WAITING = (TrialState.WAITING,)

# Optuna's trial and heartbeat tables, by their SQL names: stable since Optuna 2.x, and
# independent of the models module the worker storage uses.
_REQUEUE = sa.text(
    "UPDATE trials SET state = 'WAITING', datetime_start = NULL "
    "WHERE trial_id = :trial AND state = 'RUNNING'"
)
_DROP_HEARTBEAT = sa.text("DELETE FROM trial_heartbeats WHERE trial_id = :trial")
_SET_START = sa.text("UPDATE trials SET datetime_start = :when WHERE trial_id = :trial").bindparams(
    sa.bindparam("when", type_=sa.DateTime)
)


class WriteThroughStorage(CachedStorage):
    """Optuna's storage, writing through; see the module docstring."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._rdb = backend
        self._queue_empty = False
        self.popped = 0  # queued trials this worker has taken (a counter, to tell ask's way)

    @property
    def backend(self) -> RDBStorage:
        return self._rdb

    @property
    def batched(self) -> bool:
        """Nothing is batched here (so trials are never sent ahead, nor requeued)."""
        return False

    def sync(self, study_id: int) -> None:
        """Every read is fresh already."""

    def flush(self) -> None:
        """Every write is in the database already."""

    def beat(self, trial_ids: Sequence[int]) -> None:
        for trial_id in trial_ids:
            self.record_heartbeat(trial_id)

    @contextlib.contextmanager
    def queue_empty(self, empty: bool) -> Iterator[None]:
        """Within: answer "no queued trials" without reading, as the caller counted none
        under the study lock."""
        self._queue_empty = empty
        try:
            yield
        finally:
            self._queue_empty = False

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if self._queue_empty and states is not None and tuple(states) == _WAITING:  # type: ignore[arg-type]
            return []
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        ok = super().set_trial_state_values(trial_id, state, values)
        if ok and state == TrialState.RUNNING:
            self.popped += 1  # only a queued trial is set running: a new one is created so
        return ok

    def set_trial_start(self, trial_id: int, when: dt.datetime) -> None:
        """Restamp a trial that waited on its slot behind another with its real start."""
        with self._rdb.engine.begin() as con:
            con.execute(_SET_START, {"when": when, "trial": trial_id})

    def requeue(self, trial_id: int) -> None:
        """Put a running trial that never started back in the queue (see WorkerStorage)."""
        with self._rdb.engine.begin() as con:
            con.execute(_DROP_HEARTBEAT, {"trial": trial_id})
            con.execute(_REQUEUE, {"trial": trial_id})
