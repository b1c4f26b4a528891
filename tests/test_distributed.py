"""Several `hpo worker` processes on one PostgreSQL study, as on a fleet of machines."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import hpo_env, run_hpo, write_spec
from optuna.trial import TrialState

SPEC = """\
name: fleet
objective: {objective}
metric: loss
direction: minimize
search_space: {space}
fixed: {fixed}
sampler: {sampler}
budget: {budget}
"""


def run_fleet(url: str, n: int, *args: str) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "-v", "worker", "fleet", "--processes", "1", *args],
            env=hpo_env(HPO_STORAGE=url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            _, err = p.communicate()
            raise AssertionError(f"worker did not finish:\n{err[-4000:]}") from None
        assert p.returncode == 0, err
        errs.append(err)
    return errs


@pytest.mark.slow
def test_eight_workers_create_exactly_the_budget(tmp_path: Path, pg_url: str) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        SPEC.format(
            objective="toy_objectives:instant",
            space="{a: {type: float, low: 0, high: 1}, b: {type: int, low: 0, high: 9}}",
            fixed="{sleep: 0.05}",
            sampler="{type: tpe, seed: 0, n_startup_trials: 5}",
            budget="{n_trials: 40}",
        ),
    )
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    run_fleet(pg_url, 8)
    trials = optuna.load_study(study_name="fleet", storage=pg_url).get_trials()
    assert len(trials) == 40  # not one extra row
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(40))
    assert len({t.user_attrs["worker"] for t in trials}) > 1  # the work was shared
    # every worker seeds TPE's start-up sampler from the spec: each must draw its own points
    assert len({t.params["a"] for t in trials}) == 40


def test_seeded_workers_draw_their_own_parameters(tmp_path: Path, sqlite_url: str) -> None:
    """Workers build their samplers from the spec's seed; one that joins a study holding
    trials (started beside another, or again after a crash) must not replay its points."""
    spec = write_spec(
        tmp_path / "s.yaml",
        SPEC.format(
            objective="toy_objectives:instant",
            space="{a: {type: float, low: 0, high: 1}}",
            fixed="{sleep: 0.2}",
            sampler="{type: random, seed: 0}",
            budget="{n_trials: 12}",
        ),
    )
    assert run_hpo("create", str(spec), "--storage", sqlite_url).returncode == 0
    run_fleet(sqlite_url, 2)
    trials = optuna.load_study(study_name="fleet", storage=sqlite_url).get_trials()
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({t.params["a"] for t in trials}) == 12
    # the first worker on the fresh study drew Optuna's own seeded sequence
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    first = plain.ask({"a": optuna.distributions.FloatDistribution(0, 1)}).params["a"]
    assert trials[0].params["a"] == first


@pytest.mark.slow
def test_grid_with_eight_workers_runs_each_point_once(tmp_path: Path, pg_url: str) -> None:
    record = tmp_path / "calls"
    record.mkdir()
    spec = write_spec(
        tmp_path / "s.yaml",
        SPEC.format(
            objective="toy_objectives:grid_recorder",
            space="{lr: {type: float, values: [0.001, 0.0001]}, "
            "batch_size: {type: categorical, choices: [16, 32, 64]}, "
            "hidden: {type: categorical, choices: [64, 128, 256]}}",
            fixed=f"{{record_dir: '{record}', sleep: 0.05}}",
            sampler="{type: grid}",
            budget="{}",
        ),
    )
    assert run_hpo("create", str(spec), "--storage", pg_url).returncode == 0
    run_fleet(pg_url, 8)
    calls = collections.Counter(p.name.split("__")[0] for p in record.iterdir())
    assert len(calls) == 18 and set(calls.values()) == {1}
    trials = optuna.load_study(study_name="fleet", storage=pg_url).get_trials()
    assert len(trials) == 18
    assert len({(t.params["lr"], t.params["batch_size"], t.params["hidden"]) for t in trials}) == 18
