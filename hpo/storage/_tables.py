"""hpo's own tables, beside Optuna's in the same database, on one metadata so that opening a
storage creates them all: ``hpo_budget`` (the study-wide budget, stop flag and study lock row)
and ``hpo_workers`` (one row per worker slot: the fleet ``hpo status`` shows).

A column added after a release is added to an existing database when it is opened
(:func:`upgrade`): ``create_all`` creates missing tables, never missing columns."""

from __future__ import annotations

import logging

import sqlalchemy as sa

log = logging.getLogger("hpo.storage")

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
    # The scheduler's job the worker runs in (Slurm: ``JOB_TASK`` of an array), or None.
    sa.Column("job", sa.String(128), nullable=True),
)

#: Columns added since a table was first released: (table, column), created by ``upgrade``.
ADDED_COLUMNS = ((workers_table, "job"),)


def upgrade(engine: sa.Engine) -> None:
    """Add the columns a database made by an older hpo lacks (``create_all`` adds none)."""
    inspector = sa.inspect(engine)
    for table, name in ADDED_COLUMNS:
        if name in {c["name"] for c in inspector.get_columns(table.name)}:
            continue
        column = table.c[name]
        ddl = f"ALTER TABLE {table.name} ADD COLUMN {name} {column.type.compile(engine.dialect)}"
        try:
            with engine.begin() as con:
                con.exec_driver_sql(ddl)
        except sa.exc.SQLAlchemyError as e:
            # Another process opening the database at the same time added it first; or a
            # read-only role opens an old database (only the workers write the column).
            text = str(e).lower()
            if "duplicate" not in text and "already exists" not in text:
                log.warning("could not add %s.%s: %s", table.name, name, type(e).__name__)
