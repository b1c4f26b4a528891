"""`hpo slurm` against a real Slurm: a one-node cluster the suite starts (tests/slurm_cluster.py).

The study runs to its exact budget as a job array; cancelling one task, a preemption signal
and a requeue lose nothing: the trials they interrupt are recorded as preempted, queued
again without counting against ``max_retries`` (0 here), and resume from their checkpoints.
The storage URL (with a password) is never in the script or on a command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from conftest import hpo_env, run_hpo, write_spec
from slurm_cluster import SlurmCluster

from hpo.study import OUTCOMES

pytestmark = [pytest.mark.slurm, pytest.mark.postgres]

SPEC = """\
name: slurmy
objective: toy_objectives:sleeper
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
fixed: {{steps: {steps}, step_s: {step_s}}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: {n_trials}}}
retry: {{max_retries: 0, heartbeat_interval: 1, grace_period: 20}}
checkpoint_dir: {ckpt}
"""
PASSWORD = "s3cret-pw"
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")


def spec(tmp_path: Path, *, n_trials: int, steps: int = 3, step_s: float = 0.1) -> Path:
    text = SPEC.format(n_trials=n_trials, steps=steps, step_s=step_s, ckpt=tmp_path / "ckpt")
    return write_spec(tmp_path / "slurmy.yaml", text)


def with_password(url: str) -> str:
    """The test server trusts loopback, so any password works: the point is where it shows."""
    return sa.engine.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def submit(slurm: SlurmCluster, tmp_path: Path, url: str, *args: str) -> str:
    done = run_hpo(
        "slurm", str(tmp_path / "slurmy.yaml"), *args, cwd=tmp_path, HPO_STORAGE=url, **slurm.env
    )
    assert done.returncode == 0, done.stderr
    assert "submitted job" in done.stderr
    return done.stdout.strip()


def wait_for(what: str, ready: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value is not None and value is not False:  # a trial number may be 0
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_done(slurm: SlurmCluster, job: str, timeout: float = 90) -> list[str]:
    def done() -> list[str] | None:
        states = slurm.states(job)
        return states if states and all(s in DONE for s in states) else None

    return wait_for(f"job {job} to end ({slurm.states(job)})", done, timeout)


def fleet(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as con:
        rows = con.execute(sa.text("SELECT job, pid, trial_number, state FROM hpo_workers"))
        return [dict(r._mapping) for r in rows]


_RUNNING_ON = sa.text(
    "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
    "WHERE t.state = 'RUNNING' AND a.key = 'worker' AND a.value_json LIKE :pid"
)


def running_trial(url: str, job: str, tmp_path: Path, min_steps: int) -> int | None:
    """The trial the worker of array task ``job`` runs, once it checkpointed ``min_steps``."""
    pids = {row["pid"] for row in fleet(url) if row["job"] == job}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as con:
        numbers = [n for pid in pids for (n,) in con.execute(_RUNNING_ON, {"pid": f"%:{pid}/%"})]
    for n in numbers:
        marker = next((tmp_path / "ckpt").glob(f"slurmy-*/trial-{n:06d}/progress"), None)
        if marker is not None and int(marker.read_text() or 0) >= min_steps:
            return int(n)
    return None


def outcomes(url: str) -> dict[str, int]:
    done = json.loads(run_hpo("status", "slurmy", "--format", "json", HPO_STORAGE=url).stdout)
    return {k: v for k, v in done["counts"].items() if v}


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="slurmy", storage=url).get_trials()


def assert_preempted_and_resumed(url: str, number: int, n_trials: int) -> None:
    """Trial ``number`` was preempted, queued again (max_retries is 0) and its retry
    resumed from its checkpoint; the budget is exact and nothing failed."""
    ts = trials(url)
    first = ts[number]
    assert first.state == optuna.trial.TrialState.FAIL
    assert first.system_attrs["preempted"] is True and first.user_attrs["preempted"] is True
    assert "preempted" in first.user_attrs["fail_reason"]
    (retry,) = [t for t in ts if t.system_attrs.get("failed_trial") == number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] > 0
    assert outcomes(url) == {"complete": n_trials, "preempted": 1}


def test_a_study_runs_to_its_exact_budget_through_hpo_slurm(
    slurm: SlurmCluster, tmp_path: Path, pg_url: str
) -> None:
    spec(tmp_path, n_trials=6)
    url = with_password(pg_url)
    job = submit(slurm, tmp_path, url, "--nodes", "2", "-o", "job.sbatch")
    # while it runs: the password is on no command line (the workers', sbatch's, Slurm's)
    wait_for("a worker", lambda: any(r["job"] for r in fleet(pg_url)))
    ps = subprocess.run(["ps", "-e", "-ww", "-o", "args="], capture_output=True, text=True)
    assert "hpo.cli worker slurmy" in ps.stdout and PASSWORD not in ps.stdout
    assert wait_done(slurm, job) == ["COMPLETED", "COMPLETED"]
    assert outcomes(pg_url) == {"complete": 6}
    script = (tmp_path / "job.sbatch").read_text()
    assert PASSWORD not in script and "postgresql" not in script
    assert "#SBATCH --array=0-1" in script
    for log in (tmp_path / ".hpo" / "slurm").glob("*.out"):
        assert PASSWORD not in log.read_text()
    # status names each worker by its Slurm job and task
    assert {r["job"] for r in fleet(pg_url)} == {f"{job}_0", f"{job}_1"}
    status = run_hpo("status", "slurmy", HPO_STORAGE=pg_url)
    assert f"{job}_0" in status.stdout and f"{job}_1" in status.stdout


def test_scancel_of_one_task_mid_trial_loses_nothing(
    slurm: SlurmCluster, tmp_path: Path, pg_url: str
) -> None:
    """Slurm signals every process of the cancelled task (SIGTERM), trial processes too: its
    trial is preempted, and the other task resumes it from its checkpoint."""
    spec(tmp_path, n_trials=3, steps=10, step_s=0.15)
    job = submit(slurm, tmp_path, pg_url, "--nodes", "2")
    number = wait_for("task 0 mid-trial", lambda: running_trial(pg_url, f"{job}_0", tmp_path, 2))
    slurm.run("scancel", f"{job}_0")
    assert wait_done(slurm, job) == ["CANCELLED", "COMPLETED"] or sorted(slurm.states(job)) == [
        "CANCELLED",
        "COMPLETED",
    ]
    assert_preempted_and_resumed(pg_url, number, 3)
    # hpo export says it too, as its own outcome, beside the user attribute the dashboard shows
    export = json.loads(run_hpo("export", "slurmy", "--format", "json", HPO_STORAGE=pg_url).stdout)
    (row,) = [r for r in export if r["number"] == number]
    assert row["outcome"] == "preempted" and row["user_attrs"]["preempted"] is True


def test_a_preemption_signal_mid_trial_requeues_the_task_and_the_trial_resumes(
    slurm: SlurmCluster, tmp_path: Path, pg_url: str
) -> None:
    """Slurm's warning (SIGUSR1 to the batch shell, as --signal=B:USR1@N sends it) preempts
    the worker's trial; with --requeue the task requeues itself and resumes the trial."""
    spec(tmp_path, n_trials=1, steps=20, step_s=0.1)
    job = submit(slurm, tmp_path, pg_url, "--requeue")
    number = wait_for("the task mid-trial", lambda: running_trial(pg_url, f"{job}_0", tmp_path, 2))
    slurm.run("scancel", "--batch", "--signal=USR1", f"{job}_0")
    wait_for("the task to come back", lambda: int(slurm.job(f"{job}_0").get("Restarts", 0)) or None)
    assert wait_done(slurm, job) == ["COMPLETED"]
    assert_preempted_and_resumed(pg_url, number, 1)


