"""Built-in objectives train for an epoch or two on their bundled or generated data."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import FixedTrial, TrialState

from hpo.context import TrialContext
from hpo.objectives import BUILTIN_OBJECTIVES
from hpo.objectives.mlp import objective as mlp_objective
from hpo.objectives.sequence import make_rhythm_data
from hpo.study._retrain import retrain
from hpo.training import load_sklearn_dataset, make_classification_data, stratified_split

FAST = {"epochs": 2, "batch_size": 64}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sequence objective's on-disk data go to the test's directory, not ~/.cache."""
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))


def _resolve(name: str) -> Any:
    module, attr = BUILTIN_OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mlp", {"dataset": "digits", "hidden_size": 32}),
        ("mlp", {"dataset": "iris", "hidden_size": 16, "dropout": 0.0}),
        ("mlp", {"dataset": "wine", "hidden_size": 16}),
        ("mlp", {"dataset": "breast_cancer", "hidden_size": 16}),
        ("cnn", {"channels": 4}),
        ("sequence", {"arch": "tcn", "hidden_size": 16, "n_samples": 200}),
        ("sequence", {"arch": "transformer", "hidden_size": 16, "n_samples": 200, "seq_len": 32}),
    ],
)
def test_objective_runs_and_records_test_accuracy(name: str, params: dict[str, Any]) -> None:
    trial = FixedTrial({})
    ctx = TrialContext(
        params={**FAST, **params}, metrics=("val_accuracy",), directions=("maximize",)
    )
    value = _resolve(name)(trial, ctx)
    assert isinstance(value, float) and math.isfinite(value)
    assert 0.0 <= trial.user_attrs["test_accuracy"] <= 1.0
    assert trial.user_attrs["epochs_run"] == 2


def test_diabetes_regression_objective_learns() -> None:
    trial = FixedTrial({})
    params = {"epochs": 15, "batch_size": 32, "lr": 0.003, "hidden_size": 32}
    ctx = TrialContext(params=params, metrics=("val_r2",), directions=("maximize",))
    value = _resolve("diabetes")(trial, ctx)
    assert value > 0.3  # a linear model reaches about 0.5 on this data
    assert "test_r2" in trial.user_attrs and "confusion_matrix" not in trial.user_attrs


def test_objectives_are_deterministic_per_seed() -> None:
    def value(seed: int) -> float:
        ctx = TrialContext(params={**FAST, "hidden_size": 16}, seed=seed)
        return float(mlp_objective(FixedTrial({}), ctx))

    assert value(3) == value(3)
    assert value(3) != value(4)


def test_bad_model_param_names_key_and_value() -> None:
    ctx = TrialContext(params={**FAST, "dataset": "mnist"})
    with pytest.raises(ValueError, match=r"`dataset` must be one of .* but got dataset='mnist'"):
        mlp_objective(FixedTrial({}), ctx)
    ctx = TrialContext(params={**FAST, "arch": "transformer", "hidden_size": 10, "n_heads": 4})
    with pytest.raises(ValueError, match="divisible by `n_heads`"):
        _resolve("sequence")(FixedTrial({}), ctx)


def test_mlp_in_a_real_study_with_pruner(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )

    def objective(trial: optuna.Trial) -> float:
        params = {
            "epochs": 3,
            "hidden_size": trial.suggest_int("hidden_size", 8, 32, log=True),
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        }
        ctx = TrialContext(
            params=params, metrics=("val_accuracy",), directions=("maximize",), seed=trial.number
        )
        return float(mlp_objective(trial, ctx))

    study.optimize(objective, n_trials=4)
    states = {t.state for t in study.trials}
    assert states <= {TrialState.COMPLETE, TrialState.PRUNED}
    best = study.best_trial
    best_row = best.user_attrs["history"][best.user_attrs["best_epoch"]]
    assert best.value == pytest.approx(best_row["val_accuracy"], rel=1e-5)  # attrs are rounded
    assert len(best.intermediate_values) == best.user_attrs["epochs_run"]


