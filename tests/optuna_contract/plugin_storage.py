"""A pytest plugin: Optuna's own storage tests, run against hpo's worker storage.

Optuna's storage tests (``tests/storages_tests/``), and its study and trial tests that run
on every storage (``tests/study_tests/``, ``tests/trial_tests/``), parametrize over
``optuna.testing.storages.STORAGE_MODES`` and build each storage with ``StorageSupplier``.
This plugin swaps those modes for hpo's (so the run tests hpo, not Optuna's own storages
again) and teaches the supplier to build them:

- ``hpo_worker_sqlite``: ``WorkerStorage`` over ``RDBStorage`` on a temporary SQLite file;
- ``hpo_worker_postgresql``: the same on a fresh PostgreSQL database (``HPO_TEST_PG``, by
  default the server the test suite uses), left out when no server answers;
- ``hpo_write_through_sqlite``: ``WriteThroughStorage``, what studies open with where hpo may
  not use Optuna's internals.

Loaded with ``-p plugin_storage`` (this directory and hpo's root on ``PYTHONPATH``) by
``make optuna-contract``, in the directory ``fetch.py`` extracted the installed Optuna's
tests to::

    pytest -p plugin_storage tests/storages_tests/test_storages.py \
        tests/storages_tests/test_heartbeat.py tests/study_tests/test_study.py ...

The tests hpo deliberately does not pass are deselected from :data:`EXCEPTIONS`, each with its
reason in ``tests/optuna_contract/EXCEPTIONS.md`` (section "storage").
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import optuna
import optuna.testing.storages as ots
import pytest
import sqlalchemy as sa

from hpo.storage import WorkerStorage, WriteThroughStorage

PG_ADMIN_URL = os.environ.get(
    "HPO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SQLITE_TIMEOUT_S = 300

#: Optuna's tests (``file::test``, any parameters) hpo's worker storage does not pass by
#: design, with the reason; EXCEPTIONS.md (section "storage") explains each. The
#: write-through storage has no exception.
_BATCHED_HEARTBEAT = (
    "a heartbeat is batched: record_heartbeat() reaches the database with the next flush "
    "(the worker flushes right after, and every tick); these tests never flush"
)
EXCEPTIONS: dict[str, str] = {
    "test_heartbeat.py::test_fail_stale_trials_with_optimize": _BATCHED_HEARTBEAT,
    "test_heartbeat.py::test_heartbeat_stale_trial_callback": _BATCHED_HEARTBEAT,
    "test_heartbeat.py::test_retry_heartbeat_stale_trial_callback": _BATCHED_HEARTBEAT,
    "test_heartbeat.py::test_retry_heartbeat_stale_trial_callback_intermediate": (
        _BATCHED_HEARTBEAT
    ),
    "test_heartbeat.py::test_retry_heartbeat_stale_trial_callback_repetitive_failure": (
        _BATCHED_HEARTBEAT
    ),
}


def _pg_reachable() -> bool:
    engine = sa.create_engine(PG_ADMIN_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            return True
    except Exception:
        return False
    finally:
        engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    modes = ["hpo_worker_sqlite", "hpo_write_through_sqlite"]
    if _pg_reachable() or os.environ.get("CI", "").lower() == "true":
        modes.append("hpo_worker_postgresql")  # in CI an absent server fails, never skips
    ots.STORAGE_MODES[:] = modes
    ots.STORAGE_MODES_HEARTBEAT[:] = modes
    ots.StorageSupplier.__enter__ = _wrap_enter(ots.StorageSupplier.__enter__)  # type: ignore[method-assign]
    ots.StorageSupplier.__exit__ = _wrap_exit(ots.StorageSupplier.__exit__)  # type: ignore[method-assign]


#: Tests Optuna itself skips on its own SQLite modes, skipped here on hpo's SQLite modes.
SQLITE_EXCEPTIONS: dict[str, str] = {
    "test_study.py::test_pop_waiting_trial_thread_safe": (
        "Optuna skips it for its SQLite modes: popping from threads is not thread-safe on SQLite"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        path, _, name = item.nodeid.partition("::")
        key = f"{path.rsplit('/', 1)[-1]}::{name.split('[', 1)[0]}"
        worker = key in EXCEPTIONS and "hpo_worker_" in name
        sqlite = key in SQLITE_EXCEPTIONS and "_sqlite" in name
        (drop if worker or sqlite else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _wrap_enter(enter: Callable[..., Any]) -> Callable[..., Any]:
    def __enter__(self: ots.StorageSupplier) -> Any:
        mode = self.storage_specifier
        if not mode.startswith("hpo_"):
            return enter(self)
        if mode.endswith("_sqlite"):
            self.tempfile = tempfile.NamedTemporaryFile(suffix=".db")
            url = f"sqlite:///{self.tempfile.name}"
            kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        else:
            url = _create_pg_database(self)
            kwargs = {"poolclass": sa.pool.NullPool}
        rdb = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **self.extra_args)
        self.backend_storage = rdb
        worker = mode.startswith("hpo_worker_")
        self.storage = WorkerStorage(rdb) if worker else WriteThroughStorage(rdb)
        return self.storage

    return __enter__


def _wrap_exit(exit_: Callable[..., Any]) -> Callable[..., Any]:
    def __exit__(self: ots.StorageSupplier, *exc: Any) -> None:
        if not self.storage_specifier.startswith("hpo_"):
            exit_(self, *exc)
            return
        assert isinstance(self.backend_storage, optuna.storages.RDBStorage)
        self.backend_storage.engine.dispose()
        if self.tempfile is not None:
            self.tempfile.close()
        database = getattr(self, "_hpo_pg_database", None)
        if database is not None:
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    return __exit__


def _create_pg_database(supplier: ots.StorageSupplier) -> str:
    name = f"hpo_optuna_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    supplier._hpo_pg_database = name  # type: ignore[attr-defined]
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    engine = sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as con:
            con.exec_driver_sql(sql)
    finally:
        engine.dispose()
