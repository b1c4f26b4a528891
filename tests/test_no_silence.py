"""Nothing silent: a spec and an objective that disagree stop the study at the first trial.

Reproductions of issue 12 (items 1 and 2): a searched parameter the objective never reads,
and a plain objective whose suggest_* asks for another distribution than the spec searches.
Each runs the real `hpo run` and checks that exactly one trial ran, that it failed with the
reason, that the study is marked stopped for every worker and that the command says why in
one line and exits 1.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import run_hpo, write_spec

from hpo.context import TrackedParams


def _spec(objective: str, space: str, *, fixed: str = "", n_trials: int = 6) -> str:
    return (
        "name: s\n"
        f"objective: spec_objectives:{objective}\n"
        "metric: loss\n"
        "search_space:\n"
        + "".join(f"  {line}\n" for line in space.strip().splitlines())
        + (f"fixed: {fixed}\n" if fixed else "")
        + "sampler: {type: random, seed: 0}\n"
        + f"budget: {{n_trials: {n_trials}}}\n"
    )


def _run(tmp_path: Path, text: str) -> tuple[int, str, list[optuna.trial.FrozenTrial], str | None]:
    spec = write_spec(tmp_path / "spec.yaml", text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = run_hpo("run", str(spec), "--storage", url, cwd=tmp_path, timeout=120)
    storage = optuna.storages.RDBStorage(url)
    try:
        trials = optuna.load_study(study_name="s", storage=storage).get_trials()
        import sqlalchemy as sa

        with storage.engine.connect() as con:
            stop = con.execute(sa.text("SELECT stop FROM hpo_budget")).scalar()
    finally:
        storage.engine.dispose()
    errors = [line for line in res.stderr.splitlines() if line.startswith("hpo: error:")]
    assert len(errors) <= 1, res.stderr
    assert "Traceback" not in res.stderr
    return res.returncode, errors[0] if errors else "", trials, stop


def _assert_stopped_at_once(code: int, trials: list, stop: str | None, fragment: str) -> None:
    assert code == 1
    assert len(trials) == 1, [t.state for t in trials]  # not the budget of 6
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert fragment in trials[0].user_attrs["fail_reason"]
    assert stop == "graceful"  # every other worker of the study stops too


def test_a_searched_parameter_the_objective_never_reads_stops_the_study(tmp_path: Path) -> None:
    """Seen: a grid over learning_rate ran every trial at the loop's default lr."""
    code, error, trials, stop = _run(
        tmp_path,
        _spec(
            "reads_lr",
            "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
            "hidden_size: {type: int, low: 4, high: 16}",
        ),
    )
    _assert_stopped_at_once(code, trials, stop, "search_space.learning_rate")
    assert "search_space.learning_rate: trial 0 completed without reading it" in error
    assert "did you mean 'lr'?" in error


def test_a_plain_objective_that_never_suggests_a_searched_parameter_stops_it(
    tmp_path: Path,
) -> None:
    code, error, trials, stop = _run(
        tmp_path,
        _spec("plain_x", "x: {type: float, low: 0, high: 1}\nz: {type: int, low: 0, high: 3}"),
    )
    _assert_stopped_at_once(code, trials, stop, "search_space.z")
    assert "search_space.z: trial 0 completed without reading it" in error


@pytest.mark.parametrize(
    ("objective", "space", "fragments"),
    [
        (
            # Seen: the spec's 1e-4..1e-2 silently overrode the objective's 1e-4..1e-3.
            "plain_lr",
            "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}",
            (
                "search_space.learning_rate",
                "float [0.0001, 0.001, log: true]",
                "float [0.0001, 0.01, log: true]",
            ),
        ),
        (
            # Seen: "CategoricalDistribution does not support dynamic value space", every trial.
            "plain_optimizer",
            "optimizer: {type: categorical, choices: [adam, sgd, adamw]}",
            (
                "search_space.optimizer",
                "categorical ['adam', 'sgd']",
                "categorical ['adam', 'sgd', 'adamw']",
            ),
        ),
        (
            "plain_lr_caught",
            "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}",
            ("search_space.learning_rate", "float [0.0001, 0.001, log: true]"),
        ),
    ],
    ids=["float-range", "categorical-choices", "objective-catches-the-error"],
)
def test_a_suggest_that_differs_from_the_spec_stops_the_study(
    tmp_path: Path, objective: str, space: str, fragments: tuple[str, ...]
) -> None:
    code, error, trials, stop = _run(tmp_path, _spec(objective, space))
    _assert_stopped_at_once(code, trials, stop, fragments[0])
    for fragment in fragments:
        assert fragment in error
    assert "dynamic value space" not in error