def test_a_requeued_job_picks_up_where_it_stopped(
    slurm: SlurmCluster, tmp_path: Path, pg_url: str
) -> None:
    spec(tmp_path, n_trials=1, steps=20, step_s=0.1)
    job = submit(slurm, tmp_path, pg_url, "--requeue")
    number = wait_for("the task mid-trial", lambda: running_trial(pg_url, f"{job}_0", tmp_path, 2))
    slurm.run("scontrol", "requeue", f"{job}_0")
    assert wait_done(slurm, job) == ["COMPLETED"]
    assert int(slurm.job(f"{job}_0")["Restarts"]) == 1
    assert_preempted_and_resumed(pg_url, number, 1)


# -- the script, and bad input (no cluster needed) ---------------------------------------
def test_dry_run_prints_the_script_with_every_option_and_writes_nothing(tmp_path: Path) -> None:
    spec(tmp_path, n_trials=2)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--nodes", "3", "--gpus-per-node", "4", "--trials-per-gpu", "2", "-t", "1-12:00"]
    args += ["--partition", "gpu", "--account", "lab", "--sbatch-arg=--qos=high", "--requeue"]
    args += ["--signal-before", "300", "--setup", "module load cuda", "--dry-run"]
    done = run_hpo(
        "slurm", "slurmy.yaml", *args, cwd=tmp_path, HPO_STORAGE=url, PATH="/nonexistent"
    )
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for line in (
        "--job-name=hpo-slurmy",
        "--array=0-2",
        "--gres=gpu:4",
        "--time=1-12:00",
        "--partition=gpu",
        "--account=lab",
        "--signal=B:USR1@300",
        "--requeue",
        "--qos=high",
    ):
        assert f"#SBATCH {line}\n" in script
    assert "module load cuda\n" in script
    assert "worker slurmy --on-sigterm preempt --gpus all --per-gpu 2 &" in script
    assert str(tmp_path) not in script.split("#SBATCH --output=")[0]  # no URL, no db path
    assert "sqlite" not in script and "HPO_STORAGE=" not in script
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurmy.yaml"]  # nothing written