def test_retrain_writes_manifest_and_checkpoints(tmp_path: Path) -> None:
    params = {"epochs": 2, "hidden_size": 16, "dataset": "iris"}
    path = retrain(
        mlp_objective,
        params,
        metrics=["val_loss"],
        directions=["minimize"],
        out_dir=tmp_path / "model",
        manifest_extra={"spec": {"name": "demo"}, "study": "demo"},
        seed=5,
    )
    manifest = json.loads(path.read_text())
    assert path == tmp_path / "model" / "manifest.json"
    assert manifest["params"] == params and manifest["spec"] == {"name": "demo"}
    assert manifest["checkpoints"] == ["best.pt", "last.pt"]
    assert len(manifest["history"]) == 2 and manifest["epochs_run"] == 2
    best_row = manifest["history"][manifest["best_epoch"]]
    assert manifest["values"][0] == pytest.approx(best_row["val_loss"], rel=1e-5)
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["optuna"] == optuna.__version__
    assert manifest["hardware"]["cpu_count"] >= 1 and manifest["hardware"]["device"] == "cpu"
    assert "test_accuracy" in manifest["user_attrs"]
    weights = torch.load(tmp_path / "model" / "best.pt", weights_only=True)["model"]
    assert weights["net.0.weight"].shape == (16, 4)

    with pytest.raises(ValueError, match=r"must not set the manifest's own keys \['params'\]"):
        retrain(
            mlp_objective,
            params,
            metrics=["val_loss"],
            directions=["minimize"],
            out_dir=tmp_path / "other",
            manifest_extra={"params": {}},
        )


def test_stratified_split_is_fixed_and_keeps_class_proportions() -> None:
    _, y = load_sklearn_dataset("digits")
    parts = stratified_split(y, [0.6, 0.2, 0.2], seed=0)
    assert sum(len(p) for p in parts) == len(y)
    assert len(np.unique(np.concatenate(parts))) == len(y)
    for part, fraction in zip(parts, [0.6, 0.2, 0.2], strict=True):
        counts = np.bincount(y[part], minlength=10) / np.bincount(y, minlength=10)
        assert np.allclose(counts, fraction, atol=0.02)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(parts, stratified_split(y, [0.6, 0.2, 0.2], seed=0), strict=True)
    )


def test_standardization_uses_training_statistics_only() -> None:
    x, y = load_sklearn_dataset("wine")
    data = make_classification_data(x, y, seed=0)
    assert torch.allclose(data.x_train.mean(dim=0), torch.zeros(13), atol=1e-5)
    assert not torch.allclose(data.x_val.mean(dim=0), torch.zeros(13), atol=1e-3)


def test_rhythm_data_is_generated_deterministically_and_cached() -> None:
    a = make_rhythm_data(n_samples=100, n_channels=3, seq_len=16, n_classes=4)
    assert a is make_rhythm_data(n_samples=100, n_channels=3, seq_len=16, n_classes=4)
    make_rhythm_data.cache_clear()
    b = make_rhythm_data(n_samples=100, n_channels=3, seq_len=16, n_classes=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert a.x_train.shape == (60, 3, 16) and a.n_classes == 4
    assert torch.bincount(a.y_train).tolist() == [15, 15, 15, 15]


def test_sequence_study_reads_through_dataloader_workers_in_trial_processes(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Trial processes may start DataLoader workers (they are not daemonic)."""
    import hpo

    spec = hpo.parse_spec(
        "name: seq\nobjective: sequence\nmetric: val_f1\ndirection: maximize\n"
        "search_space: {lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}}\n"
        "fixed: {epochs: 1, n_samples: 200, hidden_size: 8, num_workers: 2,"
        f" cache_dir: {tmp_path / 'cache'}}}\n"
        "sampler: {type: random, seed: 0}\nbudget: {n_trials: 1}\n"
        f"checkpoint_dir: {tmp_path / 'ckpt'}\n"
    )
    study, summary = hpo.run(spec, storage=sqlite_url, workers=1)
    (trial,) = study.optuna.get_trials()
    assert summary.failed == 0, trial.user_attrs
    assert trial.state == TrialState.COMPLETE
