"""`hpo retrain`: a params file that names a trial reproduces it, seed and all (issue 12.8),
and a plain Optuna objective's retrain says what it saved and what it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_hpo, toy_spec, write_spec

from hpo.spec import parse_spec

MLP = """\
name: tiny-mlp
objective: mlp
metric: val_loss
direction: minimize
search_space:
  lr:          {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  hidden_size: {type: int, low: 8, high: 32}
fixed: {dataset: iris, epochs: 2, batch_size: 16}
sampler: {type: random, seed: 1}
budget: {n_trials: 3}
"""


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("tiny")
    url = f"sqlite:///{tmp / 'h.db'}"
    res = run_hpo("run", str(write_spec(tmp / "s.yaml", MLP)), "--workers", "1", "--storage", url)
    assert res.returncode == 0, res.stderr
    return url, tmp


def test_retrain_params_file_reproduces_the_trial_it_names(
    mlp_run: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = mlp_run
    best_file = tmp_path / "best.yaml"
    assert run_hpo("best", "tiny-mlp", "--storage", url, "-o", str(best_file)).returncode == 0
    best = yaml.safe_load(best_file.read_text())
    trial = optuna.load_study(study_name="tiny-mlp", storage=url).trials[best["trial"]]
    seed = parse_spec(MLP, source="s.yaml").trial_seed(trial.number)

    out = tmp_path / "from-file"
    res = run_hpo(
        "retrain", "tiny-mlp", "--storage", url, "--params", str(best_file), "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trial"] == trial.number and manifest["seed"] == seed != 0
    # the same seed and params: the same model, so the same validation loss, to the bit
    assert manifest["values"] == [trial.value]
    assert f"trial #{trial.number}" in res.stdout and "best.pt" in res.stdout


def test_retrain_params_that_differ_from_the_named_trial_say_so(
    mlp_run: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = mlp_run
    best_file = tmp_path / "best.yaml"
    assert run_hpo("best", "tiny-mlp", "--storage", url, "-o", str(best_file)).returncode == 0
    doc = yaml.safe_load(best_file.read_text())
    doc["params"]["hidden_size"] = 33 if doc["params"]["hidden_size"] != 33 else 34
    best_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "edited"
    res = run_hpo(
        "retrain", "tiny-mlp", "--storage", url, "--params", str(best_file), "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert f"differ from trial #{doc['trial']}'s (hidden_size)" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["trial"] is None
        and manifest["params"]["hidden_size"] == doc["params"]["hidden_size"]
    )


def test_retrain_of_a_plain_objective_says_it_saves_no_model(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    spec = write_spec(tmp_path / "toy.yaml", toy_spec(3, pruner=False))
    assert run_hpo("run", str(spec), "--workers", "1", "--storage", url).returncode == 0
    out = tmp_path / "r"
    res = run_hpo("retrain", "toy", "--storage", url, "-o", str(out))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoints"] == [] and not list(out.glob("*.pt"))
    assert "checkpoint(s)" not in res.stdout
    assert "no model was saved" in res.stdout and "plain Optuna objective" in res.stdout
    assert str(out / "manifest.json") in res.stdout
