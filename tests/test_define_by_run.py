"""Define-by-run objectives (no search_space): the worker samples ahead what finished trials
show, and those samples are Optuna's own; everything else is sampled on demand."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import run_hpo
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState

from hpo._optuna._study import sample_ahead
from hpo.worker._ahead import AheadSpace
from hpo.worker._apply import suggest_param
from hpo.worker._protocol import Method


def _objective(trial: optuna.trial.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", -10, 10)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    opt = trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"])
    if opt == "sgd":  # conditional: never in the space sampled ahead
        trial.suggest_float("momentum", 0, 1)
    return (x - 2) ** 2 + abs(y) + lr + len(opt)


def _asked(name: str, low: int, high: int) -> tuple[str, str]:
    """A suggest call as the trial process sends it."""
    dist = (
        optuna.distributions.FloatDistribution
        if name == "x"
        else optuna.distributions.IntDistribution
    )
    return (name, distribution_to_json(dist(low, high)))


SAMPLERS: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
    "tpe": lambda: optuna.samplers.TPESampler(seed=7, n_startup_trials=5),
    "tpe-multivariate": lambda: optuna.samplers.TPESampler(
        seed=7, n_startup_trials=5, multivariate=True
    ),
    "random": lambda: optuna.samplers.RandomSampler(seed=7),
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_samples_ahead_equal_optunas_own_on_the_same_history(tmp_path: Path, sampler: str) -> None:
    history = tmp_path / "history.db"
    url = f"sqlite:///{history}"
    study = optuna.create_study(study_name="s", storage=url, sampler=SAMPLERS["random"]())
    study.optimize(_objective, n_trials=15)
    for side in ("hpo", "optuna"):
        shutil.copy(history, tmp_path / f"{side}.db")

    # Optuna: ask(), then the objective's suggest_* one by one.
    plain = optuna.load_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", sampler=SAMPLERS[sampler]()
    )
    trial = plain.ask()
    want = {
        "x": trial.suggest_float("x", -10, 10),
        "y": trial.suggest_int("y", -10, 10),
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "opt": trial.suggest_categorical("opt", ["adam", "sgd", "rmsprop"]),
    }

    # hpo's worker: ask(), the space finished trials show, sampled ahead together.
    ours = optuna.load_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'hpo.db'}", sampler=SAMPLERS[sampler]()
    )
    space = AheadSpace({}).of(ours)
    assert list(space) == ["x", "y", "lr", "opt"]  # the objective's order; momentum is not
    ahead_trial = ours.ask()
    got = sample_ahead(ahead_trial, space)
    assert got == want
    # nothing is stored until the objective asks: then the value sampled ahead is stored
    assert ahead_trial.params == {}
    assert suggest_param(ahead_trial, *_asked("x", -10, 10)) == want["x"]
    assert ahead_trial.params == {"x": want["x"]}
    # asked with another distribution than sampled ahead: never answered with that value,
    # though it fits the new range
    other = suggest_param(ahead_trial, *_asked("y", -10, 100))
    assert ahead_trial.distributions["y"] == optuna.distributions.IntDistribution(-10, 100)
    assert other == ahead_trial.params["y"]
    if sampler == "random":  # a fresh draw from the objective's range
        assert other != want["y"]


def test_nothing_is_sampled_ahead_before_a_trial_completes(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    assert AheadSpace({}).of(study) == {}
    study.ask().suggest_float("x", 0, 1)  # running, not finished: shows nothing yet
    assert AheadSpace({}).of(study) == {}


def test_declared_parameters_are_not_sampled_ahead(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("z", 0, 1), n_trials=2)
    space = AheadSpace({"x": optuna.distributions.FloatDistribution(0, 1)}).of(study)
    assert list(space) == ["z"]


def test_worker_samples_ahead_and_keeps_conditional_and_changed_parameters(
    tmp_path: Path, sqlite_url: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: dbr\nobjective: toy_objectives:define_by_run\nmetric: loss\n"
        "direction: minimize\nsampler: {type: random, seed: 0}\nbudget: {n_trials: 10}\n"
        f"checkpoint_dir: {tmp_path / 'ckpt'}\n"
    )
    res = run_hpo("run", str(spec), "--storage", sqlite_url, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="dbr", storage=sqlite_url).get_trials()
    assert len(trials) == 10
    assert all(t.state == TrialState.COMPLETE for t in trials), [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    by_number = {t.number: t for t in trials}
    for t in trials:
        # what the objective got is what was stored, and only what it asked for
        assert t.params == t.user_attrs["seen"], t.number
    # later trials got their parameters sampled ahead, and used them
    last = by_number[9]
    assert {"x", "kind"} <= set(last.user_attrs["ahead"])
    assert last.params["x"] == last.user_attrs["ahead"]["x"]
    # a conditional parameter sampled ahead and not asked: no failure, not stored
    skipped = [t for t in trials if t.number % 3 == 2 and "extra" in t.user_attrs["ahead"]]
    assert skipped and all("extra" not in t.params for t in skipped)
    # asked with another range than sampled ahead: sampled from the objective's own
    changed = [t for t in trials if t.number % 4 == 3 and "w" in t.user_attrs["ahead"]]
    assert changed
    for t in changed:
        assert t.params["w"] != t.user_attrs["ahead"]["w"]
        assert t.distributions["w"] == optuna.distributions.FloatDistribution(0, 20)


def test_a_suggest_on_demand_is_one_round_trip_without_database_work(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    import hpo
    from hpo.worker import _loop
    from hpo.worker._apply import apply_call

    statements: list[str] = []
    calls: list[int] = []
    applying = False

    def count(*args: object) -> None:
        if applying:
            statements.append(str(args[2]))

    def apply_counted(storage: object, proc: object, trial: object, message: object) -> None:
        nonlocal applying
        applying = isinstance(message, _loop.msg.Call) and message.method is Method.SUGGEST
        calls.append(applying)
        try:
            apply_call(storage, proc, trial, message)  # type: ignore[arg-type]
        finally:
            applying = False

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    monkeypatch.setattr(_loop, "apply_call", apply_counted)
    try:
        spec = hpo.parse_spec(
            "name: od\nobjective: toy_objectives:on_demand\nmetric: loss\n"
            "direction: minimize\nsampler: {type: tpe, seed: 0, n_startup_trials: 1}\n"
            "budget: {n_trials: 4}\n"
            f"checkpoint_dir: {tmp_path / 'ckpt'}\n"
        )
        _, summary = hpo.run(spec, storage=sqlite_url, workers=2)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert summary.complete == 4
    assert sum(calls) == 12  # each suggest: one Call, one reply
    assert statements == []  # sampled from the worker's view, stored with its next batch
