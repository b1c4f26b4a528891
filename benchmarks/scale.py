"""Scale: how many trials per second one PostgreSQL study can start, hpo against plain Optuna.

Every new hpo trial is created under the study lock (``Budget.turn()`` in hpo/storage: a row
lock on hpo's budget row, then the counts, Optuna's ``ask`` and its sampler), so however many
GPUs a study has, its trials start one after the other. This measures that rate with P
processes asking at once and an objective that does nothing (``sleep: 0``), so every process
is always asking:

- hpo: P separate ``hpo worker STUDY --processes 1`` (as P machines, or P Kubernetes pods,
  would run them);
- plain Optuna: P processes, each ``study.optimize`` on the same kind of fresh PostgreSQL
  database, with the same sampler and the same 4 parameters (the search space of
  benchmarks/coordination.py).

Each process's first trial waits at a gate (benchmarks/scale_objective.py) until all P have
reached theirs, so the start-up of P interpreters (seconds, on 2 cores) is not measured; the
gate opens, every process asks as fast as it can for ``--window`` seconds, and then they are
stopped (`hpo stop`; a stop file for Optuna). The rate counts the trials that started in the
window. Alongside: how many PostgreSQL backends were waiting on a lock, on average over the
window (sampled from ``pg_stat_activity`` every 0.1 s; when the study lock is saturated it
approaches P - 1), and how busy the machine's CPUs were (from /proc/stat).

    python benchmarks/scale.py                          # P = 1 2 4 8 16 32, TPE, ~4 minutes
    python benchmarks/scale.py --processes 1 8 --sampler random --only hpo

Uses the PostgreSQL server of HPO_BENCH_PG (default: postgres@127.0.0.1:5432), one fresh
database per point, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import sqlalchemy as sa
from coordination import PG_ADMIN, SPACE, append_rows, drop_storage, env, fresh_storage

SPEC = """\
name: scale
objective: scale_objective:objective
metric: loss
direction: minimize
{space}fixed: {{gate: {gate}}}
sampler: {{type: {sampler}, seed: 0}}
"""

PLAIN = """
import optuna, scale_objective as s
from pathlib import Path
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="plain", storage={url!r}, sampler={sampler})

def objective(trial):
    s.gate({gate!r})
    trial.suggest_float("x", -10, 10)
    trial.suggest_int("y", -10, 10)
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"])
    return 0.0

def stop(study, trial):
    if Path({gate!r}, "stop").exists():
        study.stop()

