"""The worker's view of a study: Optuna's trial cache, read at most once a second, and its
own trials' writes batched.

A worker asks for trials, reports for them and tells them, and Optuna reads the whole study
several times per ask (sampler, pruner, the trial itself) and writes one small transaction
per parameter, attribute and report (each several statements). Here:

- other workers' trials are re-read at most every ``max_age`` seconds: the sampler and the
  pruner tolerate a view that is a second old;
- the trials this worker runs ("owned") are kept current in memory, since this process is the
  only writer of them. Their writes (parameters, attributes, reports, heartbeats) collect in
  memory and go to the database together in one transaction: on :meth:`flush` (the worker
  calls it once a trial is set up, and every tick), before every :meth:`sync`, and with the
  trial's final state, which is written by a conditional update, so a trial that another
  worker failed as stale meanwhile is left alone (and nothing of it is written);
- reads that must be exact go to the database: the queue of WAITING trials (a trial must be
  popped by exactly one worker) and :meth:`sync`, which the worker calls where it needs a
  fresh view (before it enqueues a grid point).

A worker killed with writes pending loses at most a second of its running trials' reports;
those trials are retried anyway. Finished trials are written before the worker moves on.

Trials handed out are never changed afterwards, as with Optuna's own storages: the pruners
read the trial list, write to the trial, and then look the trial up in the list they read.
An owned trial is changed in place only until it is handed out (in a list, ``deepcopy=False``);
its next write goes to a copy that replaces it in the cache (copy on write), and
:meth:`get_trial` hands out copies of owned trials, since Optuna's ``Trial`` changes the trial
it gets. Finished trials, most of a study, are shared as Optuna's cache shares them.

Optuna's private names are used through ``hpo._optuna._rdb``, and only where
:func:`study_storage` found them supported; elsewhere it returns the write-through storage.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import time
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo._optuna._rdb import (
    CachedRDB,
    Tables,
    copy_trial,
    intermediate_row,
    storage_supported,
    value_row,
)
from hpo.storage._ordered import InOrder
from hpo.storage._write_through import WriteThroughStorage

_WAITING = (TrialState.WAITING,)
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


@dataclass
class _Pending:
    """Writes of one owned trial that are in memory but not yet in the database."""

    params: dict[str, tuple[float, str]] = field(default_factory=dict)
    user_attrs: dict[str, str] = field(default_factory=dict)
    system_attrs: dict[str, str] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    heartbeat: bool = False
    start: dt.datetime | None = None  # when a trial queued on its slot really started


def study_storage(rdb: RDBStorage) -> StudyStorage:
    """The storage a study is opened with: the worker storage where hpo may use Optuna's
    internals on this database, else Optuna's write-through storage (said once in the log)."""
    return WorkerStorage(rdb) if storage_supported(rdb) else WriteThroughStorage(rdb)


