"""Worker memory: resident memory of ``hpo worker`` and its trial processes over a long study.

One study (default 10,000 trials; PostgreSQL, or a SQLite file with ``--storage sqlite``) of
a near-zero-cost objective (``growth_objective:light``: 3 x report/should_prune, no sleep;
TPE + Hyperband over the 4 parameters of ``coordination.py``) is run by one
``hpo worker STUDY --processes 2``. Every ``--interval`` seconds the script reads VmRSS from
``/proc/PID/status`` of the worker and of each of its descendants (the trial processes, and
multiprocessing's forkserver and resource tracker), and counts the finished trials in the
database. RSS counts pages shared with a parent (a forked trial process shares the
forkserver's) in both.
hpo is driven only through its CLI and observed only through /proc and the database.

Printed: RSS at 1%, 10%, 25%, 50%, 75% and 100% of the trials (100, 1k, 2.5k, 5k, 7.5k, 10k
by default), the peaks, and the growth per 1,000 trials after the first 10% (a least-squares
slope). What "bounded" can mean: the worker's trial cache (Optuna's ``_CachedStorage``, which
the sampler and pruner read) holds every trial of the study, so the worker's memory must grow
linearly with the study; the script measures how much one cached trial takes (the trials of
this study loaded with Optuna under ``tracemalloc``) and the bound is

    worker growth after the first 10%  <=  2 x (bytes per cached trial) x (trials added) + 32 MiB

(2x for allocator overhead and the cache's own indexes; 32 MiB for one-off allocations made
after the first 10%), and each trial process, which holds no trials, grows by at most 16 MiB.
Growth beyond that is a leak: memory kept per trial run rather than per trial stored.

    python benchmarks/worker_memory.py --trials 10000 --json benchmarks/results/memory.json \
        --plot benchmarks/results/memory.png
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import growth_objective as go  # noqa: E402

T = TypeVar("T")
PG_ADMIN = os.environ.get("HPO_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STUDY = "memory"
MIB = 1024 * 1024
CHECKPOINTS = (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)  # of --trials
CACHE_FACTOR = 2.0  # RSS per cached trial allowed, relative to its traced Python size
FIXED_SLACK_MIB = 32.0
TRIAL_PROCESS_SLACK_MIB = 16.0
SPEC = """\
name: {name}
objective: growth_objective:light
metric: loss
direction: minimize
search_space:
{space}sampler: {{type: {sampler}, seed: 0}}
pruner: {{type: hyperband, min_resource: 1, max_resource: {steps}}}
budget: {{n_trials: {trials}}}
"""


# -- storage ---------------------------------------------------------------------------
def _admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def fresh_storage(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'memory.db'}"
    name = f"hpo_memory_{uuid.uuid4().hex[:8]}"
    with _admin().connect() as con:
        con.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_storage(url: str) -> None:
    if url.startswith("postgresql"):
        name = sa.engine.make_url(url).database

        def drop() -> bool:
            with _admin().connect() as con:
                con.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return True

        _retry(drop)


def _retry(fn: Callable[[], T | None], attempts: int = 30) -> T:
    """``fn()`` until it gives a value, riding out a database restart (up to a minute)."""
    for i in range(attempts):
        try:
            value = fn()
            if value is not None:
                return value
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            if i == attempts - 1:
                raise
        time.sleep(2)
    raise RuntimeError("the database stayed unreachable")


def env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


_FINISHED = sa.text(
    "SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
    "WHERE s.study_name = :name AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL')"
)


def finished(engine: sa.Engine) -> int | None:
    """Finished trials of the study; None while the database is unreachable."""
    try:
        with engine.connect() as con:
            return int(con.execute(_FINISHED, {"name": STUDY}).scalar_one())
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        return None  # a restarted server: the worker rides it out, and so does the sampler


# -- /proc -----------------------------------------------------------------------------
def status_kib(pid: int, key: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _procs() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


def children(pid: int) -> dict[int, str]:
    """The worker's descendants: pid -> "trial", "forkserver", "resource_tracker" or "other".

    Trial processes are the worker's children under the spawn start method, and children of
    its forkserver under forkserver (their command line is then the forkserver's).
    """
    procs = _procs()
    kinds: dict[int, str] = {}
    for p, (ppid, cmd) in procs.items():
        if ppid != pid:
            continue
        if "resource_tracker" in cmd:
            kinds[p] = "resource_tracker"
        elif "forkserver" in cmd:
            kinds[p] = "forkserver"
        else:
            kinds[p] = "trial" if "spawn_main" in cmd else "other"
    for p, (ppid, _) in procs.items():
        if kinds.get(ppid) == "forkserver":
            kinds[p] = "trial"
    return kinds


# -- the run ---------------------------------------------------------------------------
def run(url: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    spec = args.tmp / "memory.yaml"
    spec.write_text(
        SPEC.format(
            name=STUDY,
            space=go.SPACE_YAML,
            sampler=args.sampler,
            steps=go.LIGHT_STEPS,
            trials=args.trials,
        )
    )
    hpo = [sys.executable, "-m", "hpo.cli"]
    subprocess.run(
        [*hpo, "create", str(spec), "--storage", url],
        check=True,
        env=env(),
        cwd=args.tmp,
        stdout=subprocess.DEVNULL,
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    log = (args.tmp / "worker.log").open("w")
    cmd = [*hpo, "worker", STUDY, "--processes", str(args.processes), "--storage", url]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env(), cwd=args.tmp, stdout=log, stderr=log)
    samples: list[dict[str, Any]] = []
    info: dict[str, Any] = {"timed_out": False}
    try:
        while proc.poll() is None:
            tick = time.monotonic()
            if tick - start > args.timeout:
                info["timed_out"] = True
                proc.send_signal(signal.SIGINT)  # finish running trials, then exit
                proc.wait(timeout=120)
                break
            worker = status_kib(proc.pid)
            kids = {p: (k, status_kib(p)) for p, k in children(proc.pid).items()}
            hwm = status_kib(proc.pid, "VmHWM")
            n = finished(engine)
            if n is None:
                info["db_unreachable_samples"] = info.get("db_unreachable_samples", 0) + 1
                n = samples[-1]["finished"] if samples else 0
            if worker is not None:
                trial_kib = {p: r for p, (k, r) in kids.items() if k == "trial" and r}
                samples.append(
                    {
                        "t_s": round(tick - start, 2),
                        "finished": n,
                        "worker_mib": round(worker / 1024, 2),
                        "worker_hwm_mib": round((hwm or 0) / 1024, 2),
                        "trial_mib": {str(p): round(r / 1024, 2) for p, r in trial_kib.items()},
                        "trials_sum_mib": round(sum(trial_kib.values()) / 1024, 2),
                        "other_children_mib": round(
                            sum(r or 0 for k, r in kids.values() if k != "trial") / 1024, 2
                        ),
                    }
                )
                if len(samples) % 30 == 0:
                    s = samples[-1]
                    print(
                        f"  {s['t_s']:7.0f} s  {n:6d} trials  worker {s['worker_mib']:.1f} MiB"
                        f"  trial processes {s['trials_sum_mib']:.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    info["wall_s"] = round(time.monotonic() - start, 1)
    info["returncode"] = proc.returncode
    info["finished"] = _retry(lambda: finished(engine))
    engine.dispose()
    if proc.returncode not in (0, None) and not info["timed_out"]:
        tail = (args.tmp / "worker.log").read_text()[-2000:]
        raise RuntimeError(f"hpo worker exited {proc.returncode}:\n{tail}")
    return samples, info


def bytes_per_cached_trial(url: str) -> tuple[float, int]:
    """Python memory of the study's trials as Optuna holds them (tracemalloc), per trial."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(STUDY)
        storage.get_all_trials(study_id, deepcopy=False)  # warm: imports, compiled queries
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        trials = storage.get_all_trials(study_id, deepcopy=False)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / max(len(trials), 1), len(trials)
    finally:
        storage.engine.dispose()


def slope_per_1k(points: list[tuple[int, float]]) -> float | None:
    """Least-squares MiB per 1,000 trials."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 1000


def at(samples: list[dict[str, Any]], n: int) -> dict[str, Any] | None:
    """The first sample with at least ``n`` finished trials (else the last one)."""
    for s in samples:
        if s["finished"] >= n:
            return s
    return samples[-1] if samples else None


def live_samples(samples: list[dict[str, Any]], processes: int) -> list[dict[str, Any]]:
    """Samples while every trial process was up: not the worker's start-up or teardown."""
    return [s for s in samples if len(s["trial_mib"]) == processes] or samples


def summarize(
    samples: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    first = max(1, round(args.trials * 0.1))
    live = live_samples(samples, args.processes)
    later = [s for s in live if s["finished"] >= first]
    start, end = at(live, first), live[-1]
    added = end["finished"] - (start["finished"] if start else 0)
    per_trial, n_loaded = info["bytes_per_trial"], info["trials_loaded"]
    bound = CACHE_FACTOR * per_trial * added / MIB + FIXED_SLACK_MIB
    growth = end["worker_mib"] - start["worker_mib"] if start else None
    trial_growth = (
        end["trials_sum_mib"] - start["trials_sum_mib"] if start else None
    )  # summed over slots
    trial_bound = TRIAL_PROCESS_SLACK_MIB * args.processes
    return {
        "first_trials": first,
        "worker_growth_mib": None if growth is None else round(growth, 1),
        "worker_bound_mib": round(bound, 1),
        "worker_slope_mib_per_1k": _r(
            slope_per_1k([(s["finished"], s["worker_mib"]) for s in later])
        ),
        "worker_bytes_per_trial": None
        if growth is None or added <= 0
        else round(growth * MIB / added),
        "trials_growth_mib": None if trial_growth is None else round(trial_growth, 1),
        "trials_bound_mib": trial_bound,
        "trials_slope_mib_per_1k": _r(
            slope_per_1k([(s["finished"], s["trials_sum_mib"]) for s in later])
        ),
        "worker_peak_mib": max(s["worker_mib"] for s in samples),
        "worker_hwm_mib": max(s["worker_hwm_mib"] for s in samples),
        "trials_peak_mib": max(s["trials_sum_mib"] for s in samples),
        "total_peak_mib": max(
            s["worker_mib"] + s["trials_sum_mib"] + s["other_children_mib"] for s in samples
        ),
        "cached_bytes_per_trial": round(per_trial),
        "cached_trials_measured": n_loaded,
        "trials_added_after_first": added,
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def report(samples: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> bool:
    print(
        f"hpo worker --processes {args.processes}, {args.trials:,} trials of "
        f"growth_objective:light ({args.sampler} + Hyperband), {args.storage}; "
        f"{info['finished']:,} finished in {info['wall_s']:.0f} s "
        f"({info['finished'] / max(info['wall_s'], 1e-9):.1f} trials/s), "
        f"RSS sampled every {args.interval:g} s"
        + (
            f"; the database was unreachable for {info['db_unreachable_samples']} samples"
            if info.get("db_unreachable_samples")
            else ""
        )
    )
    print(
        "\ncheckpoint | finished at sample | worker RSS MiB | trial processes RSS MiB "
        "(each) | sum | forkserver, resource tracker MiB"
    )
    live = live_samples(samples, args.processes)
    for frac in CHECKPOINTS:
        n = max(1, round(args.trials * frac))
        s = at(live, n)
        if s is None:
            continue
        each = ", ".join(f"{v:.1f}" for v in s["trial_mib"].values())
        print(
            f"{n:>10,} | {s['finished']:>18,} | {s['worker_mib']:>14.1f} | {each:>29} | "
            f"{s['trials_sum_mib']:>5.1f} | {s['other_children_mib']:.1f}"
        )
    sm = summarize(samples, info, args)
    first = sm["first_trials"]
    print(
        f"\npeak: worker {sm['worker_peak_mib']:.1f} MiB (VmHWM {sm['worker_hwm_mib']:.1f}), "
        f"trial processes {sm['trials_peak_mib']:.1f} MiB together, "
        f"all {sm['total_peak_mib']:.1f} MiB"
    )
    print(
        f"growth after the first {first:,} trials ({sm['trials_added_after_first']:,} trials "
        f"added): worker {sm['worker_growth_mib']} MiB ({sm['worker_slope_mib_per_1k']} MiB "
        f"per 1k trials, least squares; {sm['worker_bytes_per_trial']} bytes per trial); "
        f"trial processes {sm['trials_growth_mib']} MiB ({sm['trials_slope_mib_per_1k']} MiB "
        f"per 1k)"
    )
    print(
        f"a cached trial of this study: {sm['cached_bytes_per_trial']:,} bytes of Python objects "
        f"(Optuna FrozenTrial, {sm['cached_trials_measured']:,} trials loaded under "
        f"tracemalloc); {args.trials:,} trials -> "
        f"{sm['cached_bytes_per_trial'] * args.trials / MIB:.1f} MiB that the worker's trial "
        "cache must hold"
    )
    ok_w = sm["worker_growth_mib"] is not None and sm["worker_growth_mib"] <= sm["worker_bound_mib"]
    ok_t = sm["trials_growth_mib"] is not None and sm["trials_growth_mib"] <= sm["trials_bound_mib"]
    complete = info["finished"] >= args.trials and not info["timed_out"]
    ok = ok_w and ok_t and complete
    print(
        f"\n{'PASS' if ok else 'FAIL'}: worker grew {sm['worker_growth_mib']} MiB after the first "
        f"{first:,} trials (bound {sm['worker_bound_mib']} MiB = {CACHE_FACTOR:g} x cached "
        f"trial size x trials added + {FIXED_SLACK_MIB:g} MiB): {'ok' if ok_w else 'over'}; "
        f"trial processes grew {sm['trials_growth_mib']} MiB together (bound "
        f"{sm['trials_bound_mib']:g} MiB): {'ok' if ok_t else 'over'}"
        + ("" if complete else f"; only {info['finished']:,} of {args.trials:,} trials ran")
    )
    info["summary"] = sm
    info["pass"] = ok
    return ok


def plot(samples: list[dict[str, Any]], info: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [s["finished"] for s in samples]
    ax.plot(xs, [s["worker_mib"] for s in samples], label="worker")
    slots = sorted({p for s in samples for p in s["trial_mib"]}, key=int)
    for i, pid in enumerate(slots):
        pts = [(s["finished"], s["trial_mib"][pid]) for s in samples if pid in s["trial_mib"]]
        ax.plot(*zip(*pts, strict=True), lw=1, label=f"trial process {i + 1} (pid {pid})")
    sm = info.get("summary", {})
    start = at(samples, sm.get("first_trials", 0))
    if start is not None and sm:
        per = CACHE_FACTOR * sm["cached_bytes_per_trial"] / MIB
        x0, y0 = start["finished"], start["worker_mib"] + FIXED_SLACK_MIB
        x1 = xs[-1]
        ax.plot([x0, x1], [y0, y0 + per * (x1 - x0)], "k--", lw=1, label="bound for the worker")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("hpo worker RSS over a study (VmRSS, sampled each second)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--timeout", type=float, default=3600.0, help="stop the worker after this")
    p.add_argument("--json", type=Path, help="write the summary and every sample here")
    p.add_argument(
        "--plot", default=str(HERE / "results" / "memory.png"), help="PNG path; '' for none"
    )
    args = p.parse_args()
    if sys.platform != "linux":
        p.error("reads /proc: Linux only")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = Path(tmp)
        url = fresh_storage(args.storage, args.tmp)
        try:
            samples, info = run(url, args)
            info["bytes_per_trial"], info["trials_loaded"] = bytes_per_cached_trial(url)
        finally:
            drop_storage(url)
    if not samples:
        sys.exit("no sample taken: the worker exited at once")
    ok = report(samples, info, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: str(v) for k, v in vars(args).items() if k != "tmp"}
        doc = {"config": config, **info, "samples": samples}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.plot:
        plot(samples, info, Path(args.plot))
        print(f"plot: {args.plot}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
