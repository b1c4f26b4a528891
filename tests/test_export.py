"""`hpo export` and `hpo best` -> `hpo retrain` after a real run of the training loop."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_hpo, write_spec

MLP = """\
name: iris-mlp
objective: mlp
metric: val_accuracy
direction: maximize
search_space:
  lr:          {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  hidden_size: {type: int, low: 8, high: 32}
fixed: {dataset: iris, epochs: 3, batch_size: 16}
sampler: {type: random, seed: 0}
budget: {n_trials: 3}
"""


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """3 trials of the built-in MLP on iris, 3 epochs each, one trial process."""
    tmp = tmp_path_factory.mktemp("mlp")
    url = f"sqlite:///{tmp / 'h.db'}"
    res = run_hpo("run", str(write_spec(tmp / "mlp.yaml", MLP)), "--workers", "1", "--storage", url)
    assert res.returncode == 0, res.stderr
    return url, tmp


def test_export_json_has_params_values_states_durations_and_attrs(
    mlp_run: tuple[str, Path],
) -> None:
    url, _ = mlp_run
    res = run_hpo("export", "iris-mlp", "--storage", url, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    stored = {t.number: t for t in optuna.load_study(study_name="iris-mlp", storage=url).trials}
    assert [r["number"] for r in rows] == [0, 1, 2]
    for r in rows:
        t = stored[r["number"]]
        assert r["state"] == "COMPLETE"
        assert r["params"] == t.params and 1e-3 <= r["params"]["lr"] <= 0.1
        assert 8 <= r["params"]["hidden_size"] <= 32
        assert r["values"] == t.values and 0 <= r["values"][0] <= 1
        assert r["duration_s"] == pytest.approx(t.duration.total_seconds())
        assert r["epochs_run"] == 3
        attrs = r["user_attrs"]
        assert attrs["host"] == socket.gethostname() and attrs["device"] == "cpu"
        history = attrs["history"]
        assert [h["epoch"] for h in history] == [0, 1, 2]
        assert {"train_loss", "val_loss", "val_accuracy", "lr", "epoch_time"} <= set(history[0])
        # the value is the best epoch's metric, and the pruner saw every epoch's
        assert r["values"][0] == pytest.approx(history[attrs["best_epoch"]]["val_accuracy"])
        assert r["intermediate_values"] == {
            str(h["epoch"]): pytest.approx(h["val_accuracy"]) for h in history
        }
        assert len(attrs["confusion_matrix"]) == 3  # iris has 3 classes
        assert r["retry_of"] is None


def test_export_csv_matches_json(mlp_run: tuple[str, Path]) -> None:
    url, _ = mlp_run
    rows = json.loads(run_hpo("export", "iris-mlp", "--storage", url, "--format", "json").stdout)
    res = run_hpo("export", "iris-mlp", "--storage", url, "--format", "csv")
    assert res.returncode == 0, res.stderr
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 3
    for r, c in zip(rows, table, strict=True):
        assert int(c["number"]) == r["number"] and c["state"] == "COMPLETE"
        assert int(c["logical_trial"]) == r["logical_trial"] == r["number"]
        assert c["outcome"] == r["outcome"] == "complete"
        assert float(c["value"]) == pytest.approx(r["values"][0])
        assert float(c["params_lr"]) == pytest.approx(r["params"]["lr"])
        assert int(c["params_hidden_size"]) == r["params"]["hidden_size"]
        assert float(c["duration_s"]) == pytest.approx(r["duration_s"])
        assert int(c["epochs_run"]) == 3
        assert c["user_attrs_host"] == socket.gethostname()
        # nested attributes are JSON in their cell
        assert json.loads(c["user_attrs_history"]) == r["user_attrs"]["history"]
        assert json.loads(c["user_attrs_confusion_matrix"]) == r["user_attrs"]["confusion_matrix"]


def test_best_yaml_feeds_retrain(mlp_run: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mlp_run
    best_file = tmp_path / "best.yaml"
    res = run_hpo("best", "iris-mlp", "--storage", url, "--format", "yaml", "-o", str(best_file))
    assert res.returncode == 0, res.stderr
    best: dict[str, Any] = yaml.safe_load(best_file.read_text())
    rows = json.loads(run_hpo("export", "iris-mlp", "--storage", url, "--format", "json").stdout)
    top = max(rows, key=lambda r: r["values"][0])
    assert best["trial"] == top["number"] and best["params"] == top["params"]
    assert best["val_accuracy"] == pytest.approx(top["values"][0])

    out = tmp_path / "retrained"
    res = run_hpo(
        "retrain", "iris-mlp", "--storage", url, "--params", str(best_file), "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    # the best params, with the spec's fixed values, trained for the full 3 epochs
    assert manifest["params"] == {**best["fixed"], **best["params"]}
    assert manifest["params"]["dataset"] == "iris" and manifest["epochs_run"] == 3
    assert manifest["study"] == "iris-mlp" and manifest["metrics"] == ["val_accuracy"]
    assert len(manifest["history"]) == 3 and 0 <= manifest["values"][0] <= 1
    assert manifest["checkpoints"] and all((out / c).exists() for c in manifest["checkpoints"])
