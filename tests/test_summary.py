"""One study summary: status, watch, the progress of `hpo run`, the report, export and the
plots count the same trials with the same words (issues 12.7 and 13.4).

The study is built attempt by attempt on Optuna's own storage, with every outcome in it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import run_hpo
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from test_report import Page

from hpo.cli import _console
from hpo.reporting import snapshot, watch, write_report
from hpo.reporting._plots import _legend
from hpo.spec import parse_spec
from hpo.storage import StaleTrialRetry
from hpo.study import Study, create_study, load_study, request_stop, study_summary
from hpo.worker import Worker

SPEC = """\
name: mix
objective: toy_objectives:quadratic
metric: loss
direction: minimize
search_space:
  x: {type: float, low: -10, high: 10}
  y: {type: int, low: 0, high: 5}
budget: {n_trials: 12}
"""
DISTS = {"x": FloatDistribution(-10, 10), "y": IntDistribution(0, 5)}
#: What every view must show for the study `_mixed` builds.
EXPECTED = {
    "complete": 3,  # 0, 3 (retry of 2), 6 (retry of 5)
    "pruned": 1,  # 1
    "failed": 1,  # 4: failed, not retried
    "preempted": 1,  # 5, requeued as 6
    "retried": 2,  # 2 (retried as 3) and 8 (retry 9 waiting)
    "waiting": 2,  # 9 (a retry) and 10 (enqueued)
    "running": 1,  # 7
}
LOGICAL = 8  # 0, 1, 2+3, 4, 5+6, 7, 8+9, 10
ATTEMPTS = 11
FINISHED = 5  # complete + pruned + failed: logical trials 0, 1, 2, 4, 5


def _attempt(state: TrialState, value: float | None = None, **kw: Any) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=value,
        params={"x": 1.0, "y": 1},
        distributions=DISTS,
        **kw,
    )


def _mixed(url: str) -> Study:
    spec = parse_spec(SPEC, source="mix.yaml")
    create_study(spec, url)
    o = optuna.load_study(study_name="mix", storage=url)  # Optuna's own storage, no hpo cache
    retry_of = {"failed_trial": 2, "retry_history": [2]}
    o.add_trial(_attempt(TrialState.COMPLETE, 5.0))  # 0
    o.add_trial(_attempt(TrialState.PRUNED, intermediate_values={0: 9.0, 1: 8.0}))  # 1
    o.add_trial(_attempt(TrialState.FAIL, intermediate_values={0: 7.0}))  # 2
    o.add_trial(_attempt(TrialState.COMPLETE, 1.0, system_attrs=retry_of))  # 3
    o.add_trial(_attempt(TrialState.FAIL))  # 4
    o.add_trial(_attempt(TrialState.FAIL, system_attrs={"preempted": True}))  # 5
    o.add_trial(
        _attempt(TrialState.COMPLETE, 3.0, system_attrs={"failed_trial": 5, "retry_history": [5]})
    )  # 6
    running = o.ask()  # 7
    running.report(4.0, 1)
    o.add_trial(_attempt(TrialState.FAIL))  # 8
    assert StaleTrialRetry(max_retries=3).queue(o, o.trials[8])  # 9: hpo's own retry path
    o.enqueue_trial({"x": 0.5, "y": 2})  # 10
    assert [t.number for t in o.trials] == list(range(ATTEMPTS))
    return load_study("mix", url)


def _numbers(counts: dict[str, int], logical: int, attempts: int, finished: int) -> None:
    assert counts == EXPECTED
    assert list(counts) == list(EXPECTED)  # one order everywhere
    assert (logical, attempts, finished) == (LOGICAL, ATTEMPTS, FINISHED)
    assert sum(counts.values()) == attempts  # each attempt has exactly one outcome


def test_every_view_gives_the_same_numbers(sqlite_url: str, tmp_path: Path) -> None:
    study = _mixed(sqlite_url)

    # hpo status --format json
    res = run_hpo("status", "mix", "--storage", sqlite_url, "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    _numbers(doc["counts"], doc["logical_trials"], doc["attempts"], doc["finished"])
    assert doc["budget"] == 12 and doc["phase"] == "in progress"
    assert [b["trial"] for b in doc["best"]] == [3] and [r["trial"] for r in doc["running"]] == [7]

    # hpo status (the table) and the watch print the same line of counts
    table = run_hpo("status", "mix", "--storage", sqlite_url)
    assert table.returncode == 0, table.stderr
    snap = snapshot(study)
    _numbers(dict(snap.counts), snap.logical, snap.attempts, snap.finished)
    counts = _console.counts_text(snap)
    assert counts == (
        "complete 3, pruned 1, failed 1, preempted 1, retried 2, waiting 2, running 1, "
        "8 logical trials in 11 attempts"
    )
    assert f"mix  5/12 finished  ({counts})" in table.stdout
    assert f"finished: 5/12  ({counts})" in "\n".join(_console.watch_lines(snap))
    assert snap.best is not None and snap.best.number == 3

    # the progress of `hpo run` / `hpo worker`: the worker's own summary of the study
    p = Worker(study=study, slots=[])._progress()
    _numbers(dict(p.counts), p.logical, p.attempts, p.finished)
    assert p.budget == 12 and p.best is not None and p.best.number == 3
    assert counts in _console._detail(p)

    # hpo export: one outcome per attempt, one logical trial number per configuration
    res = run_hpo("export", "mix", "--storage", sqlite_url, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    by_outcome = Counter(r["outcome"] for r in rows)
    _numbers(
        {o: by_outcome[o] for o in EXPECTED},
        len({r["logical_trial"] for r in rows}),
        len(rows),
        sum(by_outcome[o] for o in ("complete", "pruned", "failed")),
    )
    assert {r["number"]: r["logical_trial"] for r in rows if r["retry_of"] is not None} == {
        3: 2,
        6: 5,
        9: 8,
    }

    # the report: its summary, and the learning-curve plot's legend
    page = Page(write_report(study, tmp_path / "r").read_text())
    s = page.by_id["summary"]
    _numbers(
        {o: int(str(s[f"data-{o}"])) for o in EXPECTED},
        int(str(s["data-logical"])),
        int(str(s["data-attempts"])),
        int(str(s["data-finished"])),
    )
    assert "#3: loss = 1" in " ".join(page.text)
    curves = page.by_id["intermediate"]  # trials 1 (pruned), 2 (retried) and 7 (running)
    assert (curves["data-curves"], curves["data-retried"], curves["data-pruned"]) == ("3", "1", "1")
    labels = [h.get_label() for h in _legend({"pruned": 1, "retried": 1, "running": 1}, snap)]
    assert labels == ["pruned (1)", "retried (1 of 2)", "running (1)"]


def test_finished_only_when_nothing_runs_or_waits(sqlite_url: str) -> None:
    spec = parse_spec(SPEC.replace("n_trials: 12", "n_trials: 3"), source="mix.yaml")
    create_study(spec, sqlite_url)
    o = optuna.load_study(study_name="mix", storage=sqlite_url)
    for v in (3.0, 2.0):
        o.add_trial(_attempt(TrialState.COMPLETE, v))
    o.add_trial(_attempt(TrialState.FAIL))  # 2, its retry 3 is queued
    assert StaleTrialRetry(max_retries=3).queue(o, o.trials[2])
    study = load_study("mix", sqlite_url)

    # all 3 logical trials exist, but one waits: the budget is not spent
    s = study_summary(study)
    assert (s.finished, s.waiting, s.remaining, s.phase) == (2, 1, 1, "in progress")

    # after `hpo stop` with a trial still waiting: stopped, never "finished"
    request_stop("mix", sqlite_url)
    shown: list[str] = []
    last = watch(study, lambda snap: shown.extend(_console.watch_lines(snap)), interval=0.1)
    assert last is not None and last.phase == "stopped" and last.over
    text = "\n".join(shown)
    assert "finished: 2/3" in text
    assert "time to finish: stopped by hpo stop (1 trial(s) left, 1 waiting)" in text
    assert "time to finish: finished" not in text

    # its retry runs and completes: now the study is finished
    retry = o.ask()
    assert retry.number == 3
    o.tell(retry, 1.0)
    s = study_summary(load_study("mix", sqlite_url))
    assert (s.finished, s.retried, s.waiting, s.phase) == (3, 1, 0, "finished")
    assert s.eta_s == 0.0


def test_pareto_front_matches_optunas(sqlite_url: str) -> None:
    spec = parse_spec(
        SPEC.replace(
            "metric: loss\ndirection: minimize", "metrics: [a, b]\ndirections: [maximize, minimize]"
        ),
        source="mix.yaml",
    )
    create_study(spec, sqlite_url)
    o = optuna.load_study(study_name="mix", storage=sqlite_url)
    points = [(0.9, 100.0), (0.8, 10.0), (0.7, 50.0), (0.95, 1000.0), (0.8, 10.0), (0.1, 5.0)]
    for a, b in points:
        o.add_trial(create_trial(values=[a, b], params={"x": 1.0, "y": 1}, distributions=DISTS))
    s = study_summary(load_study("mix", sqlite_url))
    assert s.best is None
    assert [t.number for t in s.best_trials] == sorted(t.number for t in o.best_trials)


@pytest.mark.parametrize("created_before", [False, True])
def test_metric_names_are_set(sqlite_url: str, created_before: bool) -> None:
    spec = parse_spec(
        SPEC.replace(
            "metric: loss\ndirection: minimize",
            "metrics: [val_loss, n_params]\ndirections: [minimize, minimize]",
        ),
        source="mix.yaml",
    )
    if created_before:  # a study created by an hpo that did not set them: set on resume
        old = optuna.create_study(
            study_name="mix", storage=sqlite_url, directions=["minimize", "minimize"]
        )
        old.set_user_attr("spec", spec.to_dict())
        assert old.metric_names is None
    create_study(spec, sqlite_url)
    assert optuna.load_study(study_name="mix", storage=sqlite_url).metric_names == [
        "val_loss",
        "n_params",
    ]
