"""Faults lose nothing: killed trial processes and workers, signals, stop requests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import hpo_env, run_hpo, write_spec
from optuna.trial import TrialState

SLEEPER = """\
name: faults
objective: toy_objectives:sleeper
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
fixed: {{steps: {steps}, step_s: {step_s}}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: {n_trials}}}
retry: {{max_retries: 2, heartbeat_interval: 1, grace_period: 3}}
checkpoint_dir: {ckpt}
"""


def sleeper_spec(
    tmp_path: Path, *, n_trials: int = 4, steps: int = 10, step_s: float = 0.2
) -> Path:
    text = SLEEPER.format(n_trials=n_trials, steps=steps, step_s=step_s, ckpt=tmp_path / "ckpt")
    return write_spec(tmp_path / "faults.yaml", text)


def start_worker(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        # Not -v: nobody reads the pipes until the worker exits, so keep its output small.
        [sys.executable, "-m", "hpo.cli", "worker", "faults", "--processes", "1", *args],
        env=hpo_env(HPO_STORAGE=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def trial_pids(worker_pid: int) -> list[int]:
    """The worker's live trial processes: the children of its forkserver (not the server
    itself, not multiprocessing's resource tracker, not zombies).

    -ww: without it ps cuts args to the terminal width, and once pids grow a digit late in
    a suite run the names that tell these processes apart fall off the end.
    """
    out = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    live = [(int(pid), int(ppid), args) for pid, ppid, stat, args in rows if stat[0] != "Z"]
    servers = {pid for pid, ppid, args in live if ppid == worker_pid and "forkserver" in args}
    return [pid for pid, ppid, _ in live if ppid in servers]


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def only_trial_pid(worker_pid: int) -> int:
    """The one trial process of a 1-slot worker, waiting out a child that is just starting."""
    pids: list[int] = []

    def single() -> bool:
        pids[:] = trial_pids(worker_pid)
        return len(pids) == 1

    wait_for(single, timeout=10, what="exactly one trial process")
    return pids[0]


def wait_for(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def progress_of(tmp_path: Path) -> dict[str, int]:
    return {
        p.parent.name: int(p.read_text() or 0)
        for p in (tmp_path / "ckpt").glob("faults-*/*/progress")
    }


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="faults", storage=url).get_trials()


def assert_exact(url: str, n: int) -> list[optuna.trial.FrozenTrial]:
    ts = trials(url)
    finished = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n
    assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return ts


def test_killed_trial_process_is_retried_from_its_checkpoint(
    tmp_path: Path, sqlite_url: str
) -> None:
    spec = sleeper_spec(tmp_path, n_trials=3)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    worker = start_worker(sqlite_url)
    wait_for(lambda: any(v >= 3 for v in progress_of(tmp_path).values()), what="progress")
    victim = only_trial_pid(worker.pid)
    os.kill(victim, signal.SIGKILL)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    ts = assert_exact(sqlite_url, 3)
    failed = [t for t in ts if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "trial process died" in failed[0].user_attrs["fail_reason"]
    (retry,) = [t for t in ts if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == failed[0].params
    assert retry.user_attrs["resumed_from"] >= 3  # resumed, not restarted


@pytest.mark.slow
def test_sigkilled_worker_trial_goes_stale_and_another_worker_retries_it(
    tmp_path: Path, pg_url: str
) -> None:
    spec = sleeper_spec(tmp_path, n_trials=4)
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    victim = start_worker(pg_url)
    wait_for(lambda: any(v >= 3 for v in progress_of(tmp_path).values()), what="progress")
    survivor = start_worker(pg_url)
    orphans = trial_pids(victim.pid)
    assert orphans
    victim.send_signal(signal.SIGKILL)  # no chance to clean up: only the heartbeat tells
    victim.communicate(timeout=30)
    _, err = survivor.communicate(timeout=180)
    assert survivor.returncode == 0, err
    ts = assert_exact(pg_url, 4)
    stale = [t for t in ts if t.state == TrialState.FAIL]
    assert len(stale) == 1
    assert stale[0].user_attrs["fail_reason"].startswith(f"worker {socket.gethostname()}:")
    assert f":{victim.pid} lost: no heartbeat for " in stale[0].user_attrs["fail_reason"]
    (retry,) = [t for t in ts if t.system_attrs.get("failed_trial") == stale[0].number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from"] >= 3
    # every trial process died with its worker (its forkserver exits, PR_SET_PDEATHSIG
    # kills them): none is left training
    wait_for(lambda: not any(alive(pid) for pid in orphans), timeout=10, what="orphans dead")


def test_sigterm_once_finishes_the_trial_twice_abandons_it(tmp_path: Path, sqlite_url: str) -> None:
    spec = sleeper_spec(tmp_path, n_trials=5, steps=10, step_s=0.2)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    worker = start_worker(sqlite_url)
    wait_for(lambda: bool(progress_of(tmp_path)), what="a running trial")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143, err  # interrupted, though it finished its trial
    ts = trials(sqlite_url)
    assert [t.state for t in ts] == [TrialState.COMPLETE]  # finished, and nothing new started

    worker = start_worker(sqlite_url)
    wait_for(lambda: len(progress_of(tmp_path)) == 2, what="a second trial")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    ts = trials(sqlite_url)
    assert ts[1].state == TrialState.FAIL and "retry" in ts[1].user_attrs["fail_reason"]
    assert ts[2].state == TrialState.WAITING and ts[2].system_attrs["failed_trial"] == 1

    # a later worker picks the abandoned trial up and finishes the budget exactly
    worker = start_worker(sqlite_url)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert_exact(sqlite_url, 5)


def test_a_signal_to_the_whole_process_group_is_handled_as_one_to_the_worker(
    tmp_path: Path, sqlite_url: str
) -> None:
    """`timeout`, a terminal, systemd and Slurm signal a whole process group. Trial processes
    (and the server they fork from) are in groups of their own, so the worker alone decides:
    here it finishes the running trial, rather than see its process die and fail it."""
    spec = sleeper_spec(tmp_path, n_trials=5, steps=30, step_s=0.2)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    cmd = [sys.executable, "-m", "hpo.cli", "worker", "faults", "--processes", "1"]
    # `timeout` leads a process group of its own and signals all of it (no --foreground)
    done = subprocess.run(
        ["timeout", "-s", "TERM", "4", *cmd],
        env=hpo_env(HPO_STORAGE=sqlite_url),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 124, done.stderr  # timeout's code: it did send the signal
    assert "died" not in done.stderr, done.stderr
    assert [t.state for t in trials(sqlite_url)] == [TrialState.COMPLETE], done.stderr
    assert list(progress_of(tmp_path).values()) == [30]


def test_trials_sent_ahead_go_back_to_the_queue_when_a_worker_drains(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Short trials get their successor sent ahead; a drained worker returns those unstarted
    (WAITING, parameters kept, no failed attempt), and the next worker runs them."""
    spec = sleeper_spec(tmp_path, n_trials=24, steps=3, step_s=0.2)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    worker = start_worker(sqlite_url, "--processes", "2")
    wait_for(lambda: len(progress_of(tmp_path)) >= 6, what="trials sent ahead")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143, err
    ts = trials(sqlite_url)
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    returned = [t for t in ts if t.state == TrialState.WAITING]
    assert returned, "no trial was sent ahead"
    assert all(t.params and "failed_trial" not in t.system_attrs for t in returned)
    assert not [t for t in ts if t.state == TrialState.FAIL]

    worker = start_worker(sqlite_url, "--processes", "2")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    ts = assert_exact(sqlite_url, 24)
    assert len(ts) == 24 and not [t for t in ts if t.state == TrialState.FAIL]
    by_number = {t.number: t for t in ts}
    for t in returned:  # the same trial ran later, with the parameters it was sent with
        assert by_number[t.number].params == t.params
        assert by_number[t.number].state == TrialState.COMPLETE