def test_fixed_keys_nothing_reads_are_a_warning_not_a_failure(tmp_path: Path) -> None:
    code, error, trials, stop = _run(
        tmp_path,
        _spec(
            "reads_all",
            "x: {type: float, low: 0, high: 1}\ny: {type: int, low: 0, high: 5}",
            fixed="{scale: 1, unused: 3}",
            n_trials=2,
        ),
    )
    assert (code, error, stop) == (0, "", None)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.user_attrs["unused_fixed"] == ["unused"] for t in trials)


def test_a_matching_suggest_and_reads_through_trial_params_are_fine(tmp_path: Path) -> None:
    code, error, trials, _ = _run(
        tmp_path,
        _spec(
            "plain_lr",
            "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}",
            n_trials=2,
        ),
    )
    assert (code, error) == (0, "")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_train_config_reads_only_its_own_keys_and_the_fingerprint_reads_none() -> None:
    pytest.importorskip("torch")
    from hpo.context import TrialContext
    from hpo.training import TrainConfig
    from hpo.training._checkpoints import fingerprint

    params = TrackedParams({"lr": 0.01, "learning_rate": 0.1, "epochs": 3})
    fingerprint(TrialContext(params=params))
    assert params.read == set()
    TrainConfig.from_params(params)
    assert params.read == {"lr", "epochs"}
    assert "learning_rate" not in params.read


def test_tracked_params_count_values_read_not_keys_asked_about() -> None:
    params = TrackedParams({"a": 1, "b": 2, "c": 3})
    assert "a" in params and params.get("zzz") is None
    assert params.read == set() and params.asked == {"zzz"}
    assert params["b"] == 2 and params.get("c") == 3
    assert params.read == {"b", "c"}
    assert dict(params) == {"a": 1, "b": 2, "c": 3}  # everything, so everything read
    assert params.read == {"a", "b", "c"}


def test_a_spec_without_a_budget_runs_until_stopped_and_says_so_once(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from conftest import hpo_env, toy_spec

    text = toy_spec(pruner=False).replace("budget: {n_trials: 8}\n", "")
    assert "budget" not in text
    spec = write_spec(tmp_path / "spec.yaml", text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "run", str(spec), "--storage", url],
        cwd=tmp_path,
        env=hpo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                storage = optuna.storages.RDBStorage(url)
                n = len(optuna.load_study(study_name="toy", storage=storage).get_trials())
                storage.engine.dispose()
            except Exception:
                continue
            if n >= 3:
                break
        stopped = run_hpo("stop", "toy", "--storage", url, cwd=tmp_path, timeout=60)
        _, err = proc.communicate(timeout=60)
        assert stopped.returncode == 0, (stopped.stderr, err)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count("running until stopped") == 1, err
    assert "toy: the spec has no budget.n_trials or budget.timeout: running until stopped" in err


def test_a_metric_the_training_loop_does_not_compute_stops_the_study(tmp_path: Path) -> None:
    """Seen: `metric: val_acc` with a user objective on hpo's loop failed all 4 trials of the
    budget with "Unknown metric"; a misspelled parameter stops after one."""
    text = _spec("trains_tiny", "lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}")
    text = text.replace("metric: loss\n", "metric: val_acc\ndirection: maximize\n")
    code, error, trials, stop = _run(tmp_path, text)
    _assert_stopped_at_once(code, trials, stop, "Unknown metric 'val_acc'")
    assert "'val_accuracy'" in error


def test_a_study_whose_trials_all_failed_exits_1_also_when_rerun(tmp_path: Path) -> None:
    """Seen: the second `hpo run` of a study whose every trial had failed ran none, said
    "no completed trial" and exited 0, which a CI script takes for success."""
    text = (
        "name: s\nobjective: toy_objectives:failing\nmetric: loss\n"
        "search_space:\n  x: {type: float, low: 0, high: 1}\n"
        "retry: {max_retries: 0}\nbudget: {n_trials: 2}\n"
    )
    first, _, trials, _ = _run(tmp_path, text)
    assert first == 1 and len(trials) == 2
    again, error, _, _ = _run(tmp_path, text)
    assert again == 1
    assert "spent its budget without a completed trial (2 failed)" in error


def test_a_fixed_key_nothing_reads_is_warned_with_the_key_it_may_mean(tmp_path: Path) -> None:
    """Seen: `fixed: {epoch: 3}` for a user objective warned "never read: epoch", no hint."""
    text = _spec(
        "reads_lr",
        "lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
        fixed="{hidden_sise: 16}",
        n_trials=1,
    )
    spec = write_spec(tmp_path / "spec.yaml", text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = run_hpo("run", str(spec), "--storage", url, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "hidden_sise (did you mean 'hidden_size'?)" in res.stderr
