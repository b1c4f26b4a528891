"""The README's examples run as written: its objective modules and the specs that name them.

Only the budget shrinks (a few trials of a couple of epochs); the code and every other key
are the README's own, run from the working directory the README says they are importable from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_hpo

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"```(python|yaml)\n(.*?)```", re.S)
_MODULE = re.compile(r"^# (mypackage/\w+\.py)\b")


def _modules() -> dict[str, str]:
    """``mypackage/x.py`` -> its code, for every Python block that starts by naming its file."""
    found = {}
    for lang, body in _BLOCK.findall(README.read_text()):
        if lang == "python" and (m := _MODULE.match(body)):
            found[m.group(1)] = body
    return found


def _specs() -> list[str]:
    return [
        body
        for lang, body in _BLOCK.findall(README.read_text())
        if lang == "yaml" and re.search(r"^objective: mypackage\.", body, re.M)
    ]


def _write_users_data(root: Path) -> None:
    """Small files in the formats the README's "your data" examples read (their real data sets
    are the user's): the SmartPouch windows as npz, the sign landmark sequences as npy."""
    rng = np.random.default_rng(0)
    data = root / "data"
    (data / "signs").mkdir(parents=True)
    for split, n in (("train", 96), ("val", 32)):
        labels = rng.integers(0, 4, n)
        features = rng.normal(size=(n, 12)) + labels[:, None]
        np.savez(data / f"pouch_{split}.npz", features=features, labels=labels)
        np.save(data / "signs" / f"x_{split}.npy", rng.normal(size=(n, 6, 744)).astype(np.float32))
        np.save(data / "signs" / f"y_{split}.npy", rng.integers(0, 250, n))


def _small(spec: str) -> str:
    spec = re.sub(r"n_trials: \d+", "n_trials: 2", spec)
    return re.sub(r"\bepochs: \d+", "epochs: 1", spec)


def test_the_readme_has_examples_to_run() -> None:
    assert _modules() and _specs()


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: re.search(r"name: (\S+)", s).group(1))
def test_readme_spec_runs_its_objective_from_the_working_directory(
    spec: str, tmp_path: Path
) -> None:
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, code in _modules().items():
        (tmp_path / name).write_text(code)
    (tmp_path / "spec.yaml").write_text(_small(spec))
    _write_users_data(tmp_path)
    db = f"sqlite:///{tmp_path / 'readme.db'}"
    ran = run_hpo("run", "spec.yaml", "--storage", db, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    name = re.search(r"name: (\S+)", spec).group(1)
    status = run_hpo("status", name, "--storage", db, "--format", "json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"].get("complete", 0) >= 1


def test_readme_shows_the_example_specs_as_they_are() -> None:
    """A YAML block that starts by naming a file of examples/ is that file, less its header
    comments (the example's own test runs it)."""
    root = README.parent
    shown = [
        (m.group(1), body[m.end() :])
        for lang, body in _BLOCK.findall(README.read_text())
        if lang == "yaml" and (m := re.match(r"# (examples/\S+\.yaml)\n", body))
    ]
    assert shown, "the README shows no example spec"
    for path, body in shown:
        text = (root / path).read_text()
        assert body == re.sub(r"\A(#.*\n)+", "", text), path