def test_hpo_stop_reaches_every_worker(tmp_path: Path, pg_url: str) -> None:
    spec = sleeper_spec(tmp_path, n_trials=50, steps=5, step_s=0.2)
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    workers = [start_worker(pg_url) for _ in range(2)]
    wait_for(lambda: len(progress_of(tmp_path)) >= 2, what="two running trials")
    res = run_hpo("stop", "faults", "--storage", pg_url)
    assert res.returncode == 0, res.stderr
    for w in workers:
        _, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
        assert "stopped by hpo stop" in err
    ts = trials(pg_url)
    # each finished its running trial; a trial sent ahead went back to the queue unstarted
    assert ts and all(t.state in (TrialState.COMPLETE, TrialState.WAITING) for t in ts)
    assert len(ts) < 50
    status = run_hpo("status", "faults", "--storage", pg_url)
    assert "stop requested: graceful" in status.stdout


def _pg_restart_possible() -> bool:
    import shutil

    return os.geteuid() == 0 and shutil.which("pg_ctlcluster") is not None


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.restarts_postgres
@pytest.mark.skipif(
    not _pg_restart_possible() and os.environ.get("CI") != "true",
    reason="restarting PostgreSQL needs root and pg_ctlcluster",
)
def test_postgres_restart_while_workers_run_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    spec = sleeper_spec(tmp_path, n_trials=12, steps=4, step_s=0.1)
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    workers = [start_worker(pg_url) for _ in range(2)]
    wait_for(lambda: len(progress_of(tmp_path)) >= 3, what="some trials")
    _restart_postgres()
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    ts = trials(pg_url)
    finished = [t for t in ts if t.state == TrialState.COMPLETE]
    assert len(finished) == 12  # failed attempts, if any, were retried
    assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.slow
