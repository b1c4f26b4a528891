"""Where hpo may not use Optuna's internals, it runs Optuna's stock TPE and Hyperband with the
spec's options, and never imports the adapters that hold those internals."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import hpo_env, write_spec

from hpo._optuna import INTERNALS_ENV, internals_supported
from hpo.search import make_pruner, make_sampler
from hpo.spec import StudySpec, parse_spec

SPEC = """\
name: fallback
objective: toy_objectives:quadratic
metric: loss
direction: minimize
search_space:
  x: {type: float, low: -10, high: 10}
  y: {type: int, low: 0, high: 5}
sampler: {type: tpe, seed: 3, n_startup_trials: 2}
pruner: {type: hyperband, min_resource: 1, max_resource: 3, reduction_factor: 2}
budget: {n_trials: 6}
"""

# Modules that import Optuna's private names (or import those that do).
ADAPTERS = (
    "hpo._optuna._tpe",
    "hpo._optuna._pruners",
    "hpo.search._tpe",
    "hpo.search._parzen",
    "hpo.search._hyperband",
)

# A `sitecustomize` that makes hpo's adapters fail to import in every process that starts with
# it on its path, as they would on an Optuna release where a private name they import vanished.
VANISHED = f"""\
import importlib.abc
import sys


class _Vanished(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {ADAPTERS[:2]!r}:
            raise ImportError(f"{{name}}: a private Optuna name it imports is gone")
        return None


sys.meta_path.insert(0, _Vanished())
"""


@pytest.fixture
def internals(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The release gate read afresh: set or unset ``HPO_OPTUNA_INTERNALS`` through the patch."""
    monkeypatch.delenv(INTERNALS_ENV, raising=False)
    internals_supported.cache_clear()
    yield monkeypatch
    internals_supported.cache_clear()


def _spec() -> StudySpec:
    return parse_spec(SPEC, source="fallback.yaml", check_objective=False)


def test_tested_optuna_gets_hpos_classes(internals: pytest.MonkeyPatch) -> None:
    from hpo.search._hyperband import HyperbandPruner
    from hpo.search._tpe import IncrementalTPESampler

    assert internals_supported()
    spec = _spec()
    assert type(make_sampler(spec)) is IncrementalTPESampler
    assert spec.pruner is not None and type(make_pruner(spec.pruner)) is HyperbandPruner


def test_internals_off_gets_optunas_stock_classes_with_the_same_options(
    internals: pytest.MonkeyPatch,
) -> None:
    internals.setenv(INTERNALS_ENV, "off")
    spec = _spec()
    sampler = make_sampler(spec)
    assert spec.pruner is not None
    pruner = make_pruner(spec.pruner)
    assert type(sampler) is optuna.samplers.TPESampler
    assert type(pruner) is optuna.pruners.HyperbandPruner
    # The spec's options, and hpo's default of the constant liar for parallel workers.
    assert sampler._n_startup_trials == 2 and sampler._constant_liar
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (1, 3, 2)
    # The same samples as hpo's class from the same seed: only the speed differs.
    internals.delenv(INTERNALS_ENV)
    internals_supported.cache_clear()
    ours = make_sampler(spec)
    for s in (sampler, ours):
        study = optuna.create_study(sampler=s)
        study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 2) ** 2, n_trials=8)
        s.samples = [t.params["x"] for t in study.trials]  # type: ignore[attr-defined]
    assert ours.samples == sampler.samples  # type: ignore[attr-defined]


def test_internals_off_never_imports_the_adapters(tmp_path: Path) -> None:
    """In a fresh process (nothing imported yet), building the sampler and pruner with the
    internals off leaves every module that touches Optuna's internals unimported."""
    write_spec(tmp_path / "fallback.yaml", SPEC)
    code = (
        "import json, sys\n"
        "from hpo.search import make_pruner, make_sampler\n"
        "from hpo.spec import load_spec\n"
        f"spec = load_spec({str(tmp_path / 'fallback.yaml')!r}, check_objective=False)\n"
        "s, p = make_sampler(spec), make_pruner(spec.pruner)\n"
        f"loaded = sorted(m for m in {ADAPTERS!r} if m in sys.modules)\n"
        "print(json.dumps([type(s).__module__, type(p).__module__, loaded]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=hpo_env(**{INTERNALS_ENV: "off"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    sampler_module, pruner_module, loaded = json.loads(res.stdout)
    assert sampler_module.startswith("optuna.") and pruner_module.startswith("optuna.")
    assert loaded == []


@pytest.mark.parametrize(
    ("internals_off", "vanished"),
    [(True, True), (False, True), (False, False)],
    ids=["off-vanished", "on-vanished", "on"],
)
def test_hpo_run_survives_an_optuna_without_the_internals(
    tmp_path: Path, internals_off: bool, vanished: bool
) -> None:
    """`hpo run` end to end with hpo's adapters unimportable in every process (as on a release
    where a private name they import is gone): with HPO_OPTUNA_INTERNALS=off the study runs to
    its budget on Optuna's stock classes; without it, the import fails (the check is real).
    With the adapters there, hpo's own classes run it to its budget too."""
    spec = write_spec(tmp_path / "fallback.yaml", SPEC)
    env = hpo_env()
    if vanished:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(VANISHED)
        env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    if internals_off:
        env[INTERNALS_ENV] = "off"
    url = f"sqlite:///{tmp_path / 'h.db'}"
    res = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "-v", "run", str(spec), "--storage", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if vanished and not internals_off:
        assert res.returncode != 0 and "a private Optuna name it imports is gone" in res.stderr
        return
    assert res.returncode == 0, res.stderr
    stock = f"{INTERNALS_ENV}=off: using Optuna's stock TPE, Hyperband"
    assert (stock in res.stderr) == internals_off
    study = optuna.load_study(study_name="fallback", storage=url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 6
