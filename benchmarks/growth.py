"""Growth: per-trial coordination cost as a study grows, hpo against plain Optuna.

A trial here is pure coordination: ask (TPE over the 4 parameters of ``coordination.py``),
10 x (report, should_prune) under Hyperband(min_resource 1, max_resource 10), tell, and no
work in between (``growth_objective.py``). For each study size N (default 100, 1,000, 5,000,
10,000 finished trials), on PostgreSQL:

- **prefill**: one base database gets an hpo study (``hpo create``) and its finished trials,
  added with Optuna's ``study.add_trials`` in trial-number order. Their history is what a real
  TPE + Hyperband study would hold: params drawn from the search space, intermediate values
  from the objective's learning curve, and Hyperband's decisions simulated exactly as Optuna's
  pruner makes them (same bracket per trial number, a trial is promoted at a rung when its
  value is in the top third of that bracket's rung so far), so most trials end PRUNED after 2,
  4 or 10 steps and carry the ``completed_rung_*`` attributes the pruner reads. The base grows
  from one N to the next, is vacuumed and analyzed at each N (what PostgreSQL's autovacuum
  would have done meanwhile; the dev server runs without it) and snapshotted
  (``CREATE DATABASE ... TEMPLATE``);
  every measurement runs on a fresh copy of its snapshot, so both sides, and every repeat,
  start from the same study.
- **rounds**: ``--repeats`` rounds, each over all sizes in turn, so that load from other work
  on the machine falls on every size alike, not on whichever size ran when it came.
- **plain Optuna**: one fresh Python process per trial, as a user launching a process per
  trial would; each times itself from before ``optuna.load_study`` to after ``study.tell``
  (interpreter start and imports excluded). The figure is the median over the processes
  (``--plain-procs`` per N, spread over the rounds).
- **hpo**: ``hpo create --force`` sets the budget to N + warm-up + measured trials, so that
  ``hpo worker growth --processes 1`` runs exactly those; the cost is the worker's steady-state
  cycle time, read from the database afterwards: the gaps between consecutive
  ``datetime_complete`` of the M measured trials (the warm-up trials before them absorb
  start-up and the first full read). The headline is the median gap (robust to other load on
  a shared machine), and the mean, (last - first) / (M - 1), is printed beside it; one run
  per N and round, and the median over the rounds is taken.

hpo is driven only through its CLI and measured only through the database, so the script keeps
working while the worker changes. ``--profile`` runs the worker once more at the largest N
under cProfile (on its own copy, not the timed run) and prints where its time goes.

    python benchmarks/growth.py --sizes 100 1000 5000 10000 --profile \
        --json benchmarks/results/growth.json --plot benchmarks/results/growth.png
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import itertools
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import growth_objective as go  # noqa: E402

PG_ADMIN = os.environ.get("HPO_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STUDY = "growth"
TARGET = 2.0  # hpo's cost at every N within 2x of its cost at the smallest N
SPEC = """\
name: {name}
objective: growth_objective:objective
metric: loss
direction: minimize
search_space:
{space}sampler: {{type: tpe, seed: 0}}
pruner: {{type: hyperband, min_resource: 1, max_resource: {steps}}}
budget: {{n_trials: {n_trials}}}
"""


# -- databases -------------------------------------------------------------------------
def _admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _admin_sql(sql: str, attempts: int = 30) -> None:
    """Run ``sql`` on the server, riding out a restart of it (up to a minute)."""
    for i in range(attempts):
        try:
            with _admin().connect() as con:
                con.exec_driver_sql(sql)
            return
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            if i == attempts - 1:
                raise
            time.sleep(2)


def create_db(template: str | None = None) -> str:
    """A fresh database (a copy of ``template`` if given); returns its name."""
    name = f"hpo_growth_{uuid.uuid4().hex[:8]}"
    _admin_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def drop_db(name: str) -> None:
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def analyze_db(name: str) -> None:
    """``VACUUM ANALYZE``, as autovacuum does after a table's rows change (by default; the dev
    server runs without it). Without statistics the planner takes the 10,000 trials of a
    study for a few dozen and scans them all to find the few new ones."""
    url = db_url(name)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            con.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()  # a template database must have no open connection


def db_url(name: str) -> str:
    return sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def hpo_create(url: str, n_trials: int, tmp: Path, *, force: bool = False) -> None:
    spec = tmp / f"{STUDY}.yaml"
    spec.write_text(SPEC.format(name=STUDY, space=go.SPACE_YAML, steps=go.STEPS, n_trials=n_trials))
    cmd = [sys.executable, "-m", "hpo.cli", "create", str(spec), "--storage", url]
    subprocess.run(
        [*cmd, *(["--force"] if force else [])],
        check=True,
        env=env(),
        cwd=tmp,
        stdout=subprocess.DEVNULL,
    )


# -- prefill ---------------------------------------------------------------------------
class Prefill:
    """Finished trials with the history TPE + Hyperband(1, STEPS) would leave, in order."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=go.STEPS)
        self.pruner._try_initialization(None)  # type: ignore[arg-type]  # int max_resource
        self.rungs: dict[tuple[int, int], list[float]] = {}  # (bracket, rung) -> sorted values
        self.n = 0
        self.states: Counter[str] = Counter()
        self.seconds = 0.0

    def bracket(self, number: int) -> int:
        # Optuna's own assignment (a hash of study name and trial number).
        study, trial = SimpleNamespace(study_name=STUDY), SimpleNamespace(number=number)
        return self.pruner._get_bracket_id(study, trial)  # type: ignore[arg-type]

    def params(self) -> dict[str, Any]:
        r = self.rng
        return {
            "x": r.uniform(-10, 10),
            "y": r.randint(-10, 10),
            "lr": 10 ** r.uniform(-5, -1),
            "opt": r.choice(go.OPTIMIZERS),
        }

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        params = self.params()
        final = go.final_value(params)
        bracket = self.bracket(number)
        rf = self.pruner._reduction_factor
        values: dict[int, float] = {}
        rung_attrs: dict[str, float] = {}
        rung, pruned = 0, False
        for step in range(go.STEPS):
            v = values[step] = go.curve(final, step)
            # SuccessiveHalvingPruner.prune with min_resource 1, bootstrap_count 0.
            while not pruned and rf ** (bracket + rung) <= step:
                rung_attrs[f"completed_rung_{rung}"] = v
                competing = self.rungs.setdefault((bracket, rung), [])
                bisect.insort(competing, v)
                pruned = v > competing[max(len(competing) // rf - 1, 0)]
                rung += 1
            if pruned:
                break
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        self.states[state.name] += 1
        return optuna.create_trial(
            state=state,
            value=values[max(values)],  # a pruned trial's value is its last report, as in tell
            params=params,
            distributions=go.DISTRIBUTIONS,
            intermediate_values=values,
            system_attrs=rung_attrs,
        )

    def extend(self, n_total: int, chunk: int = 500) -> None:
        """Add trials until the study holds ``n_total``."""
        storage = optuna.storages.RDBStorage(self.url)
        try:
            study = optuna.load_study(study_name=STUDY, storage=storage)
            start = time.perf_counter()
            while self.n < n_total:
                k = min(chunk, n_total - self.n)
                study.add_trials([self.trial(self.n + i) for i in range(k)])
                self.n += k
                if sys.stderr.isatty():
                    print(f"  prefill {self.n}/{n_total}", end="\r", file=sys.stderr, flush=True)
            self.seconds += time.perf_counter() - start
        finally:
            storage.engine.dispose()  # a template database must have no open connection
        print(
            f"  prefilled {self.n} trials ({dict(self.states)}) in {self.seconds:.0f} s",
            file=sys.stderr,
        )


# -- plain Optuna ----------------------------------------------------------------------
def plain_runs(url: str, k: int, args: argparse.Namespace) -> list[dict[str, float]]:
    """``k`` timed plain processes (after ``--plain-warmup`` untimed ones), one after another."""
    runs = []
    for i in range(args.plain_warmup + k):
        out = subprocess.run(
            [sys.executable, str(HERE / "growth_objective.py"), url, STUDY],
            check=True,
            env=env(),
            cwd=args.tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if i >= args.plain_warmup:
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def plain_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    med = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0] if k != "pruned"}
    return {
        "plain_ms": med["total_ms"],
        "plain_parts_ms": {k: v for k, v in med.items() if k != "total_ms"},
        "plain_ms_all": [round(r["total_ms"], 1) for r in runs],
        "plain_pruned": sum(int(r["pruned"]) for r in runs),
        "plain_n": len(runs),
    }


# -- hpo -------------------------------------------------------------------------------
def run_worker(url: str, n: int, args: argparse.Namespace, profile: Path | None) -> float:
    """Set the budget to N + warm-up + measured and run one worker to the end; wall s."""
    hpo_create(url, n + args.warmup + args.measured, args.tmp, force=True)
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    cmd = [*prefix, "-m", "hpo.cli", "worker", STUDY, "--processes", "1", "--storage", url]
    log = args.tmp / "worker.log"
    start = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, env=env(), cwd=args.tmp, stdout=f, stderr=f, timeout=3600)
    wall = time.perf_counter() - start
    if rc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"hpo worker exited {rc.returncode}:\n{tail}")
    return wall


