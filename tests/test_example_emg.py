"""examples/emg-transformer: the training script runs by itself and resumes, and both of its
specs (the client, and stdout read with a regex) run a short study end to end.

Only sizes shrink (``fixed:`` keys the specs' own base config has: fewer, shorter windows, a
narrower model, 2 epochs, 1 trial); the script and every other key are the example's own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import optuna
import pytest
from conftest import hpo_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "emg-transformer"
TINY = {
    "data.num_samples": 96,
    "data.seq_len": 32,
    "model.hidden_size": 16,
    "model.num_heads": 2,
    "training.batch_size": 32,
}


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "emg-transformer"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("checkpoints", "__pycache__"))
    return root


def _env() -> dict[str, str]:
    """`python` in a spec's command is this interpreter, as in an activated venv."""
    return {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


def _small(spec: str) -> str:
    spec = re.sub(r"n_trials: \d+", "n_trials: 1", spec)
    spec = re.sub(r"training\.num_epochs: \d+", "training.num_epochs: 2", spec)
    spec = re.sub(r"max_resource: \d+", "max_resource: 2", spec)
    spec = re.sub(r"min_resource: \d+", "min_resource: 1", spec)
    tiny = "".join(f"  {k}: {v}\n" for k, v in TINY.items())
    return spec.replace("fixed:\n", "fixed:\n" + tiny, 1)


def _load_train(root: Path) -> ModuleType:
    """The example's src/train.py as a module, for its ``train(config, resume)`` and
    ``main()`` to run in this process (sparing two torch start-ups)."""
    spec = importlib.util.spec_from_file_location("emg_train", root / "src" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_trains_by_itself_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(tmp_path)
    config = root / "configs" / "training_config.yaml"
    text = config.read_text()
    for key, value in TINY.items():
        name = key.split(".")[1]
        text = re.sub(rf"(\n  {name}: )\S+", rf"\g<1>{value}", text)
    config.write_text(text.replace("num_epochs: 30", "num_epochs: 1"))
    train = _load_train(root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("HPO_REPORT_SOCKET", raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "configs/training_config.yaml"])
    train.main()
    first = capsys.readouterr().out
    assert re.search(r"^epoch=0 .*val_loss=\S+ val_acc=\S+", first, re.M), first
    assert {p.name for p in (root / "checkpoints").iterdir()} == {
        "best_model.pth",
        "last_model.pth",
    }
    config.write_text(text.replace("num_epochs: 30", "num_epochs: 2"))
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--resume", "checkpoints/last_model.pth"])
    train.main()
    resumed = capsys.readouterr().out
    assert "resumed from checkpoints/last_model.pth at epoch 1" in resumed
    assert re.findall(r"^epoch=(\d+)", resumed, re.M) == ["1"]


def test_both_specs_run_a_short_study(tmp_path: Path) -> None:
    """(a) the client and (b) stdout, side by side (two `hpo run`s at once, which halves
    the test's time on two cores): one trial of two epochs each."""
    runs = {}
    for spec_name in ("study_client.yaml", "study_stdout.yaml"):
        where = tmp_path / Path(spec_name).stem
        root = _copy(where)
        spec = root / spec_name
        spec.write_text(_small(spec.read_text()))
        url = f"sqlite:///{where / 'study.db'}"
        command = [sys.executable, "-m", "hpo.cli", "run", str(spec), "--storage", url]
        proc = subprocess.Popen(
            [*command, "--gpus", "none"],
            cwd=where,
            env=hpo_env(**_env()),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs[spec_name] = (proc, where, root, url)
    for spec_name, (proc, where, root, url) in runs.items():
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{spec_name}: {err}"
        name = re.search(r"^name: (\S+)", (root / spec_name).read_text(), re.M)
        assert name is not None
        [t] = optuna.load_study(study_name=name.group(1), storage=url).trials
        assert t.state == optuna.trial.TrialState.COMPLETE, spec_name
        assert list(t.intermediate_values) == [0, 1], spec_name  # every epoch reached it
        assert t.value == min(t.intermediate_values.values())
        # the trial wrote its checkpoints in its own directory, as {checkpoint_dir} said
        [last] = where.rglob("last_model.pth")
        assert last.parent.name == "checkpoints" and last.parent.parent.name.startswith("trial-")
        assert not (root / "checkpoints").exists()