def test_terminated_connections_are_survived(tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    spec = sleeper_spec(tmp_path, n_trials=10, steps=4, step_s=0.1)
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    workers = [start_worker(pg_url) for _ in range(2)]
    wait_for(lambda: len(progress_of(tmp_path)) >= 2, what="some trials")
    engine = sa.create_engine(pg_url)
    with engine.connect() as con:
        killed = con.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'hpo:%%' AND datname = current_database()"
        ).scalar()
    engine.dispose()
    assert killed and killed >= 2
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    ts = assert_exact(pg_url, 10)
    assert [t for t in ts if t.state == TrialState.COMPLETE]


@pytest.mark.slow
def test_each_worker_process_holds_at_most_two_connections(tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    spec = sleeper_spec(tmp_path, n_trials=40, steps=2, step_s=0.05)
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    workers = [start_worker(pg_url, "--processes", "2") for _ in range(6)]
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    peak_per_process, peak_total = 0, 0
    while any(w.poll() is None for w in workers):
        with engine.connect() as con:
            rows = con.exec_driver_sql(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'hpo:%%' AND datname = current_database() "
                "GROUP BY application_name"
            ).all()
        if rows:
            peak_per_process = max(peak_per_process, max(n for _, n in rows))
            peak_total = max(peak_total, sum(n for _, n in rows))
        time.sleep(0.2)
    for w in workers:
        _, err = w.communicate(timeout=10)
        assert w.returncode == 0, err
    assert 1 <= peak_per_process <= 2
    assert peak_total <= 2 * len(workers)
    assert_exact(pg_url, 40)


def test_hpo_stop_now_abandons_running_trials_for_a_retry(tmp_path: Path, sqlite_url: str) -> None:
    spec = sleeper_spec(tmp_path, n_trials=4, steps=20, step_s=0.2)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    worker = start_worker(sqlite_url)
    wait_for(lambda: any(v >= 2 for v in progress_of(tmp_path).values()), what="progress")
    assert run_hpo("stop", "faults", "--now", "--storage", sqlite_url).returncode == 0
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    ts = trials(sqlite_url)
    assert ts[0].state == TrialState.FAIL and "retry" in ts[0].user_attrs["fail_reason"]
    assert ts[1].state == TrialState.WAITING and ts[1].system_attrs["failed_trial"] == 0
    # ended by SIGTERM, not killed: the objective's `finally` ran
    (trial_dir,) = (tmp_path / "ckpt").glob("faults-*/trial-*")
    assert (trial_dir / "finally").read_text() == "ran"
    # `hpo create` again clears the stop; the retry resumes from the abandoned checkpoint
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    worker = start_worker(sqlite_url)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    ts = assert_exact(sqlite_url, 4)
    assert ts[1].state == TrialState.COMPLETE and ts[1].user_attrs["resumed_from"] >= 2


def test_trial_orphaned_before_its_first_heartbeat_is_retried(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A worker killed between creating a trial and its first heartbeat leaves a RUNNING
    trial that Optuna's stale check never sees; hpo fails it after the grace period."""
    from optuna.distributions import FloatDistribution

    spec = sleeper_spec(tmp_path, n_trials=2, steps=2, step_s=0.1)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    orphan = optuna.load_study(study_name="faults", storage=sqlite_url).ask(
        {"x": FloatDistribution(0, 1)}
    )  # RUNNING, no heartbeat, nobody working on it
    worker = start_worker(sqlite_url)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    ts = assert_exact(sqlite_url, 2)
    assert ts[0].number == orphan.number and ts[0].state == TrialState.FAIL
    (retry,) = [t for t in ts if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == TrialState.COMPLETE and retry.params == ts[0].params


def fleet_rows(url: str) -> list[dict[str, Any]]:
    res = run_hpo("status", "faults", "--format", "json", "--storage", url)
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout)["workers"])


def test_sigkilled_worker_shows_as_lost_and_its_trial_says_why(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A worker killed without a word stays "running" in the fleet no longer than the grace
    period: it shows as lost, drops its trial once another worker took it over, and the
    trial it lost says which worker and for how long (not "no reason recorded")."""
    spec = sleeper_spec(tmp_path, n_trials=1, steps=20, step_s=0.25)
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    victim = start_worker(sqlite_url)
    wait_for(lambda: [w["state"] for w in fleet_rows(sqlite_url)] == ["running"], timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)

    wait_for(lambda: [w["state"] for w in fleet_rows(sqlite_url)] == ["lost"], timeout=30)
    (row,) = fleet_rows(sqlite_url)
    assert row["pid"] == victim.pid and row["trial_number"] == 0  # not yet taken over
    assert "lost" in run_hpo("status", "faults", "--storage", sqlite_url).stdout

    survivor = start_worker(sqlite_url)
    _, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    ts = assert_exact(sqlite_url, 1)
    (lost,) = [t for t in ts if t.state == TrialState.FAIL]
    host = socket.gethostname()
    reason = re.fullmatch(
        rf"worker {re.escape(host)}:{victim.pid} lost: no heartbeat for (\d+) s",
        lost.user_attrs["fail_reason"],
    )
    assert reason and int(reason[1]) >= 3, lost.user_attrs["fail_reason"]
    rows = {w["pid"]: w for w in fleet_rows(sqlite_url)}
    assert rows[victim.pid]["state"] == "lost" and rows[victim.pid]["trial_number"] is None
    assert rows[survivor.pid]["state"] == "stopped"


def start_run(spec: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "run", str(spec), "--storage", url],
        env=hpo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("command", "sig", "times", "code"),
    [
        ("run", signal.SIGINT, 1, 130),
        ("run", signal.SIGINT, 2, 130),  # Ctrl-C twice exited 0
        ("worker", signal.SIGINT, 1, 130),
        ("worker", signal.SIGTERM, 2, 143),
    ],
    ids=["run-int", "run-int-twice", "worker-int", "worker-term-twice"],
)
def test_interrupted_runs_exit_130_on_sigint_and_143_on_sigterm(
    tmp_path: Path, sqlite_url: str, command: str, sig: signal.Signals, times: int, code: int
) -> None:
    spec = sleeper_spec(tmp_path, n_trials=5, steps=10, step_s=0.2)
    if command == "run":
        proc = start_run(spec, sqlite_url)
    else:
        assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
        proc = start_worker(sqlite_url)
    wait_for(lambda: bool(progress_of(tmp_path)), what="a running trial")
    for _ in range(times):
        proc.send_signal(sig)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    first = trials(sqlite_url)[0]
    assert first.state == (TrialState.COMPLETE if times == 1 else TrialState.FAIL)


def test_exit_codes_are_in_the_help() -> None:
    for command in ("run", "worker"):
        res = run_hpo(command, "--help")
        assert "130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM" in " ".join(
            res.stdout.split()
        )