def test_the_script_runs_only_with_the_storage_in_its_environment(tmp_path: Path) -> None:
    spec(tmp_path, n_trials=2)
    script = run_hpo("slurm", "slurmy.yaml", "--dry-run", cwd=tmp_path).stdout
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "HPO_STORAGE is not set" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "2h"], "--time '2h': expected Slurm's"),
        (["-t", "1:00", "--signal-before", "60"], "--signal-before 60 s leaves no time"),
        (["--sbatch-arg", "--array=0-9"], "hpo slurm sets --array itself"),
        (["--sbatch-arg", "qos=high"], "expected one sbatch option"),
        (["--partition", "gpu;rm -rf /"], "not a Slurm partition name"),
        ([], "sbatch not found on PATH"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from hpo.cli import main

    spec(tmp_path, n_trials=2)
    monkeypatch.chdir(tmp_path)
    # no sbatch on PATH: the check comes before anything is written
    env = {"HPO_STORAGE": f"sqlite:///{tmp_path / 'study.db'}", "PATH": "/nonexistent"}
    done = CliRunner().invoke(main, ["slurm", "slurmy.yaml", *args], env=env)
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("hpo: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurmy.yaml"]


def test_an_older_database_gains_the_fleet_job_column(tmp_path: Path) -> None:
    """A database made before the fleet had a job column is upgraded when opened."""
    from hpo.storage import open_storage

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as con:
        con.exec_driver_sql(
            "CREATE TABLE hpo_workers (worker_id VARCHAR(128) PRIMARY KEY, study_id INTEGER "
            "NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, slot INTEGER NOT NULL, "
            "gpu VARCHAR(32), trial_number INTEGER, state VARCHAR(16) NOT NULL, started_at "
            "DATETIME NOT NULL, heartbeat_at DATETIME NOT NULL)"
        )
    open_storage(url)
    assert "job" in {c["name"] for c in sa.inspect(engine).get_columns("hpo_workers")}
    assert "preempted" in OUTCOMES


def test_this_job_names_a_slurm_array_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.storage import this_job

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert this_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert this_job() == "41"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert this_job() == "40_1"
    assert os.environ["SLURM_JOB_ID"] == "41"


# -- preemption outside Slurm ---------------------------------------------------------------
def test_sigusr1_preempts_anywhere_and_sigterm_with_on_sigterm_preempt(tmp_path: Path) -> None:
    """Outside a scheduler's job SIGTERM drains (test_faults.py); `--on-sigterm preempt` makes
    it preempt, and SIGUSR1 always does: exit 143 and 138, both attempts preempted, the
    trial queued again each time although max_retries is 0."""
    spec(tmp_path, n_trials=1, steps=40, step_s=0.1)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert run_hpo("create", "slurmy.yaml", cwd=tmp_path, HPO_STORAGE=url).returncode == 0
    marker = tmp_path / "ckpt"
    for args, sig, code in (
        (["--on-sigterm", "preempt"], signal.SIGTERM, 143),
        ([], signal.SIGUSR1, 138),
    ):
        worker = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "worker", "slurmy", "--gpus", "none", *args],
            cwd=tmp_path,
            env=hpo_env(HPO_STORAGE=url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            "a trial mid-way",
            lambda: any(int(p.read_text() or 0) >= 2 for p in marker.glob("*/*/progress")),
        )
        worker.send_signal(sig)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == code, err
        assert "preempted" in err
        for p in marker.glob("*/*/progress"):
            p.write_text("0")  # the next attempt runs long enough to be caught mid-way too
    assert outcomes(url) == {"preempted": 2, "waiting": 1}