def measured_trials(url: str, n: int) -> list[sa.Row]:
    """The trials the worker ran (number >= N), from Optuna's tables."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as con:
        total = con.execute(sa.text("SELECT count(*) FROM trials")).scalar_one()
        rows = con.execute(
            sa.text(
                "SELECT number, state, datetime_start, datetime_complete FROM trials "
                "WHERE number >= :n ORDER BY number"
            ),
            {"n": n},
        ).all()
    engine.dispose()
    if total != n + len(rows):
        raise RuntimeError(f"expected {n} prefilled trials, found {total - len(rows)}")
    return rows


def hpo_run(url: str, n: int, args: argparse.Namespace) -> dict[str, float]:
    """One worker run on a copy of the study; its cycle times from the database."""
    launched = dt.datetime.now()
    wall = run_worker(url, n, args, None)
    rows = measured_trials(url, n)
    expected = args.warmup + args.measured
    if len(rows) != expected or any(r.datetime_complete is None for r in rows):
        states = Counter(str(r.state) for r in rows)
        raise RuntimeError(f"hpo ran {len(rows)} trials ({dict(states)}), expected {expected}")
    timed = rows[args.warmup :]
    done = sorted(r.datetime_complete for r in timed)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(done)]
    busy = [(r.datetime_complete - r.datetime_start).total_seconds() for r in timed]
    return {
        "mean_ms": round((done[-1] - done[0]).total_seconds() / (len(done) - 1) * 1000, 1),
        "median_ms": round(statistics.median(gaps) * 1000, 1),
        "trial_ms": round(statistics.median(busy) * 1000, 1),  # its start to its complete
        "startup_s": round((rows[0].datetime_start - launched).total_seconds(), 2),
        "wall_s": round(wall, 2),
        "pruned": sum("PRUNED" in str(r.state) for r in timed),
        "n": len(timed),
    }


def hpo_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 1)

    return {
        "hpo_ms": med("median_ms"),  # each run's median cycle; the median over the runs
        "hpo_mean_ms": med("mean_ms"),
        "hpo_trial_ms": med("trial_ms"),
        "hpo_startup_s": med("startup_s"),
        "hpo_runs": runs,
        "hpo_pruned": sum(r["pruned"] for r in runs),
        "hpo_n": sum(r["n"] for r in runs),
    }


def profile_hpo(url: str, n: int, args: argparse.Namespace) -> None:
    out = args.profile_out or args.tmp / "worker.prof"
    wall = run_worker(url, n, args, out)
    stats = pstats.Stats(str(out))
    print(
        f"\nprofile: hpo worker at N={n}, {args.warmup + args.measured} trials, "
        f"wall {wall:.1f} s (start-up and the first full read included){_saved(args)}"
    )
    _print_stats(
        stats, "cumulative", args.profile_top, ("hpo", "optuna"), " in hpo and optuna code"
    )
    _print_stats(stats, "tottime", args.profile_top, title=" (own time, any code)")


def _saved(args: argparse.Namespace) -> str:
    return f"; saved to {args.profile_out}" if args.profile_out else ""


def _where(key: tuple[str, int, str]) -> str:
    path, line, func = key
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({func})" if line else func


def _print_stats(
    stats: pstats.Stats, sort: str, top: int, only: tuple[str, ...] = (), title: str = ""
) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = 3 if sort == "cumulative" else 2
    entries = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)
    if only:
        entries = [e for e in entries if any(f"/{pkg}/" in e[0][0] for pkg in only)]
    print(f"top {top} by {sort} time{title}:")
    print(f"{'cum s':>8} {'own s':>8} {'calls':>9}  function")
    for key, (_, ncalls, tottime, cumtime, _) in entries[:top]:
        print(f"{cumtime:8.2f} {tottime:8.2f} {ncalls:9d}  {_where(key)}")


# -- report ----------------------------------------------------------------------------
def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> bool | None:
    base = next((r for r in rows if r.get("hpo_ms")), None)
    pbase = next((r for r in rows if r.get("plain_ms")), None)
    print(
        "\nfinished trials N | plain Optuna ms/trial | hpo ms/trial | hpo / hpo at "
        f"{base['n'] if base else '-'} | plain / plain at {pbase['n'] if pbase else '-'}"
    )
    for r in rows:
        hr = r["hpo_ms"] / base["hpo_ms"] if base and r.get("hpo_ms") else None
        pr = r["plain_ms"] / pbase["plain_ms"] if pbase and r.get("plain_ms") else None
        r["hpo_ratio"], r["plain_ratio"] = hr, pr
        print(
            f"{r['n']:>17,} | {fmt(r.get('plain_ms')):>21} | {fmt(r.get('hpo_ms')):>12} | "
            f"{fmt(hr, '.2f'):>11}x | {fmt(pr, '.2f'):>13}x"
        )
    print("\nplain parts (median ms): load | ask | 10 x report+should_prune | tell")
    for r in rows:
        if r.get("plain_parts_ms"):
            p = r["plain_parts_ms"]
            print(
                f"{r['n']:>17,} | {p['load_ms']} | {p['ask_ms']} | {p['steps_ms']} | "
                f"{p['tell_ms']}   ({r['plain_pruned']}/{r['plain_n']} pruned)"
            )
    print(
        "\nhpo per N: median cycle ms | mean cycle ms | trial start->complete ms | "
        "worker start-up s; per run (median/mean ms) | 1-min load average at each round"
    )
    for r in rows:
        if r.get("hpo_ms"):
            runs = ", ".join(f"{x['median_ms']}/{x['mean_ms']}" for x in r["hpo_runs"])
            print(
                f"{r['n']:>17,} | {r['hpo_ms']} | {r['hpo_mean_ms']} | {r['hpo_trial_ms']} | "
                f"{r['hpo_startup_s']}; runs {runs} ({r['hpo_pruned']}/{r['hpo_n']} pruned) | "
                f"load {', '.join(f'{x:.1f}' for x in r['load_avg'])}"
            )
    if base is None or sum(1 for r in rows if r.get("hpo_ms")) < 2:
        print("\nno verdict: the target compares hpo at two sizes or more")
        return None
    checked = [r for r in rows if r.get("hpo_ms") and r["n"] <= 10_000]
    worst = max(checked, key=lambda r: r["hpo_ratio"])
    ok = worst["hpo_ratio"] <= TARGET
    print(
        f"\n{'PASS' if ok else 'FAIL'}: hpo's cost up to {checked[-1]['n']:,} finished trials "
        f"is at most {worst['hpo_ratio']:.2f}x its cost at {base['n']:,} "
        f"(worst at {worst['n']:,}; target <= {TARGET:g}x)"
    )
    if base["n"] != 100:
        print(f"note: the smallest size measured is {base['n']}, not 100")
    return ok


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = (
        ("plain_ms", "plain Optuna (process per trial)", "o"),
        ("hpo_ms", "hpo worker (steady state)", "s"),
    )
    for key, label, marker in lines:
        pts = [(r["n"], r[key]) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, label=label)
    base = next((r["hpo_ms"] for r in rows if r.get("hpo_ms")), None)
    if base:
        ax.axhline(TARGET * base, color="grey", ls="--", lw=1, label=f"target: {TARGET:g}x hpo")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("finished trials in the study")
    ax.set_ylabel("coordination cost per trial (ms)")
    ax.set_title("ask + 10 x (report, should_prune) + tell; TPE, Hyperband, PostgreSQL")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _last_ms(runs: list[dict[str, float]]) -> float:
    last = runs[-1]
    return round(last["total_ms"] if "total_ms" in last else last["median_ms"], 1)


# -- main ------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    p.add_argument("--only", choices=["plain", "hpo"], nargs="*", help="one side only")
    p.add_argument(
        "--plain-procs", type=int, default=10, help="timed plain processes per N, over all rounds"
    )
    p.add_argument(
        "--plain-warmup", type=int, default=0, help="untimed plain processes per N and round"
    )
    p.add_argument("--warmup", type=int, default=5, help="hpo trials not timed")
    p.add_argument("--measured", type=int, default=40, help="hpo trials timed per run")
    p.add_argument("--repeats", type=int, default=5, help="rounds over all sizes: hpo runs per N")
    p.add_argument("--seed", type=int, default=0, help="prefill RNG seed")
    p.add_argument("--profile", action="store_true", help="cProfile the worker at the largest N")
    p.add_argument("--profile-out", type=Path, help="keep the .prof file here")
    p.add_argument("--profile-top", type=int, default=30)
    p.add_argument("--json", type=Path, help="write config and rows here")
    p.add_argument(
        "--plot", default=str(HERE / "results" / "growth.png"), help="PNG path; '' for none"
    )
    args = p.parse_args()
    if args.measured < 2:
        p.error("--measured must be at least 2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sides = args.only or ["plain", "hpo"]
    sizes = sorted(set(args.sizes))
    per_round = -(-args.plain_procs // args.repeats)  # plain processes per N and round
    runs: dict[tuple[int, str], list[dict[str, float]]] = {(n, s): [] for n in sizes for s in sides}
    loads: dict[int, list[float]] = {n: [] for n in sizes}
    started = time.perf_counter()
    snaps: dict[int, str] = {}
    states: dict[int, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = Path(tmp)
        base = create_db()
        try:
            # 1. One prefill that grows; a snapshot of it at each N.
            hpo_create(db_url(base), sizes[-1] + args.warmup + args.measured, args.tmp)
            prefill = Prefill(db_url(base), args.seed)
            for n in sizes:
                prefill.extend(n)
                analyze_db(base)
                snaps[n] = create_db(template=base)
                states[n] = dict(prefill.states)
            # 2. Rounds over all sizes, so that load from other work on the machine falls on
            # every size alike rather than on whichever size ran when it came.
            for rnd in range(args.repeats):
                for n in sizes:
                    loads[n].append(os.getloadavg()[0])
                    for side in sides:
                        db = create_db(template=snaps[n])
                        try:
                            if side == "plain":
                                runs[n, side] += plain_runs(db_url(db), per_round, args)
                            else:
                                runs[n, side].append(hpo_run(db_url(db), n, args))
                        finally:
                            drop_db(db)
                    got = [f"{side} {_last_ms(runs[n, side])} ms" for side in sides]
                    print(
                        f"round {rnd + 1}/{args.repeats} N={n}: {', '.join(got)} "
                        f"({time.perf_counter() - started:.0f} s so far)",
                        file=sys.stderr,
                        flush=True,
                    )
            if args.profile:
                db = create_db(template=snaps[sizes[-1]])
                try:
                    profile_hpo(db_url(db), sizes[-1], args)
                finally:
                    drop_db(db)
        finally:
            for db in [base, *snaps.values()]:
                drop_db(db)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        row: dict[str, Any] = {"n": n, "prefill_states": states[n]}
        row["load_avg"] = [round(x, 2) for x in loads[n]]
        if "plain" in sides:
            row.update(plain_summary(runs[n, "plain"]))
        if "hpo" in sides:
            row.update(hpo_summary(runs[n, "hpo"]))
        rows.append(row)
    print(
        f"\nPostgreSQL, TPE + Hyperband(1, {go.STEPS}), {args.repeats} rounds over all sizes; "
        f"plain: median of {per_round * args.repeats} processes per N; hpo: median over the "
        f"rounds of the median cycle time of {args.measured} trials after {args.warmup} "
        f"warm-up; {time.perf_counter() - started:.0f} s in all"
    )
    if "hpo" in sides:
        print(
            f"budget: each hpo run was given n_trials = N + {args.warmup + args.measured} and "
            f"ran exactly {args.warmup + args.measured} trials on top of the N prefilled ones "
            "(checked), so hpo counts the prefilled trials against its budget"
        )
    ok = print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k not in ("tmp",)}
        doc = {"config": json.loads(json.dumps(config, default=str)), "pass": ok, "rows": rows}
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