class WorkerStorage(CachedRDB):
    """The worker's batching view of its study; see the module docstring."""

    def __init__(self, backend: RDBStorage, *, max_age: float = 1.0) -> None:
        super().__init__(backend)
        self.max_age = max_age
        self._tables = Tables()
        self._synced: dict[int, float] = {}
        self._owned: set[int] = set()
        # Owned trials whose cached object no caller holds (it was made by the last write):
        # only these are changed in place; any other is copied first.
        self._private: set[int] = set()
        self._pending: dict[int, _Pending] = {}
        self._queue_empty = False
        self._as_seen = False
        self._study_ids: dict[str, int] = {}
        # Each study's cached trials in number order, and its lists by states
        self._in_order: dict[int, InOrder] = {}
        self.popped = 0  # queued trials this worker has taken (a counter, to tell ask's way)
        # Batched writes need an upsert; other dialects keep Optuna's write-through path.
        self._batched = backend.engine.dialect.name in ("postgresql", "sqlite")

    @property
    def backend(self) -> RDBStorage:
        return self.rdb

    @property
    def batched(self) -> bool:
        """Whether owned trials' writes are batched (and trials can be requeued)."""
        return self._batched

    def sync(self, study_id: int) -> None:
        """Read every trial that changed since the last sync (after writing ours)."""
        self.flush()  # the read replaces cached trials: our pending writes must be in it
        self.read_changed(study_id)
        self._synced[study_id] = time.monotonic()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states is not None and tuple(states) == _WAITING:  # type: ignore[arg-type]
            if self._queue_empty:
                return []
            return self.rdb.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        stale = time.monotonic() - self._synced.get(study_id, float("-inf")) > self.max_age
        if stale and not (self._as_seen and study_id in self._synced):
            self.sync(study_id)
        with self.cache_lock:
            # The sampler and the pruner read the whole study several times per trial.
            trials = self._ordered(study_id).get(states)  # a new list: the caller's
            if deepcopy:
                return copy.deepcopy(trials)
            self._private.clear()  # the caller holds them now: copy before a change
        return trials

    def _cached(self, study_id: int, trials: list[FrozenTrial]) -> None:
        ordered = self._ordered(study_id)  # every read and created trial
        for trial in trials:
            ordered.put(trial)

    def _ordered(self, study_id: int) -> InOrder:
        trials = self.cached_trials(study_id)
        ordered = self._in_order.get(study_id)
        if ordered is None or ordered.source is not trials:  # new, or the study was re-read
            ordered = self._in_order[study_id] = InOrder(trials)
        return ordered

    @contextlib.contextmanager
    def queue_empty(self, empty: bool) -> Iterator[None]:
        """Within: answer "no queued trials" without reading, as the caller counted none
        under the study lock. (A retry queued meanwhile waits for the next ask.)"""
        self._queue_empty = empty
        try:
            yield
        finally:
            self._queue_empty = False

    @contextlib.contextmanager
    def as_seen(self) -> Iterator[None]:
        """Within: read trials as this worker last saw them, however old (the loop syncs on
        its tick), so a trial process's suggest_* costs no database round trip."""
        self._as_seen = True
        try:
            yield
        finally:
            self._as_seen = False

    def get_study_id_from_name(self, study_name: str) -> int:
        # Hyperband asks on every should_prune (for each bracket's view of the study); a
        # study keeps its id for life, and a deleted one fails on its next write anyway.
        if study_name not in self._study_ids:
            self._study_ids[study_name] = self.rdb.get_study_id_from_name(study_name)
        return self._study_ids[study_name]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        owned = self._owned_trial(trial_id)
        # A copy: Optuna's Trial changes the trial it gets (as it may: a fresh read elsewhere).
        return copy_trial(owned) if owned is not None else super().get_trial(trial_id)

    # -- writes ------------------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._owned.add(trial_id)
        return trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        trial = self._writable(trial_id)
        if trial is None:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            self._written_through(trial_id)
            return
        study_id, _ = self._key(trial_id)
        with self.cache_lock:
            known = self.cached_distributions(study_id)
            if param_name not in known:  # first sight in this process: as stored before?
                trials = self.cached_trials(study_id).values()
                stored = (t for t in trials if param_name in t.distributions)
                known[param_name] = next(stored, trial).distributions.get(param_name, distribution)
            check_distribution_compatibility(known[param_name], distribution)
        pending = self._pending.setdefault(trial_id, _Pending())
        pending.params[param_name] = (param_value_internal, distribution_to_json(distribution))
        trial.params[param_name] = distribution.to_external_repr(param_value_internal)
        trial.distributions[param_name] = distribution

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        trial = self._writable(trial_id)
        if trial is None:
            self.rdb.set_trial_intermediate_value(trial_id, step, value)
            self._written_through(trial_id)
            return
        self._pending.setdefault(trial_id, _Pending()).intermediate[step] = value
        trial.intermediate_values[step] = value

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._writable(trial_id)
        if trial is None:
            self.rdb.set_trial_user_attr(trial_id, key=key, value=value)
            self._written_through(trial_id)
            return
        self._pending.setdefault(trial_id, _Pending()).user_attrs[key] = json.dumps(value)
        trial.user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._writable(trial_id)
        if trial is None:
            self.rdb.set_trial_system_attr(trial_id, key=key, value=value)
            self._written_through(trial_id)
            return
        self._pending.setdefault(trial_id, _Pending()).system_attrs[key] = json.dumps(value)
        trial.system_attrs[key] = value

    def record_heartbeat(self, trial_id: int) -> None:
        if not self._batched or trial_id not in self._owned:
            self.rdb.record_heartbeat(trial_id)
            return
        self._pending.setdefault(trial_id, _Pending()).heartbeat = True

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        trial = self._writable(trial_id)
        if trial is None or state == TrialState.RUNNING:
            return self._set_state_through(trial_id, state, values)
        # One transaction: the final state (only if no one else finished the trial first),
        # its values and every write still pending for it.
        now = dt.datetime.now()  # Optuna stamps trials with the writer's local time, too
        t = self._tables.trials
        with self.rdb.engine.begin() as con:
            res = con.execute(
                t.update()
                .where(t.c.trial_id == trial_id, t.c.state.in_(_UNFINISHED))
                .values(state=state, datetime_complete=now if state.is_finished() else None)
            )
            finished_elsewhere = res.rowcount == 0  # then nothing else is written
            if not finished_elsewhere:
                if values is not None:
                    self._upsert(
                        con,
                        self._tables.values,
                        ["trial_id", "objective"],
                        [value_row(trial_id, i, v) for i, v in enumerate(values)],
                    )
                self._write(con, {trial_id: self._pending.get(trial_id, _Pending())})
        self._pending.pop(trial_id, None)  # written, or moot
        if finished_elsewhere:  # failed as stale by another worker
            self._owned.discard(trial_id)
            raise UpdateFinishedTrialError(f"trial {trial.number} was already finished")
        trial.state = state
        trial.values = values
        if state.is_finished():
            trial.datetime_complete = now
            self._owned.discard(trial_id)
        return True

    def _set_state_through(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None
    ) -> bool:
        """Optuna's own path: queued trials being popped, and dialects without upserts."""
        self.flush()
        ok = self.rdb.set_trial_state_values(trial_id, state=state, values=values)
        if ok and state == TrialState.RUNNING:
            self._own(trial_id)  # popped from the queue: this worker runs it now
            self.popped += 1
        trial = self._mutable(trial_id) if ok else None
        if trial is not None:
            fresh = self.rdb.get_trial(trial_id)  # the database sets the timestamps
            trial.state, trial.values = fresh.state, fresh.values
            trial.datetime_start = fresh.datetime_start
            trial.datetime_complete = fresh.datetime_complete
        elif ok:
            self._written_through(trial_id)  # another's trial (failed as stale): read it anew
        if state.is_finished():
            self._owned.discard(trial_id)
        return ok

    def set_trial_start(self, trial_id: int, when: dt.datetime) -> None:
        """Restamp an owned trial that waited on its slot behind another with its real start."""
        trial = self._writable(trial_id)
        if trial is not None:
            self._pending.setdefault(trial_id, _Pending()).start = when
            trial.datetime_start = when

    def requeue(self, trial_id: int) -> None:
        """Put an owned trial that never started back in the queue, for any worker to take.

        It keeps its parameters (whoever takes it runs those) and its place in the budget. Its
        heartbeat goes: a taken trial is then an orphan with a grace period until its new
        worker's first heartbeat, rather than stale at once.
        """
        pending = self._pending.pop(trial_id, _Pending())
        pending.heartbeat, pending.start = False, None
        t, hb = self._tables.trials, self._tables.heartbeats
        with self.rdb.engine.begin() as con:
            self._write(con, {trial_id: pending})
            con.execute(hb.delete().where(hb.c.trial_id == trial_id))
            con.execute(
                t.update()
                .where(t.c.trial_id == trial_id, t.c.state == TrialState.RUNNING)
                .values(state=TrialState.WAITING, datetime_start=None)
            )
        trial = self._mutable(trial_id)
        if trial is not None:
            trial.state, trial.datetime_start = TrialState.WAITING, None
        self._owned.discard(trial_id)

    def beat(self, trial_ids: Sequence[int]) -> None:
        """Heartbeats for these running trials, with every pending write, in one transaction."""
        for trial_id in trial_ids:
            self.record_heartbeat(trial_id)
        self.flush()

    def flush(self) -> None:
        """Write every pending write of every owned trial, in one transaction."""
        pending = {k: v for k, v in self._pending.items() if k in self._owned}
        self._pending = pending
        if not pending:
            return
        with self.rdb.engine.begin() as con:
            self._write(con, pending)
        self._pending = {}

    def _write(self, con: sa.Connection, pending: dict[int, _Pending]) -> None:
        """Every write is an insert-or-update, so a flush repeated after a lost connection
        (which may have committed) is harmless."""
        tables = self._tables
        self._upsert(
            con,
            tables.params,
            ["trial_id", "param_name"],
            [
                {"trial_id": i, "param_name": k, "param_value": v, "distribution_json": d}
                for i, p in pending.items()
                for k, (v, d) in p.params.items()
            ],
        )
        for table, attr in (
            (tables.user_attrs, "user_attrs"),
            (tables.system_attrs, "system_attrs"),
        ):
            self._upsert(
                con,
                table,
                ["trial_id", "key"],
                [
                    {"trial_id": i, "key": k, "value_json": v}
                    for i, p in pending.items()
                    for k, v in getattr(p, attr).items()
                ],
            )
        self._upsert(
            con,
            tables.intermediate,
            ["trial_id", "step"],
            [
                intermediate_row(i, s, v)
                for i, p in pending.items()
                for s, v in p.intermediate.items()
            ],
        )
        t = tables.trials
        for i, p in pending.items():
            if p.start is not None:
                con.execute(t.update().where(t.c.trial_id == i).values(datetime_start=p.start))
        beats = [{"trial_id": i} for i, p in pending.items() if p.heartbeat]
        if beats:
            self._upsert(con, tables.heartbeats, ["trial_id"], beats, now=["heartbeat"])

    def _upsert(
        self,
        con: sa.Connection,
        table: sa.Table,
        keys: list[str],
        rows: list[dict[str, Any]],
        *,
        now: Sequence[str] = (),
    ) -> None:
        if not rows:
            return
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if con.dialect.name == "postgresql" else sqlite
        insert = dialect.insert
        # The database's clock for heartbeats, as Optuna's staleness check compares with it.
        stmt = insert(table).values({c: sa.func.now() for c in now}) if now else insert(table)
        columns = [*(c for c in rows[0] if c not in keys), *now]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in columns}
        )
        con.execute(stmt, rows)

    # -- owned trials ------------------------------------------------------------------
    def _own(self, trial_id: int) -> None:
        with self.cache_lock:
            known = self.cached_key(trial_id) is not None
            studies = self.known_study_ids()
        if not known:  # a queued trial this view has not read yet
            for study_id in studies:
                self.sync(study_id)
        self._owned.add(trial_id)

    def _key(self, trial_id: int) -> tuple[int, int]:
        with self.cache_lock:
            key = self.cached_key(trial_id)
        if key is None:
            raise KeyError(f"no trial with id {trial_id}")
        return key

    def _owned_trial(self, trial_id: int) -> FrozenTrial | None:
        """The cached object of an owned trial (not to be changed: see :meth:`_mutable`)."""
        if trial_id not in self._owned:
            return None
        with self.cache_lock:
            key = self.cached_key(trial_id)
            if key is None:
                return None
            study_id, number = key
            return self.cached_trials(study_id).get(number)

    def _mutable(self, trial_id: int) -> FrozenTrial | None:
        """The cached object of an owned trial, safe to change in place: unless it is one this
        storage made since the last read handed trials out, a copy takes its place in the
        cache first, so whatever a caller holds stays as it was."""
        trial = self._owned_trial(trial_id)
        if trial is None or trial_id in self._private:
            return trial
        study_id, _ = self._key(trial_id)
        trial = copy_trial(trial)
        with self.cache_lock:
            self.replace_cached(study_id, trial)
            self._ordered(study_id).put(trial)
            self._private.add(trial_id)
        return trial

    def _writable(self, trial_id: int) -> FrozenTrial | None:
        """The owned trial to change, if its writes may be batched; raises if it is finished."""
        if not self._batched:
            return None
        trial = self._owned_trial(trial_id)
        if trial is None:
            return None
        self.check_trial_is_updatable(trial_id, trial.state)
        return self._mutable(trial_id)

    def _written_through(self, trial_id: int) -> None:
        """A trial not owned was written directly: the next read of its study reads anew, so
        this process sees its own writes (other workers' are seen within ``max_age``)."""
        with self.cache_lock:
            key = self.cached_key(trial_id)
        if key is not None:
            self._synced.pop(key[0], None)


#: What a study is opened with (:func:`study_storage`): both have the methods the worker calls
#: (``flush``, ``beat``, ``requeue``, ``queue_empty``, ``popped``, ``batched``, ``sync``,
#: ``set_trial_start``, ``backend``).
StudyStorage = WorkerStorage | WriteThroughStorage
