"""Every pruner decides through hpo's worker exactly as through plain Optuna, trial for trial.

The hpo side is the real thing: ``hpo run --workers 1`` in a subprocess, with its worker
storage, its trial processes and (for Hyperband) its pruner class. The reference is plain
Optuna on Optuna's own storage: ``optuna.create_study`` over an ``InMemoryStorage``, Optuna's
stock pruner with the same options, ``study.optimize`` in this process. Each reference trial is
enqueued with the parameters hpo's trial of the same number ran, so both sides see the same
trials in the same order (same study name too: Hyperband's brackets hash it). The objective
reports values derived only from its parameters and the step, so a difference in a trial's
final state, or in the step it was pruned at, is a difference in the pruner's decision.

(hpo's earlier equivalence tests ran both sides on hpo's storage and missed a storage bug that
changed successive halving's and Hyperband's decisions; this one never does.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_hpo

STEPS = 9
N_TRIALS = 40
SEED = 3

#: spec ``pruner:`` -> the same pruner in plain Optuna.
PRUNERS: dict[str, tuple[dict[str, Any], Any]] = {
    "median": (
        {"type": "median", "n_startup_trials": 4, "n_warmup_steps": 1},
        lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    ),
    "percentile": (
        {"type": "percentile", "percentile": 30.0, "n_startup_trials": 4},
        lambda: optuna.pruners.PercentilePruner(30.0, n_startup_trials=4),
    ),
    "successive_halving": (
        {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2},
        lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    ),
    "hyperband": (
        {"type": "hyperband", "min_resource": 1, "max_resource": STEPS, "reduction_factor": 2},
        lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=STEPS, reduction_factor=2
        ),
    ),
    "threshold": (
        {"type": "threshold", "upper": 0.45},
        lambda: optuna.pruners.ThresholdPruner(upper=0.45),
    ),
    "patient": (
        {"type": "patient", "patience": 1, "wrapped": {"type": "median", "n_startup_trials": 4}},
        lambda: optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=4), patience=1
        ),
    ),
    "wilcoxon": (
        {"type": "wilcoxon", "p_threshold": 0.2, "n_startup_steps": 2},
        lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.2, n_startup_steps=2),
    ),
}


def curve(x: float, k: int, step: int) -> float:
    """A learning curve: better with x near 0.35; with k > 0 it turns up again after step 4
    (overfitting), which the patient pruner needs. Rounded, so both sides compute the same
    numbers and ties happen."""
    return round((x - 0.35) ** 2 + (0.25 + 0.05 * k) / (step + 1) + 0.03 * k * max(0, step - 4), 4)


def staircase(trial: optuna.trial.BaseTrial) -> float:
    """The objective both sides run (hpo imports it by name in its trial processes)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    k = trial.suggest_int("k", 0, 3)
    for step in range(STEPS):
        trial.report(curve(x, k, step), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return curve(x, k, STEPS - 1)


def _outcomes(trials: list[optuna.trial.FrozenTrial]) -> dict[int, tuple[str, int | None]]:
    """Trial number -> (final state, last step reported)."""
    return {
        t.number: (t.state.name, max(t.intermediate_values, default=None))
        for t in trials
        if t.state.is_finished()
    }


def _hpo_side(tmp_path: Path, name: str, pruner: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    spec = {
        "name": name,
        "objective": "test_pruner_equivalence:staircase",
        "metric": "loss",
        "direction": "minimize",
        "search_space": {},  # the objective suggests its own (define-by-run)
        "sampler": {"type": "random", "seed": SEED},
        "pruner": pruner,
        "budget": {"n_trials": N_TRIALS},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    out = run_hpo("run", str(path), "--workers", "1", "--storage", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # Read back with Optuna's own storage, not hpo's.
    study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))
    return study.get_trials()


def _reference(
    name: str, make_pruner: Any, trials: list[optuna.trial.FrozenTrial]
) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(
        study_name=name,
        storage=optuna.storages.InMemoryStorage(),
        sampler=optuna.samplers.RandomSampler(seed=SEED),
        pruner=make_pruner(),
        direction="minimize",
    )
    for t in sorted(trials, key=lambda t: t.number):
        study.enqueue_trial(t.params)
        study.optimize(staircase, n_trials=1)
    return study.get_trials()


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_pruner_decides_as_plain_optuna(tmp_path: Path, pruner: str) -> None:
    spec_pruner, make_pruner = PRUNERS[pruner]
    name = f"equiv-{pruner}"
    ours = _hpo_side(tmp_path, name, spec_pruner)
    assert len(ours) == N_TRIALS
    theirs = _reference(name, make_pruner, ours)
    assert [t.params for t in theirs] == [t.params for t in ours]
    got, want = _outcomes(ours), _outcomes(theirs)
    differ = {n: (got.get(n), want[n]) for n in want if got.get(n) != want[n]}
    assert not differ, f"{len(differ)} of {len(want)} decisions differ (hpo, optuna): {differ}"
    # The case must exercise the pruner: some trials pruned, some not (threshold aside,
    # which prunes on the value alone).
    states = {state for state, _ in want.values()}
    assert {"PRUNED", "COMPLETE"} <= states, states
    assert all(not math.isnan(t.value) for t in ours if t.state.name == "COMPLETE")
