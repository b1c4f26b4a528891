"""What running a training script through hpo costs, side by side in one run.

(a) Per trial: a trivial script (the standard library only; it prints one ``[hpo]`` line)
    is started N times by hand, one after the other with ``subprocess.run``, and run as N
    trials of a command spec by ``hpo run`` (one worker, a SQLite file, the random sampler).
    hpo's time per trial is the span from the first trial's start to the last one's end,
    as the database records them, over N: it holds asking for the trial, writing its config
    and directory, starting the script, reading its output, and telling the result. The
    overhead is that minus the mean by-hand run; by-hand runs are timed before and after
    hpo's, so a change in the machine's load shows as their spread. Target: under 50 ms.
(b) Per report: a script calls ``hpo.report(epoch, loss=...)`` K times in one trial (a median
    pruner, so each call waits for the pruner's verdict) and times each call with
    ``time.perf_counter``. Target: a median under 5 ms.

Exit status 1 when a target is missed.

    python benchmarks/script_overhead.py --trials 30 --reports 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
TRIAL_TARGET_MS = 50.0
REPORT_TARGET_MS = 5.0

TRIVIAL = """\
import json, sys
print("[hpo] " + json.dumps({"epoch": 0, "loss": float(sys.argv[1])}), flush=True)
"""

REPORTER = """\
import json, sys, time
import hpo

times = []
for epoch in range(int(sys.argv[1])):
    start = time.perf_counter()
    stop = hpo.report(epoch, loss=1.0 / (epoch + 1))
    times.append(time.perf_counter() - start)
    if stop:
        break
with open(sys.argv[2], "w") as f:
    json.dump(times, f)
"""

SPEC = """\
name: {name}
command: {command}
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
sampler: {{type: random, seed: 0}}
{pruner}budget: {{n_trials: {n_trials}}}
checkpoint_dir: {root}
"""


def by_hand(script: Path, n: int) -> list[float]:
    """Seconds each of ``n`` runs of ``script`` took, started one after the other."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, str(script), str(i / n)], check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def hpo_run(spec: Path, url: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    r = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "run", str(spec), "--storage", url, "--gpus", "none"],
        env=env,
        capture_output=True,
        text=True,
        cwd=spec.parent,
    )
    if r.returncode != 0:
        sys.exit(f"hpo run {spec.name} failed ({r.returncode}):\n{r.stderr[-2000:]}")


def write_spec(path: Path, *, command: list[str], n_trials: int, pruner: str = "") -> Path:
    path.write_text(
        SPEC.format(
            name=path.stem,
            command=json.dumps(command),
            pruner=pruner,
            n_trials=n_trials,
            root=json.dumps(str(path.parent / "trials")),
        )
    )
    return path


@dataclass(frozen=True)
class Trials:
    """hpo's seconds per trial: in all (first start to last end, over N), from a trial's
    start to its end (asked, config written, script run and read, told), and from one
    trial's end to the next one's start."""

    per_trial: float
    inside: float
    between: float


def per_trial(tmp: Path, n: int) -> tuple[Trials, list[float]]:
    """hpo's seconds per trial over ``n`` trials, and every by-hand run's seconds."""
    script = tmp / "trivial.py"
    script.write_text(TRIVIAL)
    hand = by_hand(script, n)
    url = f"sqlite:///{tmp / 'trivial.db'}"
    spec = write_spec(
        tmp / "trivial.yaml", command=[sys.executable, str(script), "{x}"], n_trials=n
    )
    hpo_run(spec, url)
    hand += by_hand(script, n)
    trials = optuna.load_study(study_name="trivial", storage=url).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) != n:
        sys.exit(f"expected {n} complete trials, got {len(done)} of {len(trials)}")
    done.sort(key=lambda t: t.number)
    inside = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    between = [
        (b.datetime_start - a.datetime_complete).total_seconds()
        for a, b in itertools.pairwise(done)
    ]
    span = (done[-1].datetime_complete - done[0].datetime_start).total_seconds()
    return Trials(span / n, statistics.mean(inside), statistics.mean(between or [0.0])), hand


def report_latency(tmp: Path, k: int) -> list[float]:
    """Seconds each of ``k`` ``hpo.report`` calls took inside one trial."""
    script = tmp / "reporter.py"
    script.write_text(REPORTER)
    out = tmp / "latency.json"
    spec = write_spec(
        tmp / "reporter.yaml",
        command=[sys.executable, str(script), str(k), str(out)],
        n_trials=1,
        pruner="pruner: {type: median, n_startup_trials: 0, n_warmup_steps: 0}\n",
    )
    hpo_run(spec, f"sqlite:///{tmp / 'reporter.db'}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="trials, and runs by hand")
    parser.add_argument("--reports", type=int, default=300, help="hpo.report calls timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trials, hand = per_trial(tmp, args.trials)
        latency = report_latency(tmp, args.reports)
    hand_ms = statistics.mean(hand) * 1e3
    overhead_ms = trials.per_trial * 1e3 - hand_ms
    med = statistics.median(latency) * 1e3
    p95 = statistics.quantiles(latency, n=20)[-1] * 1e3
    ok_trial, ok_report = overhead_ms < TRIAL_TARGET_MS, med < REPORT_TARGET_MS
    print(f"cores: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    print(f"(a) {args.trials} runs of a trivial script, by hand and as trials (SQLite, 1 worker)")
    print(
        f"    by hand  {hand_ms:7.1f} ms per run (min {min(hand) * 1e3:.1f}, "
        f"max {max(hand) * 1e3:.1f}, {len(hand)} runs before and after)"
    )
    print(
        f"    hpo      {trials.per_trial * 1e3:7.1f} ms per trial: {trials.inside * 1e3:.1f} "
        f"from its start to its end, {trials.between * 1e3:.1f} from one's end to the next"
    )
    print(
        f"    overhead {overhead_ms:7.1f} ms per trial   target < {TRIAL_TARGET_MS:.0f} ms  "
        f"{'PASS' if ok_trial else 'FAIL'}"
    )
    print(f"(b) {len(latency)} hpo.report round trips in one trial (median pruner)")
    print(
        f"    median {med:.2f} ms, p95 {p95:.2f} ms, max {max(latency) * 1e3:.2f} ms   "
        f"target median < {REPORT_TARGET_MS:.0f} ms  {'PASS' if ok_report else 'FAIL'}"
    )
    sys.exit(0 if ok_trial and ok_report else 1)


if __name__ == "__main__":
    main()
