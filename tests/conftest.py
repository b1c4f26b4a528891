"""Shared fixtures: real SQLite files, the real PostgreSQL server, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
PG_ADMIN_URL = os.environ.get(
    "HPO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_configure(config: pytest.Config) -> None:
    # Trial processes are spawned: they find tests/toy_objectives.py through sys.path.
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards.

    In CI (CI=true) an unreachable server fails the test instead of skipping it.
    """
    import sqlalchemy as sa

    # NullPool: a test may restart the server, which would leave a pooled connection dead.
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"hpo_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as con:
            con.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {e.orig}")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as con:
        con.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage backend in turn: the contract tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("pg_url")


def hpo_env(**extra: str) -> dict[str, str]:
    # Nor a scheduler's job (a CI runner in a Slurm job or a Kubernetes pod): there a worker's
    # SIGTERM would preempt rather than drain, and a test would run in another world.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HPO_", "SLURM_")) and k != "KUBERNETES_SERVICE_HOST"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_hpo(
    *args: str, cwd: Path | None = None, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `hpo` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd,
        env=hpo_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def toy_spec(n_trials: int = 8, *, pruner: bool = True) -> str:
    """The plain-Optuna toy study most CLI tests run: two parameters, a median pruner."""
    return (
        "name: toy\n"
        "objective: toy_objectives:quadratic\n"
        "metric: loss\n"
        "direction: minimize\n"
        "search_space:\n"
        "  x: {type: float, low: -10, high: 10}\n"
        "  y: {type: int, low: 0, high: 5}\n"
        "sampler: {type: tpe, seed: 0}\n"
        + ("pruner: {type: median, n_startup_trials: 3}\n" if pruner else "")
        + f"budget: {{n_trials: {n_trials}}}\n"
    )


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real one-node Slurm cluster (munged, slurmctld, slurmd on loopback), started once per
    session (tests/slurm_cluster.py). In CI (CI=true) one that cannot start fails the test."""
    from slurm_cluster import SlurmCluster, SlurmUnavailable

    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Slurm is required in CI and did not start: {e}")
        pytest.skip(f"no Slurm: {e}")
    yield cluster
    cluster.stop()
