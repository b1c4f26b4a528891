"""hpo's own tables, beside Optuna's in the same database, on one metadata so that opening a
storage creates them all: ``hpo_budget`` (the study-wide budget, stop flag and study lock row)
and ``hpo_workers`` (one row per worker slot: the fleet ``hpo status`` shows)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

budget_table = sa.Table(
    "hpo_budget",
    metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n_trials", sa.Integer, nullable=True),
    sa.Column("stop", sa.String(16), nullable=True),
)

workers_table = sa.Table(
    "hpo_workers",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),
    sa.Column("gpu", sa.String(32), nullable=True),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
)
