"""Opening study storage, and the few tables hpo keeps beside Optuna's.

Optuna's RDB schema holds studies and trials. hpo adds two tables in the same database:
``hpo_budget`` (the study-wide trial budget and the stop flag; the lock for creating trials) and
``hpo_workers`` (one row per worker slot, for ``hpo status``; see _fleet.py). Both live in the
same database so that one URL is all a worker on another machine needs. A study's identity
(:attr:`BudgetView.uid`) is a study system attribute beside Optuna's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hpo.errors import NoDatabase, StorageError, UsageError
from hpo.storage._tables import budget_table, metadata, upgrade

if TYPE_CHECKING:
    import optuna


# SQLite: a writer waits this long for the lock instead of failing with "database is locked".
DEFAULT_STORAGE = "sqlite:///hpo.db"
SQLITE_BUSY_TIMEOUT_S = 120
# PostgreSQL: each process keeps at most this many connections (pool + overflow), so 32
# worker processes stay well under the server's default max_connections of 100. Both are
# pooled, not overflow: a worker needs two at once for every trial it creates (the study
# lock and Optuna's session), and an overflow connection is closed on release, so each
# trial paid a new connection (a server process forked per connection, several ms).
PG_POOL_SIZE = 2
PG_MAX_OVERFLOW = 0
# Tries at opening a database whose tables another process is creating at the same moment.
_SCHEMA_ATTEMPTS = 5


def resolve_url(cli: str | None, spec_storage: str | None = None) -> str:
    """The one rule for which storage a command uses, the first of:

    ``--storage``, ``HPO_STORAGE``, the spec's ``storage:`` (a command given a spec), the URL
    ``.hpo/storage`` in the working directory remembers (written by ``hpo create``/``hpo
    run``), then ``sqlite:///hpo.db``.
    """
    from hpo.storage._here import remembered_url

    return (
        cli or os.environ.get("HPO_STORAGE") or spec_storage or remembered_url() or DEFAULT_STORAGE
    )


def mask(url: str) -> str:
    """The URL with its password replaced, safe to print or log."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may still hold a secret: show only its scheme
        return url.split(":", 1)[0] + ":***"


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Open the RDB storage at ``url``, tuned for many workers.

    With ``create`` a missing SQLite file and missing tables are created; without it (the
    read-only commands) a missing SQLite file is an error, so a typo writes nothing.
    """
    import optuna

    try:
        parsed = sa.engine.make_url(url)
        parsed.get_dialect()  # an unknown scheme (nosuchdb://) is a typo, not an outage
    except Exception:
        raise UsageError(
            f"invalid storage URL {mask(url)!r} (expected sqlite:///FILE or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
        ) from None
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(parsed.database, create=create)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif parsed.get_backend_name() == "postgresql":
        engine_kwargs.update(
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            # A restarted server leaves dead pooled connections; test each one on checkout.
            pool_pre_ping=True,
            pool_recycle=600,
            # The pid lets an operator (and a test) count connections per process.
            connect_args={"connect_timeout": 10, "application_name": f"hpo:{os.getpid()}"},
        )
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            metadata.create_all(storage.engine)
            upgrade(storage.engine)
            return storage
        except ImportError as e:
            raise StorageError(f"no driver for {mask(url)!r}: {e}") from None
        except (sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            # Processes that open a fresh database at once (workers starting together, the
            # dashboard beside a first run) race to create its tables; the loser finds them
            # made by the winner and only has to look again.
            # A connection the server dropped after accepting it (a restart, an operator's
            # pg_terminate_backend) is worth another try; a refused one (a typo) is not.
            if ("already exists" in str(e) or _dropped(e)) and attempt + 1 < _SCHEMA_ATTEMPTS:
                time.sleep(0.1 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {mask(url)!r}: {_reason(e)}") from None
    raise AssertionError("unreachable")  # the loop returns or raises


def _prepare_sqlite(database: str | None, *, create: bool) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not create and not path.exists():
        raise NoDatabase(f"no SQLite database at {str(path)!r}")
    if not path.parent.exists():
        raise StorageError(f"directory {str(path.parent)!r} for the SQLite file does not exist")
    # WAL lets readers (the dashboard, `hpo status`) run while a worker writes, and it is a
    # property of the file, so setting it once here covers every later connection.
    con = sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as e:
        raise StorageError(f"cannot open SQLite file {database!r}: {e}") from None
    finally:
        con.close()


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = " ".join(str(orig).split())
    return text[:300]


def _dropped(e: BaseException) -> bool:
    if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
        return True
    cause = e.__cause__
    return cause is not None and cause is not e and _dropped(cause)


def is_transient(e: BaseException) -> bool:
    """Whether a storage error may go away on retry (server restart, dropped connection)."""
    import optuna

    if isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, optuna.exceptions.StorageInternalError):
        return e.__cause__ is None or is_transient(e.__cause__)
    return False


# Optuna's own tables, read by the budget: a trial's row and its system attributes. Their
# schema has been stable since Optuna 1.x; a retry carries the system attr "failed_trial".
_COUNT_TRIALS = sa.text("SELECT count(*) FROM trials WHERE study_id = :study")
_COUNT_RETRIES = sa.text(
    "SELECT count(*) FROM trial_system_attributes a JOIN trials t ON a.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND a.key = 'failed_trial'"
)
_COUNT_WAITING = sa.text(
    "SELECT count(*) FROM trials WHERE study_id = :study AND state = 'WAITING'"
)


#: Study system attribute: a uuid made once per study, so that files kept per study (its
#: checkpoints) never mix with another study of the same name (another storage, or one
#: deleted and created again).
STUDY_UID_ATTR = "hpo:study_uid"
# Plain SQL both dialects accept; Optuna's study_system_attributes is unique on (study, key).
_INSERT_UID = sa.text(
    "INSERT INTO study_system_attributes (study_id, key, value_json) "
    "VALUES (:study, :key, :value) ON CONFLICT (study_id, key) DO NOTHING"
)
_INSERT_BUDGET = sa.text(
    "INSERT INTO hpo_budget (study_id, n_trials) VALUES (:study, :n_trials) "
    "ON CONFLICT (study_id) DO NOTHING"
)
_READ_UID = sa.text(
    "SELECT value_json FROM study_system_attributes WHERE study_id = :study AND key = :key"
)
# The budget row and the identity in one round trip: read under the lock on every turn.
_READ_BUDGET = sa.text(
    "SELECT b.n_trials, b.stop, (SELECT a.value_json FROM study_system_attributes a "
    "WHERE a.study_id = b.study_id AND a.key = :key) FROM hpo_budget b "
    "WHERE b.study_id = :study"
)


def study_checkpoint_dir(root: str | Path, name: str, uid: str | None) -> Path:
    """Where a study's checkpoints live under ``root``: ``<root>/<name>-<8 hex>``, or
    ``<root>/<name>`` for a study created before identities existed."""
    base = Path(root).expanduser()
    return base / name if uid is None else base / f"{name}-{uid[:8]}"


@dataclass
class Budget:
    """The study-wide trial budget, and the stop flag.

    The budget counts *logical trials*: a trial and its retries are one. It is derived from
    the trials themselves (rows minus retry rows), never kept as a counter, so a worker
    killed at any instant leaves nothing to repair. New logical trials are created only
    inside :meth:`turn`, a study-wide lock (a row lock on PostgreSQL, a file lock beside a
    SQLite file), after checking the count, so N workers never create more than ``n_trials``
    of them. Queued (WAITING) trials, grid points and retries alike, are taken without
    counting: they were counted when queued.
    """

    engine: sa.Engine
    study_id: int

    def ensure(self, n_trials: int | None) -> None:
        """Record the budget and clear any stop request (creating or resuming a study).

        A study's first budget row comes with its identity, in one transaction: whoever sees
        the budget sees the identity, and concurrent creators agree on one (the first insert
        wins, the others' do nothing). A study created before identities existed has a
        budget row and keeps having none, so its checkpoints stay where they are.
        """
        with self.engine.begin() as con:
            row = con.execute(
                sa.select(budget_table.c.n_trials).where(budget_table.c.study_id == self.study_id)
            ).first()
            if row is None:
                params = {"study": self.study_id, "n_trials": n_trials}
                con.execute(_INSERT_BUDGET, params)
                uid = {"study": self.study_id, "key": STUDY_UID_ATTR}
                con.execute(_INSERT_UID, {**uid, "value": json.dumps(uuid.uuid4().hex)})
            else:
                con.execute(
                    budget_table.update()
                    .where(budget_table.c.study_id == self.study_id)
                    .values(n_trials=n_trials, stop=None)
                )

    def uid(self) -> str | None:
        """The study's identity; None for a study created before identities existed."""
        with self.engine.connect() as con:
            value = con.execute(_READ_UID, {"study": self.study_id, "key": STUDY_UID_ATTR})
            raw = value.scalar()
        return None if raw is None else str(json.loads(raw))

    @contextlib.contextmanager
    def turn(self) -> Iterator[BudgetView]:
        """Hold the study-wide lock while a trial is taken or created; see the counts."""
        with self._lock() as con:
            row = con.execute(_READ_BUDGET, {"study": self.study_id, "key": STUDY_UID_ATTR}).one()
            yield BudgetView(
                n_trials=row[0],
                stop=row[1],
                uid=None if row[2] is None else str(json.loads(row[2])),
                logical=_logical(con, self.study_id),
                waiting=con.execute(_COUNT_WAITING, {"study": self.study_id}).scalar_one(),
            )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[sa.Connection]:
        if self.engine.dialect.name != "sqlite":
            # The row lock lasts until the block ends, so trials of a study are inserted one
            # at a time and their ids become visible in increasing order. Optuna's trial
            # cache relies on that (it reads only ids above the last finished one it saw).
            with self.engine.begin() as con:
                con.execute(
                    sa.select(budget_table.c.study_id)
                    .where(budget_table.c.study_id == self.study_id)
                    .with_for_update()
                )
                yield con
            return
        # SQLite serializes writers, but a check-then-insert needs a lock across processes
        # that is not the database's own (holding that would block Optuna's insert).
        database = self.engine.url.database
        path = f"{database}.hpo-lock" if database and database != ":memory:" else None
        with _file_lock(path), self.engine.connect() as con:
            yield con

    def state(self) -> tuple[int | None, int, str | None]:
        """(n_trials, logical trials so far, stop)."""
        t = budget_table.c
        with self.engine.connect() as con:
            row = con.execute(
                sa.select(t.n_trials, t.stop).where(t.study_id == self.study_id)
            ).first()
            logical = _logical(con, self.study_id)
        return (None, logical, None) if row is None else (row[0], logical, row[1])

    def request_stop(self, mode: str) -> None:
        with self.engine.begin() as con:
            con.execute(
                budget_table.update()
                .where(budget_table.c.study_id == self.study_id)
                .values(stop=mode)
            )

    def delete(self) -> None:
        with self.engine.begin() as con:
            from hpo.storage._fleet import delete_fleet

            con.execute(budget_table.delete().where(budget_table.c.study_id == self.study_id))
            delete_fleet(con, self.study_id)


@dataclass(frozen=True)
class BudgetView:
    """The budget as seen under the lock."""

    n_trials: int | None
    stop: str | None
    logical: int  # logical trials created so far: a trial and its retries count once
    waiting: int  # queued trials: grid points and retries, already counted
    uid: str | None = None  # the study's identity (None: created before identities existed)

    @property
    def spent(self) -> bool:
        return self.n_trials is not None and self.logical >= self.n_trials


def _logical(con: sa.Connection, study_id: int) -> int:
    rows = con.execute(_COUNT_TRIALS, {"study": study_id}).scalar_one()
    return rows - con.execute(_COUNT_RETRIES, {"study": study_id}).scalar_one()


@contextlib.contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_USER_ATTR = sa.text(
    "SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id "
    "WHERE s.study_name = :name AND a.key = :key"
)


_PEEK_TIMEOUTS: dict[str, dict[str, Any]] = {
    "sqlite": {"timeout": 2},
    "postgresql": {"connect_timeout": 2},
}


def peek_user_attr(url: str, study_name: str, key: str) -> Any:
    """A study's user attribute in one query on a throwaway connection; None on any failure.

    Lets start-up work that needs the stored spec (the trial processes' forkserver) begin
    while the study itself is still being opened. Never raises and never creates anything:
    the normal open that follows reports every problem properly.
    """
    import json

    try:
        parsed = sa.engine.make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite" and not Path(parsed.database or "").is_file():
            return None
        # Short waits: a slow answer only means the start-up work begins later.
        connect_args = _PEEK_TIMEOUTS.get(backend, {})
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool, connect_args=connect_args)
        try:
            with engine.connect() as con:
                row = con.execute(_USER_ATTR, {"name": study_name, "key": key}).first()
        finally:
            engine.dispose()
        return None if row is None else json.loads(row[0])
    except Exception:
        return None
