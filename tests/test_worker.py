"""The worker against real storage and real trial processes, through the Python API."""

from __future__ import annotations

import collections
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.worker import Worker, default_slots


def spec_text(tmp_path: Path, **over: str) -> str:
    base = {
        "name": "toy",
        "objective": "toy_objectives:quadratic",
        "metric": "loss",
        "direction": "minimize",
        "search_space": "{x: {type: float, low: -10, high: 10}, y: {type: int, low: 0, high: 5}}",
        "sampler": "{type: tpe, seed: 0}",
        "pruner": "{type: median, n_startup_trials: 3}",
        "budget": "{n_trials: 12}",
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    base.update(over)
    return "\n".join(f"{k}: {v}" for k, v in base.items()) + "\n"


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_plain_optuna_objective_runs_unchanged(tmp_path: Path, sqlite_url: str) -> None:
    spec = hpo.parse_spec(spec_text(tmp_path))
    study, summary = hpo.run(spec, storage=sqlite_url, workers=2)
    trials = study.optuna.get_trials()
    assert len(trials) == 12
    assert summary.complete + summary.pruned == 12 and summary.failed == 0
    assert all(set(t.params) == {"x", "y"} for t in trials)
    # the objective's reports reached storage, and the pruner used them
    assert all(t.intermediate_values for t in trials)
    best = study.optuna.best_trial
    assert best.value == pytest.approx((best.params["x"] - 2) ** 2 + best.params["y"])
    assert {t.user_attrs["host"] for t in trials} and all(
        "duration_s" in t.user_attrs for t in trials
    )


def test_budget_is_study_wide_and_exact(tmp_path: Path, any_url: str) -> None:
    spec = hpo.parse_spec(
        spec_text(
            tmp_path,
            objective="toy_objectives:instant",
            search_space="{a: {type: int, low: 0, high: 100}}",
            sampler="{type: random, seed: 1}",
            pruner="none",
            budget="{n_trials: 20}",
        )
    )
    study, summary = hpo.run(spec, storage=any_url, workers=4)
    assert summary.complete == 20
    assert len(study.optuna.get_trials()) == 20
    numbers = [t.number for t in study.optuna.get_trials()]
    assert sorted(numbers) == list(range(20))


def test_resume_counts_finished_trials_and_adds_only_the_rest(
    tmp_path: Path, sqlite_url: str
) -> None:
    text = spec_text(
        tmp_path,
        objective="toy_objectives:instant",
        search_space="{a: {type: int, low: 0, high: 100}}",
        pruner="none",
        budget="{n_trials: 10}",
    )
    spec = hpo.parse_spec(text)
    study = hpo.create_study(spec, sqlite_url)
    Worker(study, default_slots(1), timeout=None).work()
    assert len(study.optuna.get_trials()) == 10
    first = [(t.number, t.params) for t in study.optuna.get_trials()]

    # Same spec again: nothing to do, nothing duplicated.
    study2, summary = hpo.run(hpo.parse_spec(text), storage=sqlite_url)
    assert summary.ran == 0
    assert [(t.number, t.params) for t in study2.optuna.get_trials()] == first

    # A larger budget (with --force, since the spec changed) runs only the difference.
    bigger = hpo.parse_spec(text.replace("n_trials: 10", "n_trials: 15"))
    with pytest.raises(hpo.SpecError, match=r"budget.n_trials: 10 -> 15"):
        hpo.create_study(bigger, sqlite_url)
    study3, summary = hpo.run(bigger, storage=sqlite_url, force=True)
    assert summary.ran == 5
    assert len(study3.optuna.get_trials()) == 15


def test_grid_runs_every_point_exactly_once(tmp_path: Path, any_url: str) -> None:
    record = tmp_path / "calls"
    record.mkdir()
    text = spec_text(
        tmp_path,
        objective="toy_objectives:grid_recorder",
        search_space=textwrap.dedent("""\
            {lr: {type: float, values: [0.001, 0.0001]},
             batch_size: {type: categorical, choices: [16, 32, 64]},
             layers: {type: int, low: 1, high: 3}}"""),
        sampler="{type: grid}",
        pruner="none",
        budget="{}",
        fixed=f"{{record_dir: '{record}', sleep: 0.02}}",
    )
    study, _ = hpo.run(hpo.parse_spec(text), storage=any_url, workers=4)
    calls = collections.Counter(p.name.split("__")[0] for p in record.iterdir())
    assert len(calls) == 2 * 3 * 3
    assert set(calls.values()) == {1}
    trials = study.optuna.get_trials()
    assert len(trials) == 18 and all(t.state == TrialState.COMPLETE for t in trials)
    points = {(t.params["lr"], t.params["batch_size"], t.params["layers"]) for t in trials}
    assert len(points) == 18


def test_failing_objective_fails_trials_with_reason_and_worker_goes_on(
    tmp_path: Path, sqlite_url: str
) -> None:
    spec = hpo.parse_spec(
        spec_text(
            tmp_path,
            objective="toy_objectives:failing",
            search_space="{}",
            pruner="none",
            budget="{n_trials: 3}",
        )
    )
    study, summary = hpo.run(spec, storage=sqlite_url)
    assert summary.failed == 3
    for t in study.optuna.get_trials():
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"] == "RuntimeError: boom"


def test_trial_timeout_kills_a_hanging_trial_and_goes_on(tmp_path: Path, sqlite_url: str) -> None:
    spec = hpo.parse_spec(
        spec_text(
            tmp_path,
            objective="toy_objectives:hang",
            search_space="{}",
            pruner="none",
            budget="{n_trials: 2, trial_timeout: 1}",
        )
    )
    study, _ = hpo.run(spec, storage=sqlite_url)
    trials = study.optuna.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("trial_timeout" in t.user_attrs["fail_reason"] for t in trials)


def test_stored_objective_is_read_ahead_without_opening_the_study(
    tmp_path: Path, any_url: str
) -> None:
    from hpo.storage import peek_user_attr
    from hpo.study import SPEC_ATTR

    hpo.create_study(hpo.parse_spec(spec_text(tmp_path)), any_url)
    stored = peek_user_attr(any_url, "toy", SPEC_ATTR)
    assert stored["objective"] == "toy_objectives:quadratic"
    assert peek_user_attr(any_url, "no-such-study", SPEC_ATTR) is None


def test_read_ahead_never_fails_nor_creates_anything(tmp_path: Path) -> None:
    from hpo.storage import peek_user_attr

    missing = tmp_path / "missing.db"
    assert peek_user_attr(f"sqlite:///{missing}", "toy", "spec") is None
    assert not missing.exists()
    assert peek_user_attr("postgresql+psycopg://postgres@127.0.0.1:1/x", "toy", "spec") is None
    assert peek_user_attr("nosuchdb://x", "toy", "spec") is None
