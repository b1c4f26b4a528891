"""The fleet: which workers run a study, on which host and slot, and which of them are lost.

``hpo_workers`` holds one row per worker slot, written by the worker every tick. A worker
that stops cleanly marks its rows "stopped"; one that was killed stops writing, and once its
heartbeat is older than the study's grace period it is *lost*: :func:`fleet` says so, and
its trials, which stopped heartbeating too, are failed with a reason (:func:`stale_trials`)
and retried by whichever worker notices first.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hpo.storage._tables import workers_table

#: Row states a live worker writes; "stopped" is its last word, "lost" is read-time only.
LIVE_STATES = ("starting", "idle", "running", "draining")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def this_host() -> str:
    return socket.gethostname()


def this_job() -> str | None:
    """The scheduler job this process runs in, as its scheduler names it, or None.

    Slurm: ``JOB_TASK`` for a task of an array (``1234_0``, as ``squeue`` and ``scancel``
    take it), else the job id.
    """
    env = os.environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or None


def worker_id(host: str, pid: int, slot: int | None = None) -> str:
    """A worker's name everywhere (fleet rows, trial attributes, messages): ``host:pid``,
    or ``host:pid/slot`` for one of its slots."""
    return f"{host}:{pid}" if slot is None else f"{host}:{pid}/{slot}"


def upsert_workers(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """Insert or update this worker's fleet rows (one per slot), in one transaction."""
    t = workers_table
    with engine.begin() as con:
        for row in rows:
            res = con.execute(t.update().where(t.c.worker_id == row["worker_id"]).values(**row))
            if res.rowcount == 0:
                con.execute(t.insert().values(**row))


def mark_stopped(engine: sa.Engine, host: str, pid: int) -> None:
    """This worker's last word: its rows say "stopped" and run nothing."""
    t = workers_table
    with engine.begin() as con:
        con.execute(
            t.update()
            .where(t.c.host == host, t.c.pid == pid)
            .values(state="stopped", trial_number=None, heartbeat_at=utcnow())
        )


def delete_fleet(con: sa.Connection, study_id: int) -> None:
    con.execute(workers_table.delete().where(workers_table.c.study_id == study_id))


_RUNNING_NUMBERS = sa.text(
    "SELECT number FROM trials WHERE study_id = :study AND state = 'RUNNING'"
)


def fleet(engine: sa.Engine, study_id: int, *, grace_s: float = 30.0) -> list[dict[str, Any]]:
    """The study's worker slots, a lost worker's as "lost".

    A slot whose heartbeat is older than ``grace_s`` (the study's grace period) is lost; its
    ``trial_number`` is kept only while that trial is still RUNNING, so a lost worker drops
    out of "running" once another worker took its trial over.
    """
    t = workers_table
    now = utcnow()
    with engine.connect() as con:
        rows = [
            dict(r)
            for r in con.execute(
                sa.select(t).where(t.c.study_id == study_id).order_by(t.c.host, t.c.pid, t.c.slot)
            ).mappings()
        ]
        running = {r[0] for r in con.execute(_RUNNING_NUMBERS, {"study": study_id})}
    for row in rows:
        silent_s = (now - row["heartbeat_at"]).total_seconds()
        if row["state"] in LIVE_STATES and silent_s > grace_s:
            row["state"] = "lost"
            if row["trial_number"] not in running:
                row["trial_number"] = None
    return rows


def host_slots(engine: sa.Engine, host: str, exclude_pid: int, *, fresh_s: float) -> int:
    """Slots of the other live workers on ``host`` (any study in this database): those whose
    heartbeat is under ``fresh_s`` old."""
    t = workers_table
    since = utcnow() - dt.timedelta(seconds=fresh_s)
    with engine.connect() as con:
        return int(
            con.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(
                    t.c.host == host,
                    t.c.pid != exclude_pid,
                    t.c.state.in_(LIVE_STATES),
                    t.c.heartbeat_at > since,
                )
            ).scalar_one()
        )


# -- trials whose worker is gone -----------------------------------------------------------
# Optuna's own tables: trials, their heartbeats and user attributes (stable since 2.x).
_STALE = sa.text(
    "SELECT t.trial_id, t.number, h.heartbeat FROM trials t "
    "JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'RUNNING'"
)
_WORKER_ATTR = sa.text(
    "SELECT value_json FROM trial_user_attributes WHERE trial_id = :trial AND key = 'worker'"
)
_ORPHANS = sa.text(
    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL "
    "AND t.datetime_start < :before"
)


@dataclass(frozen=True)
class StaleTrial:
    """A RUNNING trial whose heartbeat stopped: its worker is lost."""

    trial_id: int
    number: int
    worker: str | None  # host:pid of the worker that ran it, when it said
    silent_s: float

    @property
    def reason(self) -> str:
        who = f"worker {self.worker}" if self.worker else "its worker"
        return f"{who} lost: no heartbeat for {self.silent_s:.0f} s"


def stale_trials(
    engine: sa.Engine, study_id: int, *, grace_s: float, exclude: Iterable[int] = ()
) -> list[StaleTrial]:
    """RUNNING trials whose last heartbeat is over ``grace_s`` old, by the database's clock
    (heartbeats are stamped with it, as Optuna's own staleness check assumes)."""
    import json

    skip = set(exclude)
    out = []
    with engine.connect() as con:
        now = _as_datetime(con.execute(sa.select(sa.func.now())).scalar_one())
        for trial_id, number, beat in con.execute(_STALE, {"study": study_id}):
            silent = (now - _as_datetime(beat)).total_seconds()
            if trial_id in skip or silent <= grace_s:
                continue
            attr = con.execute(_WORKER_ATTR, {"trial": trial_id}).scalar()
            slot = json.loads(attr) if attr else None
            worker = slot.split("/")[0] if isinstance(slot, str) else None
            out.append(StaleTrial(trial_id, number, worker, silent))
    return out


def _as_datetime(value: Any) -> dt.datetime:
    """A timestamp as SQLite (text) or PostgreSQL (datetime) returns it, naive."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def orphan_trial_ids(engine: sa.Engine, study_id: int, *, grace_s: float) -> list[int]:
    """RUNNING trials that never got a heartbeat and started over ``grace_s`` ago.

    A worker killed between creating a trial and its first heartbeat leaves one; a
    staleness check by heartbeat never sees it, so it would stay RUNNING forever.
    """
    # Optuna stamps datetime_start with the local naive time of the process that started it.
    before = dt.datetime.now() - dt.timedelta(seconds=grace_s)
    with engine.connect() as con:
        return [r[0] for r in con.execute(_ORPHANS, {"study": study_id, "before": before})]
