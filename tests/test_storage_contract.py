"""The worker storage's contract, on SQLite and PostgreSQL.

What a worker relies on: batched writes reach the database on a flush and read back through
Optuna's plain ``RDBStorage``; a trial handed out never changes afterwards; a requeued trial is
taken by another worker with its parameters; a trial finished elsewhere is never overwritten
(the conditional final write, which then writes nothing); a worker restarted between two
writes loses nothing finished and writes nothing twice. And where hpo may not use Optuna's
internals (``HPO_OPTUNA_INTERNALS=off``, a schema it was not tested with), studies open with
the write-through storage, which keeps the same guarantees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from conftest import run_hpo, toy_spec, write_spec
from optuna.distributions import FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo._optuna import internals_supported
from hpo.storage import WorkerStorage, WriteThroughStorage, open_storage, study_storage

X = FloatDistribution(0.0, 1.0)


@pytest.fixture
def rdb(any_url: str) -> Iterator[optuna.storages.RDBStorage]:
    storage = open_storage(any_url)
    yield storage
    storage.engine.dispose()


def _plain(rdb: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """A fresh, unbatched view of the same database: what another process would read."""
    return optuna.storages.RDBStorage(rdb.url)


def _count(rdb: optuna.storages.RDBStorage, table: str, trial_id: int) -> int:
    with rdb.engine.connect() as con:
        sql = sa.text(f"SELECT count(*) FROM {table} WHERE trial_id = :t")
        return int(con.execute(sql, {"t": trial_id}).scalar_one())


def _study(storage: optuna.storages.BaseStorage, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def test_flushed_writes_read_back_from_a_plain_storage(rdb: optuna.storages.RDBStorage) -> None:
    ws = WorkerStorage(rdb)
    trial = _study(ws).ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.5, 0)
    trial.set_user_attr("host", "h")
    ws.record_heartbeat(trial._trial_id)
    plain = _plain(rdb)
    assert plain.get_trial(trial._trial_id).params == {}  # batched: not written yet
    ws.flush()
    got = plain.get_trial(trial._trial_id)
    assert got.params == trial.params and got.intermediate_values == {0: 0.5}
    assert got.user_attrs == {"host": "h"} and got.state == TrialState.RUNNING
    assert _count(rdb, "trial_heartbeats", trial._trial_id) == 1
    # The final state and every write since go together.
    trial.report(0.25, 1)
    ws.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.25])
    got = plain.get_trial(trial._trial_id)
    assert got.state == TrialState.COMPLETE and got.values == [0.25]
    assert got.intermediate_values == {0: 0.5, 1: 0.25} and got.datetime_complete is not None


def test_a_trial_handed_out_never_changes_afterwards(rdb: optuna.storages.RDBStorage) -> None:
    # Successive halving reads the trials, writes the trial's rung, then looks the trial up in
    # the list it read: a change made in place counted the trial's value twice.
    ws = WorkerStorage(rdb)
    study = _study(ws)
    trial = study.ask()
    ws.set_trial_param(trial._trial_id, "x", 0.5, X)
    before = ws.get_all_trials(study._study_id, deepcopy=False)
    held = ws.get_trial(trial._trial_id)
    snapshot = [optuna.trial.FrozenTrial(**_fields(t)) for t in (*before, held)]
    ws.set_trial_system_attr(trial._trial_id, "rung_0", 0.5)
    ws.set_trial_intermediate_value(trial._trial_id, 0, 0.5)
    ws.set_trial_state_values(trial._trial_id, TrialState.PRUNED)
    assert [*before, held] == snapshot
    after = ws.get_all_trials(study._study_id, deepcopy=False)
    assert after[0].state == TrialState.PRUNED and after[0].system_attrs == {"rung_0": 0.5}


def _fields(t: optuna.trial.FrozenTrial) -> dict[str, object]:
    return {
        "number": t.number,
        "state": t.state,
        "value": None,
        "values": t.values,
        "datetime_start": t.datetime_start,
        "datetime_complete": t.datetime_complete,
        "params": dict(t.params),
        "distributions": dict(t.distributions),
        "user_attrs": dict(t.user_attrs),
        "system_attrs": dict(t.system_attrs),
        "intermediate_values": dict(t.intermediate_values),
        "trial_id": t._trial_id,
    }


def test_requeued_trial_is_taken_by_another_worker_with_its_params(
    rdb: optuna.storages.RDBStorage,
) -> None:
    first = WorkerStorage(rdb)
    trial = _study(first).ask({"x": X})
    first.beat([trial._trial_id])
    first.requeue(trial._trial_id)
    got = _plain(rdb).get_trial(trial._trial_id)
    assert got.state == TrialState.WAITING and got.datetime_start is None
    assert got.params == trial.params  # whoever takes it runs these
    assert _count(rdb, "trial_heartbeats", trial._trial_id) == 0  # an orphan's grace, not stale
    first.flush()  # nothing of it is left to write
    second = WorkerStorage(open_storage(rdb.url))
    taken = _study(second).ask({"x": X})
    assert (taken._trial_id, taken.params, second.popped) == (trial._trial_id, trial.params, 1)
    assert _plain(rdb).get_trial(trial._trial_id).state == TrialState.RUNNING


def test_a_trial_finished_elsewhere_is_left_alone(rdb: optuna.storages.RDBStorage) -> None:
    ws = WorkerStorage(rdb)
    trial = _study(ws).ask({"x": X})
    ws.flush()
    trial.report(0.5, 0)  # pending when another worker fails the trial as stale
    plain = _plain(rdb)
    assert plain.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        ws.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])
    got = plain.get_trial(trial._trial_id)
    assert got.state == TrialState.FAIL and got.values is None
    assert got.intermediate_values == {}  # the conditional final write wrote nothing at all
    ws.flush()  # and nothing of it is left to write later
    assert plain.get_trial(trial._trial_id).intermediate_values == {}


@pytest.mark.parametrize("flushed", [True, False], ids=["flushed", "pending"])
def test_restart_between_two_writes_loses_nothing_finished_writes_nothing_twice(
    rdb: optuna.storages.RDBStorage, flushed: bool
) -> None:
    old = WorkerStorage(rdb)
    study = _study(old)
    done, running = study.ask({"x": X}), study.ask({"x": X})
    done.report(0.1, 0)
    study.tell(done, 0.1)  # finished: written before the worker moves on
    running.report(0.2, 0)
    if flushed:
        old.flush()
    del old, study  # the worker is gone, with whatever it had pending

    new = WorkerStorage(open_storage(rdb.url))
    trials = _study(new).get_trials()
    assert (trials[0].state, trials[0].values, trials[0].intermediate_values) == (
        TrialState.COMPLETE,
        [0.1],
        {0: 0.1},
    )
    assert trials[1].state == TrialState.RUNNING
    assert trials[1].intermediate_values == ({0: 0.2} if flushed else {})
    # A write repeated after the restart (a flush whose commit went unseen) adds no row, and
    # the finished trial cannot be finished again.
    new.set_trial_intermediate_value(running._trial_id, 0, 0.2)
    new.set_trial_intermediate_value(running._trial_id, 0, 0.2)
    assert _count(rdb, "trial_intermediate_values", running._trial_id) == 1
    with pytest.raises(UpdateFinishedTrialError):
        new.set_trial_state_values(done._trial_id, TrialState.COMPLETE, [0.1])
    assert _count(rdb, "trial_values", done._trial_id) == 1


# -- the fallback: Optuna's write-through storage ------------------------------------------


@pytest.fixture
def internals_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HPO_OPTUNA_INTERNALS", "off")
    internals_supported.cache_clear()
    yield
    internals_supported.cache_clear()


def test_internals_off_opens_the_write_through_storage(
    rdb: optuna.storages.RDBStorage, internals_off: None
) -> None:
    storage = study_storage(rdb)
    assert type(storage) is WriteThroughStorage and not storage.batched
    trial = _study(storage).ask({"x": X})
    trial.report(0.5, 0)
    storage.beat([trial._trial_id])
    got = _plain(rdb).get_trial(trial._trial_id)  # written through, no flush needed
    assert got.intermediate_values == {0: 0.5} and got.params == trial.params
    storage.requeue(trial._trial_id)
    taken = _study(study_storage(open_storage(rdb.url))).ask({"x": X})
    assert taken._trial_id == trial._trial_id and taken.params == trial.params


def test_a_schema_hpo_was_not_tested_with_falls_back_and_says_so_once(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hpo._optuna._rdb._said", set())  # what this process said so far
    rdb = open_storage(sqlite_url)
    assert type(study_storage(rdb)) is WorkerStorage
    with rdb.engine.begin() as con:  # what a later Optuna's schema would say
        con.execute(sa.text("UPDATE version_info SET schema_version = 99"))
    with caplog.at_level(logging.WARNING, logger="hpo"):
        assert type(study_storage(rdb)) is WriteThroughStorage
        assert type(study_storage(rdb)) is WriteThroughStorage
    said = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
    assert len(said) == 1 and "(version 99, revision v3.2.0.a)" in said[0]


def test_hpo_run_on_the_write_through_storage_spends_its_exact_budget(
    tmp_path: Path, sqlite_url: str
) -> None:
    spec = write_spec(tmp_path / "toy.yaml", toy_spec(n_trials=7))
    out = run_hpo(
        "run",
        str(spec),
        "--workers",
        "2",
        "--storage",
        sqlite_url,
        cwd=tmp_path,
        HPO_OPTUNA_INTERNALS="off",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="toy", storage=sqlite_url).get_trials()
    assert len(trials) == 7
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