study.optimize(objective, callbacks=[stop])
"""


class Sampler(threading.Thread):
    """Samples, every 0.1 s, the backends of ``database`` waiting on a lock, and the CPUs."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
        self.database = database
        self.samples: list[tuple[float, int, int, int]] = []  # (time, waiters, busy, total)
        self.done = threading.Event()

    def run(self) -> None:
        query = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
        )
        while not self.done.is_set():
            try:
                with self.engine.connect() as con:
                    while not self.done.wait(0.1):
                        waiting = con.execute(query, {"db": self.database}).scalar_one()
                        con.rollback()
                        self.samples.append((time.time(), int(waiting), *_cpu_jiffies()))
            except sa.exc.OperationalError:  # the server restarted (other work on it): again
                self.done.wait(0.2)
        self.engine.dispose()

    def between(self, start: float, end: float) -> tuple[float, float]:
        """Mean backends waiting on a lock, and the CPUs' busy share, from start to end."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0
        busy = (inside[-1][2] - inside[0][2]) / max(inside[-1][3] - inside[0][3], 1)
        return statistics.fmean(s[1] for s in inside), busy


def _cpu_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def server_started(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            return str(con.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar_one())
    finally:
        engine.dispose()


def starts(url: str, study: str) -> list[float]:
    """When each trial of ``study`` started."""
    storage = optuna.storages.RDBStorage(url)
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        return sorted(t.datetime_start.timestamp() for t in trials if t.datetime_start)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def go_and_stop(gate: Path, procs: list[subprocess.Popen], args: argparse.Namespace, stop) -> float:
    """Wait until every process waits at the gate, open it, let them ask for ``--window``
    seconds, stop them; the moment the gate opened."""
    try:
        while len(list(gate.glob("ready-*"))) < len(procs):
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a process exited before the gate: " + _stderr(procs))
            time.sleep(0.05)
        (gate / "go").touch()
        opened = time.time()
        time.sleep(args.window)
        stop()
        for p in procs:
            if p.wait(timeout=120) != 0:
                raise SystemExit(f"exit {p.returncode}: {_stderr(procs)}")
        return opened
    finally:  # on any failure (the server restarted, say), leave no process behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _stderr(procs: list[subprocess.Popen]) -> str:
    return " | ".join(p.stderr.read().decode()[-300:] for p in procs if p.stderr and p.poll())


def run_hpo(url: str, processes: int, gate: Path, args: argparse.Namespace) -> tuple[list, float]:
    spec = gate / "scale.yaml"
    spec.write_text(SPEC.format(space=SPACE, gate=str(gate), sampler=args.sampler))
    hpo = [sys.executable, "-m", "hpo.cli"]
    base = {**env(), "HPO_STORAGE": url}
    # In the gate's directory: `hpo create` remembers its storage in ./.hpo.
    run = {"cwd": gate, "env": base}
    subprocess.run([*hpo, "create", str(spec)], check=True, capture_output=True, **run)
    cmd = [*hpo, "worker", "scale", "--processes", "1"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **run)
        for _ in range(processes)
    ]

    def stop() -> None:
        subprocess.run([*hpo, "stop", "scale"], check=True, capture_output=True, **run)

    opened = go_and_stop(gate, procs, args, stop)
    return starts(url, "scale"), opened


def run_plain(url: str, processes: int, gate: Path, args: argparse.Namespace) -> tuple[list, float]:
    sampler = (
        "optuna.samplers.TPESampler()"
        if args.sampler == "tpe"
        else "optuna.samplers.RandomSampler()"
    )
    optuna.create_study(study_name="plain", storage=url)
    code = PLAIN.format(url=url, sampler=sampler, gate=str(gate))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env(), stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    opened = go_and_stop(gate, procs, args, lambda: (gate / "stop").touch())
    return starts(url, "plain"), opened


def measure(setup: str, processes: int, args: argparse.Namespace) -> dict:
    url = fresh_storage("postgres", Path(args.tmp))
    started = server_started(url)
    database = sa.engine.make_url(url).database
    gate = Path(tempfile.mkdtemp(dir=args.tmp))
    sampler = Sampler(url, str(database))
    sampler.start()
    try:
        run = run_hpo if setup == "hpo" else run_plain
        rows, start = run(url, processes, gate, args)
    finally:
        sampler.done.set()
        sampler.join()
        drop_storage(url)
    end = start + args.window
    restarted = server_started(PG_ADMIN) != started
    inside = [t for t in rows if start <= t <= end]
    span = end - start
    waiting, busy = sampler.between(start, end)
    return {
        "setup": "hpo (P x worker -p 1)" if setup == "hpo" else "plain Optuna (P x optimize)",
        "processes": processes,
        "sampler": args.sampler,
        "trials": len(rows),
        "window_s": round(span, 1),
        "starts_per_s": round(len(inside) / span, 1),
        "mean_lock_waiters": round(waiting, 2),
        "cpu_busy": round(busy, 2),
        # The machine's 1-minute load average after the point: other work on it shows here.
        "load_1min": round(os.getloadavg()[0], 1),
        # Other work on this machine restarts the server now and then: such a point is void.
        "server_restarted": restarted,
    }


COLS = [
    "setup",
    "processes",
    "trials",
    "window_s",
    "starts_per_s",
    "mean_lock_waiters",
    "cpu_busy",
    "load_1min",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--only", choices=["hpo", "plain"], nargs="+", default=["hpo", "plain"])
    p.add_argument(
        "--window",
        type=float,
        default=8.0,
        help="seconds every process asks once the gate opens",
    )
    p.add_argument("--json", type=Path, help="append the rows to this JSON-lines file")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    print(" | ".join(COLS), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        for processes in args.processes:
            for setup in args.only:
                row = measure(setup, processes, args)
                for _ in range(2):  # measured again, up to twice, if the server restarted
                    if row["server_restarted"]:
                        print(" | ".join(str(row[c]) for c in COLS) + " (server restarted: again)")
                        row = measure(setup, processes, args)
                rows.append(row)
                print(" | ".join(str(row[c]) for c in COLS), flush=True)
    if args.json:
        append_rows(args.json, rows)


if __name__ == "__main__":
    main()
