"""The spec loader: valid specs load into the right objects, bad ones fail in one line."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.errors import SpecError
from hpo.search import (
    PRUNERS,
    SAMPLERS,
    distribution,
    distributions,
    grid_points,
    make_pruner,
    make_sampler,
)
from hpo.spec import (
    MAX_GRID_POINTS,
    StudySpec,
    load_spec,
    parse_spec,
    resolve_objective,
    spec_from_dict,
)

EXAMPLE = """\
name: digits-mlp-tpe
objective: mlp
metric: val_accuracy
direction: maximize
search_space:
  lr:         {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
  batch_size: {type: categorical, choices: [16, 32, 64]}
  hidden_size: {type: int, low: 32, high: 512, log: true}
  dropout:    {type: float, low: 0.0, high: 0.7}
fixed: {epochs: 30, patience: 5, dataset: digits}
sampler: {type: tpe, seed: 0}
pruner:  {type: hyperband, min_resource: 1, max_resource: 30}
budget:  {n_trials: 60, timeout: 3600}
storage: sqlite:///hpo.db
"""

BASE = {
    "name": "s",
    "objective": "mlp",
    "metric": "loss",
    "direction": "minimize",
    "search_space": "{lr: {type: float, low: 0.001, high: 0.1, log: true}}",
    "sampler": "{type: tpe, seed: 0}",
}
OBJECTIVES = """\
def plain(trial):
    return 0.0

def with_ctx(trial, ctx):
    return 0.0

def three(trial, ctx, extra):
    return 0.0

not_callable = 3
"""


def spec_text(**over: str | None) -> str:
    """BASE with keys replaced (a value of None drops the key), as YAML text."""
    fields = {**BASE, **over}
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None)


def sp(param: str) -> str:
    """BASE searching one parameter, x."""
    return spec_text(search_space=f"{{x: {param}}}")


def parse(text: str, **kw: Any) -> StudySpec:
    kw.setdefault("check_objective", False)
    return parse_spec(text, source="spec.yaml", **kw)


@pytest.fixture
def objectives_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path on sys.path, with hpo_spec_objs.py in it; imported modules are forgotten."""
    (tmp_path / "hpo_spec_objs.py").write_text(OBJECTIVES)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


# ---------------------------------------------------------------------------------------
# Valid specs


def test_example_spec_loads(tmp_path: Path) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text(EXAMPLE)
    spec = load_spec(path, check_objective=False)
    assert (spec.name, spec.objective, spec.source) == ("digits-mlp-tpe", "mlp", str(path))
    assert spec.metrics == ("val_accuracy",) and spec.directions == ("maximize",)
    lr, batch, hidden, dropout = spec.search_space
    assert (lr.name, lr.type, lr.low, lr.high, lr.log) == ("lr", "float", 1e-5, 1e-1, True)
    assert batch.choices == (16, 32, 64)
    assert (hidden.type, hidden.low, hidden.high, hidden.log) == ("int", 32, 512, True)
    assert (dropout.low, dropout.high, dropout.log, dropout.step) == (0.0, 0.7, False, None)
    assert spec.fixed == {"epochs": 30, "patience": 5, "dataset": "digits"}
    assert (spec.sampler.type, spec.sampler.seed) == ("tpe", 0)
    assert spec.pruner.type == "hyperband"
    assert spec.pruner.options == {"min_resource": 1, "max_resource": 30}
    assert (spec.budget.n_trials, spec.budget.timeout, spec.n_trials) == (60, 3600.0, 60)
    assert spec.storage == "sqlite:///hpo.db" and not spec.is_grid
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    dists = distributions(spec)
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    assert dists["batch_size"] == optuna.distributions.CategoricalDistribution([16, 32, 64])
    assert dists["hidden_size"] == optuna.distributions.IntDistribution(32, 512, log=True)


def test_defaults() -> None:
    spec = parse("name: s\nobjective: mlp\n")
    assert spec.metrics == ("val_loss",) and spec.directions == ("minimize",)
    assert spec.search_space == () and spec.fixed == {}
    assert (spec.sampler.type, spec.pruner.type, spec.n_trials) == ("tpe", "none", None)
    assert spec.storage is None and spec.checkpoint_dir == "checkpoints"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_builds(sampler: str) -> None:
    space = "{x: {type: int, low: 0, high: 3}}"
    spec = parse(spec_text(sampler=f"{{type: {sampler}, seed: 3}}", search_space=space))
    built = make_sampler(spec)
    expected = "RandomSampler" if sampler == "grid" else None
    assert isinstance(built, optuna.samplers.BaseSampler)
    assert expected is None or type(built).__name__ == expected
    assert spec.sampler.seed == 3


def test_sampler_options_pass_through() -> None:
    spec = parse(spec_text(sampler="{type: tpe, n_startup_trials: 3, multivariate: true}"))
    assert spec.sampler.options == {"n_startup_trials": 3, "multivariate": True}
    assert make_sampler(spec)._n_startup_trials == 3


PRUNER_YAML = {
    "none": "none",
    "median": "{type: median, n_startup_trials: 2, n_warmup_steps: 1}",
    "percentile": "{type: percentile, percentile: 25.0}",
    "successive_halving": "{type: successive_halving, reduction_factor: 3}",
    "hyperband": "{type: hyperband, min_resource: 1, max_resource: 30}",
    "patient": "{type: patient, patience: 2, wrapped: {type: median}}",
    "threshold": "{type: threshold, lower: 0.1}",
    "wilcoxon": "{type: wilcoxon, p_threshold: 0.05}",
}


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_builds(pruner: str) -> None:
    spec = parse(spec_text(pruner=PRUNER_YAML[pruner]))
    assert spec.pruner.type == pruner
    assert isinstance(make_pruner(spec.pruner), optuna.pruners.BasePruner)


def test_patient_pruner_may_wrap_nothing() -> None:
    spec = parse(spec_text(pruner="{type: patient, patience: 3, wrapped: none}"))
    assert spec.pruner.wrapped is not None and spec.pruner.wrapped.type == "none"
    assert isinstance(make_pruner(spec.pruner), optuna.pruners.PatientPruner)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("{type: categorical, choices: [a, b, c]}", ("a", "b", "c")),
        ("{type: int, low: 1, high: 5}", (1, 2, 3, 4, 5)),
        ("{type: int, low: 1, high: 10, step: 3}", (1, 4, 7, 10)),
        ("{type: float, low: 0.0, high: 1.0, step: 0.25}", (0.0, 0.25, 0.5, 0.75, 1.0)),
        ("{type: float, low: 0.0, high: 0.3, step: 0.1}", (0.0, 0.1, 0.2, 0.3)),
        ("{type: float, low: 0.0, high: 1.0, step: 0.4}", (0.0, 0.4, 0.8)),
        ("{type: float, low: 0.1, high: 0.7, step: 0.1}", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)),
        ("{type: float, low: -1.0e+300, high: 1.0e+300, step: 1.0e+300}", (-1e300, 0.0, 1e300)),
        ("{type: float, values: [0.1, 0.5, 2]}", (0.1, 0.5, 2.0)),
        ("{type: int, values: [8, 2], log: true}", (8, 2)),
    ],
)
@pytest.mark.filterwarnings("ignore:The distribution is specified by")
def test_grid_values(param: str, expected: tuple[Any, ...]) -> None:
    spec = parse(spec_text(sampler="grid", search_space=f"{{x: {param}}}"))
    (p,) = spec.search_space
    assert p.grid_values() == expected
    assert p.grid_count() == len(expected) == spec.grid_size() == spec.n_trials
    assert [point["x"] for point in grid_points(spec)] == list(expected)
    # every point lies inside the Optuna distribution the trial will be asked with
    dist = distribution(p)
    assert all(dist._contains(dist.to_internal_repr(x)) for x in expected)


def test_grid_size_is_the_product_and_the_default_budget() -> None:
    space = "{a: {type: categorical, choices: [x, y]}, b: {type: int, low: 0, high: 5, step: 1}}"
    spec = parse(spec_text(sampler="grid", search_space=space))
    assert spec.is_grid and spec.grid_size() == 12 and spec.n_trials == 12
    assert len(grid_points(spec)) == 12 and grid_points(spec)[1] == {"a": "x", "b": 1}
    smaller = parse(spec_text(sampler="grid", search_space=space, budget="{n_trials: 5}"))
    assert smaller.n_trials == 5


def test_grid_at_the_limit_loads() -> None:
    space = f"{{a: {{type: int, low: 1, high: {MAX_GRID_POINTS}}}}}"
    assert parse(spec_text(sampler="grid", search_space=space)).n_trials == MAX_GRID_POINTS


def test_fixed_params_pass_through() -> None:
    spec = parse(spec_text(fixed="{epochs: 3, layers: [64, 32], opt: {name: adam}, x: null}"))
    assert spec.fixed == {"epochs": 3, "layers": [64, 32], "opt": {"name": "adam"}, "x": None}


def test_multi_objective() -> None:
    spec = parse(
        spec_text(metric=None, direction=None, sampler="nsgaii")
        + "metrics: [acc, latency]\ndirections: [maximize, minimize]\n"
    )
    assert spec.metrics == ("acc", "latency") and spec.directions == ("maximize", "minimize")


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE,
        spec_text(
            sampler="{type: grid, seed: 1}",
            search_space="{a: {type: float, low: 0, high: 1, step: 0.5, values: [0.5, 1]},"
            " b: {type: int, low: 1, high: 9, step: 2}, c: {type: categorical, choices: [1, x]}}",
            pruner="{type: patient, patience: 1, wrapped: {type: percentile, percentile: 10}}",
            budget="{trial_timeout: 60}",
            retry="{max_retries: 0, heartbeat_interval: 5, grace_period: 20}",
            description="'a grid'",
            checkpoint_dir="/tmp/ckpt",
        ),
    ],
)
def test_to_dict_round_trips(text: str) -> None:
    spec = parse(text)
    # storage is where a study lives, not part of it: to_dict leaves it out on purpose
    expected = dataclasses.replace(spec, storage=None)
    assert spec_from_dict(spec.to_dict(), source="spec.yaml", check_objective=False) == expected
    # ... and as stored with the study (a JSON user attribute)
    stored = json.loads(json.dumps(spec.to_dict()))
    assert spec_from_dict(stored, source="spec.yaml", check_objective=False) == expected


def test_yaml_niceties() -> None:
    text = spec_text(search_space="{lr: {type: float, low: 1e-5, high: 3e-1, log: true}}")
    # YAML 1.1 reads 1e-5 as a string; the loader reads it as the number it means
    assert parse(text).search_space[0].low == 1e-5
    # an anchor's home is still a key the spec must know
    with pytest.raises(SpecError, match=r"spec\.yaml: x-default: unknown key"):
        parse("x-default: &d {type: median}\n" + spec_text(pruner="*d"))


def test_merge_keys_may_override() -> None:
    text = spec_text(search_space=None) + textwrap.dedent("""\
        search_space:
          a: &p {type: float, low: 0.0, high: 1.0}
          b:
            <<: *p
            high: 2.0
        """)
    a, b = parse(text).search_space
    assert (a.high, b.high) == (1.0, 2.0)


def test_import_path_objectives_resolve(objectives_dir: Path) -> None:
    spec = parse(spec_text(objective="hpo_spec_objs:plain"), check_objective=True)
    assert spec.objective == "hpo_spec_objs:plain"
    assert resolve_objective("hpo_spec_objs:with_ctx").__name__ == "with_ctx"


# ---------------------------------------------------------------------------------------
# Invalid specs: one line naming the file, the key and the value

LOGF = "{type: float, low: 0.001, high: 0.1, log: true}"
BAD = [
    # (yaml text, dotted key or None, a fragment of the message)
    ("name: [unclosed\n", None, "line 2"),
    ("name: x\n  objective: mlp\n", None, "line 2, column 12"),
    ("name: 'x\n", None, "found unexpected end of stream"),
    ("- name\n- objective\n", None, "['name', 'objective']"),
    ("just a string\n", None, "'just a string'"),
    ("", None, "must be a YAML mapping"),
    (spec_text() + "nmae: x\n", "nmae", "did you mean 'name'? (got 'x')"),
    (spec_text() + "sampelr: tpe\n", "sampelr", "'tpe'"),
    (
        sp("{type: float, low: 0.1, high: 1.0, lgo: true}"),
        "search_space.x.lgo",
        "did you mean 'log'? (got True)",
    ),
    (spec_text(budget="{n_trail: 5}"), "budget.n_trail", "did you mean 'n_trials'? (got 5)"),
    (spec_text(retry="{max_retry: 1}"), "retry.max_retry", "(got 1)"),
    (spec_text(name="[a, b]"), "name", "must be a non-empty string (got ['a', 'b'])"),
    (spec_text(name="'a b'"), "name", "'a b'"),
    (spec_text(name='"a\\n"'), "name", "'a\\n'"),
    (spec_text(objective=None), "objective", "is required"),
    (spec_text(objective="42"), "objective", "(got 42)"),
    (spec_text(direction="maximise"), "direction", "did you mean 'maximize'? (got 'maximise')"),
    (spec_text(metric=None) + "metrics: [a, b]\n", "directions", "(got ['minimize'])"),
    (
        spec_text(metric=None, direction=None)
        + "metrics: [a, a]\ndirections: [minimize, maximize]\n",
        "metrics",
        "has duplicates (got ['a', 'a'])",
    ),
    (spec_text() + "metrics: [a]\n", "metrics", "either metric or metrics"),
    (spec_text(search_space="[lr]"), "search_space", "(got ['lr'])"),
    (spec_text(search_space="{lr: 0.1}"), "search_space.lr", "(got 0.1)"),
    (sp("{type: real}"), "search_space.x.type", "(got 'real')"),
    (sp("{type: float, high: 1.0}"), "search_space.x.low", "is required"),
    (sp("{type: float, low: abc, high: 1}"), "search_space.x.low", "'abc'"),
    (sp("{type: float, low: true, high: 1}"), "search_space.x.low", "(got True)"),
    (sp("{type: int, low: 0, high: yes}"), "search_space.x.high", "(got True)"),
    (sp("{type: int, low: 1.5, high: 3}"), "search_space.x.low", "(got 1.5)"),
    (
        sp("{type: float, low: 1, high: 0.1}"),
        "search_space.x.low",
        "must be <= high (0.1) (got 1.0)",
    ),
    (sp("{type: int, low: 5, high: 1}"), "search_space.x.low", "(got 5)"),
    (sp("{type: float, low: 0, high: 1, log: true}"), "search_space.x.low", "log scale (got 0.0)"),
    (sp("{type: float, low: -1, high: 1, log: true}"), "search_space.x.low", "(got -1.0)"),
    (sp("{type: float, low: 0.1, high: 1, log: 'yes'}"), "search_space.x.log", "(got 'yes')"),
    (sp("{type: float, low: .nan, high: 1}"), "search_space.x.low", "must be finite (got nan)"),
    (sp("{type: float, low: 0, high: .inf}"), "search_space.x.high", "(got inf)"),
    (sp("{type: float, low: -.inf, high: 0}"), "search_space.x.low", "(got -inf)"),
    (sp("{type: float, low: 0, high: 1" + "0" * 400 + "}"), "search_space.x.high", "too large"),
    (sp("{type: int, low: 0, high: 1" + "0" * 30 + "}"), "search_space.x.high", "2**53"),
    (sp("{type: float, low: 0, high: 1, step: 0}"), "search_space.x.step", "must be > 0 (got 0.0)"),
    (
        sp("{type: float, low: 0.1, high: 1, step: 0.1, log: true}"),
        "search_space.x.step",
        "(got 0.1)",
    ),
    (
        sp("{type: float, values: [0.1, 5], high: 1}"),
        "search_space.x.values",
        "outside [0.1, 1.0] (got 5.0)",
    ),
    (sp("{type: int, values: [1, 1.0]}"), "search_space.x.values", "duplicate values (got [1, 1])"),
    (sp("{type: int, values: []}"), "search_space.x.values", "(got [])"),
    (sp("{type: categorical, choices: []}"), "search_space.x.choices", "non-empty list (got [])"),
    (sp("{type: categorical}"), "search_space.x.choices", "is required"),
    (
        sp("{type: categorical, choices: [16, 16]}"),
        "search_space.x.choices",
        "duplicate choices (got [16, 16])",
    ),
    (sp("{type: categorical, choices: [1, true]}"), "search_space.x.choices", "(got [1, True])"),
    (sp("{type: categorical, choices: [1, 1.0]}"), "search_space.x.choices", "(got [1, 1.0])"),
    (sp("{type: categorical, choices: [[1, 2], 3]}"), "search_space.x.choices", "(got [1, 2])"),
    (sp("{type: categorical, choices: [a, .nan]}"), "search_space.x.choices", "(got nan)"),
    (sp("{type: categorical, choices: [a], low: 1}"), "search_space.x.low", "(got 1)"),
    (spec_text(fixed="[1]"), "fixed", "(got [1])"),
    (spec_text(fixed="{epochs: .nan}"), "fixed.epochs", "must be finite (got nan)"),
    (spec_text(fixed="{day: 2024-01-01}"), "fixed.day", "datetime.date(2024, 1, 1)"),
    (spec_text(fixed="{lr: 0.1}"), "fixed.lr", "also in search_space (got 0.1)"),
    (spec_text(fixed="&f {me: *f}"), "fixed.me", "must not contain itself"),
    (spec_text(sampler="tpee"), "sampler.type", "did you mean 'tpe'? (got 'tpee')"),
    (spec_text(sampler="{type: annealing}"), "sampler.type", "(got 'annealing')"),
    (spec_text(sampler="[tpe]"), "sampler", "(got ['tpe'])"),
    (
        spec_text(sampler="{type: tpe, n_startup: 3}"),
        "sampler.n_startup",
        "did you mean 'n_startup_trials'? (got 3)",
    ),
    (
        spec_text(sampler="{type: grid, n_startup_trials: 3}"),
        "sampler.n_startup_trials",
        "it takes none (got 3)",
    ),
    (
        spec_text(sampler="{type: tpe, n_startup_trials: '3'}"),
        "sampler.n_startup_trials",
        "must be int (got '3')",
    ),
    (spec_text(sampler="{type: tpe, multivariate: 1}"), "sampler.multivariate", "(got 1)"),
    (
        spec_text(sampler="{type: tpe, gamma: 0.25}"),
        "sampler.gamma",
        "takes a Python object, which a spec cannot give (got 0.25)",
    ),
    (spec_text(sampler="{type: tpe, prior_weight: .inf}"), "sampler.prior_weight", "(got inf)"),
    (
        spec_text(sampler="{type: nsgaii, population_size: 1}"),
        "sampler.population_size",
        "must be >= 2 (crossover needs two parents) (got 1)",
    ),
    (
        spec_text(sampler="{type: qmc, qmc_type: bogus}"),
        "sampler.qmc_type",
        "must be one of 'sobol', 'halton' (got 'bogus')",
    ),
    (spec_text(sampler="{type: tpe, seed: -1}"), "sampler.seed", "(got -1)"),
    (spec_text(sampler="{type: tpe, seed: 4294967296}"), "sampler.seed", "(got 4294967296)"),
    (spec_text(sampler="{type: tpe, seed: 1.5}"), "sampler.seed", "(got 1.5)"),
    (spec_text(sampler="{type: tpe, seed: true}"), "sampler.seed", "(got True)"),
    (spec_text(pruner="medain"), "pruner.type", "did you mean 'median'? (got 'medain')"),
    (
        spec_text(pruner="{type: median, warmup: 2}"),
        "pruner.warmup",
        "did you mean 'n_warmup_steps'? (got 2)",
    ),
    (spec_text(pruner="{type: none, patience: 2}"), "pruner.patience", "(got 2)"),
    (spec_text(pruner="{type: percentile}"), "pruner.percentile", "is required"),
    (
        spec_text(pruner="{type: percentile, percentile: 150.0}"),
        "pruner.percentile",
        "must be in [0, 100] (got 150.0)",
    ),
    (
        spec_text(pruner="{type: hyperband, reduction_factor: 1.5}"),
        "pruner.reduction_factor",
        "(got 1.5)",
    ),
    (spec_text(pruner="{type: patient, patience: 2}"), "pruner.wrapped", "is required"),
    (spec_text(pruner="{type: patient, wrapped: median}"), "pruner.patience", "is required"),
    (spec_text(pruner="{type: median, wrapped: median}"), "pruner.wrapped", "(got 'median')"),
    (
        spec_text(pruner="{type: patient, patience: 1, wrapped: {type: median, n_start: 1}}"),
        "pruner.wrapped.n_start",
        "did you mean 'n_startup_trials'? (got 1)",
    ),
    (
        spec_text(metric=None, direction=None, pruner="median")
        + "metrics: [a, b]\ndirections: [minimize, minimize]\n",
        "pruner.type",
        "single objective (got 'median')",
    ),
    (
        spec_text(metric=None, direction=None, sampler="cmaes")
        + "metrics: [a, b]\ndirections: [minimize, minimize]\n",
        "sampler.type",
        "(got 'cmaes')",
    ),
    (spec_text(sampler="grid", search_space="{}"), "search_space", "at least one parameter"),
    (spec_text(sampler="grid"), "search_space.lr", "needs 'values' or 'step' (got {'low': 0.001"),
    (
        spec_text(
            sampler="grid", search_space="{x: {type: float, low: 0, high: 1, step: 1.0e-12}}"
        ),
        "search_space",
        f"more than {MAX_GRID_POINTS} points (got 1000000000001)",
    ),
    (
        spec_text(
            sampler="grid",
            search_space="{a: {type: int, low: 1, high: 1000}, b: {type: int, low: 1, high: 1000}}",
        ),
        "search_space",
        "(got 1000000)",
    ),
    (
        spec_text(
            sampler="grid", search_space="{x: {type: int, low: 1, high: 3}}", budget="{n_trials: 4}"
        ),
        "budget.n_trials",
        "exceeds the grid's 3 points (got 4)",
    ),
    (spec_text(budget="{n_trials: 0}"), "budget.n_trials", "must be >= 1 (got 0)"),
    (spec_text(budget="{n_trials: -3}"), "budget.n_trials", "(got -3)"),
    (spec_text(budget="{n_trials: true}"), "budget.n_trials", "(got True)"),
    (spec_text(budget="{n_trials: 2.5}"), "budget.n_trials", "(got 2.5)"),
    (spec_text(budget="{timeout: -5}"), "budget.timeout", "(got -5.0)"),
    (spec_text(budget="{timeout: .inf}"), "budget.timeout", "(got inf)"),
    (spec_text(budget="{trial_timeout: 1h}"), "budget.trial_timeout", "(got '1h')"),
    (spec_text(budget="60"), "budget", "(got 60)"),
    (spec_text(retry="{heartbeat_interval: 10, grace_period: 5}"), "retry.grace_period", "(got 5)"),
    (spec_text(retry="{max_retries: -1}"), "retry.max_retries", "(got -1)"),
    (spec_text(storage="[sqlite]"), "storage", "(got ['sqlite'])"),
    (spec_text(checkpoint_dir="''"), "checkpoint_dir", "(got '')"),
    (spec_text(description="[a]"), "description", "(got ['a'])"),
    # duplicate keys: YAML keeps the last one silently; a spec refuses
    (
        spec_text() + "name: t\n",
        "name",
        "duplicate key at line 7, column 1 (first at line 1, column 1)",
    ),
    (
        sp("{type: float, low: 0.1, low: 0.2, high: 1}"),
        "search_space.x.low",
        "duplicate key at line 5",
    ),
    (spec_text(budget="{n_trials: 1, n_trials: 2}"), "budget.n_trials", "duplicate key"),
    (
        "name: s\nobjective: mlp\nsearch_space:\n  lr: {type: float, low: 0.1, high: 1}\n"
        "  lr: {type: float, low: 0.2, high: 1}\n",
        "search_space.lr",
        "duplicate key at line 5, column 3 (first at line 4, column 3)",
    ),
    (spec_text(fixed="{a: [{b: 1, b: 2}]}"), "fixed.a.0.b", "duplicate key"),
    (spec_text(fixed="{date: 2024-13-01}"), None, "month must be in 1..12"),
    (spec_text(fixed="{n: 1" + "0" * 5000 + "}"), None, "4300 digits"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD)
def test_bad_spec_is_one_line_naming_file_key_and_value(
    tmp_path: Path, text: str, key: str | None, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, check_objective=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert info.value.key == key
    assert fragment in message


# Options inside their type but outside their meaning: Optuna accepted each of these.
DOMAINS = [
    ("pruner", "{type: hyperband, reduction_factor: 1}", "reduction_factor", "must be >= 2", "1"),
    ("pruner", "{type: hyperband, min_resource: 0}", "min_resource", "must be >= 1", "0"),
    (
        "pruner",
        "{type: hyperband, min_resource: 5, max_resource: 3}",
        "max_resource",
        "must be >= min_resource (5)",
        "3",
    ),
    (
        "pruner",
        "{type: hyperband, max_resource: aut}",
        "max_resource",
        "must be 'auto' or an integer >= 1",
        "'aut'",
    ),
    ("pruner", "{type: hyperband, bootstrap_count: -1}", "bootstrap_count", "must be >= 0", "-1"),
    (
        "pruner",
        "{type: successive_halving, reduction_factor: 1}",
        "reduction_factor",
        "must be >= 2",
        "1",
    ),
    (
        "pruner",
        "{type: successive_halving, min_resource: 0}",
        "min_resource",
        "must be 'auto' or an integer >= 1",
        "0",
    ),
    (
        "pruner",
        "{type: successive_halving, bootstrap_count: 2}",
        "bootstrap_count",
        "needs an integer min_resource",
        "2",
    ),
    ("pruner", "{type: percentile, percentile: -5}", "percentile", "must be in [0, 100]", "-5"),
    ("pruner", "{type: median, n_startup_trials: -1}", "n_startup_trials", "must be >= 0", "-1"),
    ("pruner", "{type: median, n_warmup_steps: -1}", "n_warmup_steps", "must be >= 0", "-1"),
    ("pruner", "{type: median, interval_steps: 0}", "interval_steps", "must be >= 1", "0"),
    ("pruner", "{type: threshold, lower: 2, upper: 1}", "lower", "must be <= upper (1)", "2"),
    ("pruner", "{type: wilcoxon, p_threshold: 2}", "p_threshold", "must be in [0, 1]", "2"),
    ("pruner", "{type: patient, patience: -1, wrapped: none}", "patience", "must be >= 0", "-1"),
    ("sampler", "{type: tpe, n_ei_candidates: 0}", "n_ei_candidates", "must be >= 1", "0"),
    ("sampler", "{type: tpe, n_startup_trials: -1}", "n_startup_trials", "must be >= 0", "-1"),
    ("sampler", "{type: tpe, prior_weight: 0}", "prior_weight", "must be > 0", "0"),
    ("sampler", "{type: cmaes, sigma0: -1}", "sigma0", "must be > 0", "-1"),
    ("sampler", "{type: cmaes, popsize: 1}", "popsize", "must be >= 2", "1"),
    (
        "sampler",
        "{type: cmaes, restart_strategy: foo}",
        "restart_strategy",
        "must be one of null, 'ipop', 'bipop'",
        "'foo'",
    ),
    ("sampler", "{type: gp, n_startup_trials: -1}", "n_startup_trials", "must be >= 0", "-1"),
    ("sampler", "{type: nsgaii, crossover_prob: 2}", "crossover_prob", "must be in [0, 1]", "2"),
    (
        "sampler",
        "{type: nsgaiii, dividing_parameter: 0}",
        "dividing_parameter",
        "must be >= 1",
        "0",
    ),
]


@pytest.mark.parametrize(("section", "value", "option", "rule", "got"), DOMAINS)
def test_options_outside_their_domain_name_the_option_and_value(
    tmp_path: Path, section: str, value: str, option: str, rule: str, got: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(spec_text(**{section: value}))
    with pytest.raises(SpecError) as info:
        load_spec(path, check_objective=False)
    assert str(info.value).startswith(f"{path}: {section}.{option}: {rule}")
    assert str(info.value).endswith(f"(got {got})")


def test_options_at_the_edge_of_their_domain_load() -> None:
    for section, value in [
        ("pruner", "{type: hyperband, min_resource: 3, max_resource: 3, reduction_factor: 2}"),
        ("pruner", "{type: successive_halving, min_resource: auto}"),
        ("pruner", "{type: percentile, percentile: 0.0}"),
        ("pruner", "{type: percentile, percentile: 100.0}"),
        ("pruner", "{type: median, n_startup_trials: 0, n_warmup_steps: 0, interval_steps: 1}"),
        ("sampler", "{type: tpe, n_ei_candidates: 1, n_startup_trials: 0}"),
        ("sampler", "{type: cmaes, popsize: 2, restart_strategy: ipop, inc_popsize: 2}"),
        ("sampler", "{type: nsgaii, population_size: 2, mutation_prob: 0.0, crossover_prob: 1.0}"),
    ]:
        parse(spec_text(**{section: value}))


def test_a_spec_without_n_trials_or_timeout_loads() -> None:
    spec = parse(spec_text(budget=None))
    assert spec.n_trials is None and spec.budget.timeout is None


WANDB_SWEEP = """\
program: train.py
method: bayes
metric: {name: val_loss, goal: minimize}
parameters:
  lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}
"""
# What someone coming from W&B Sweeps, Ray Tune or Optuna writes: each gets "in hpo ...".
FOREIGN = [
    (spec_text(sampler="bayes"), "sampler.type", "in hpo this is `tpe`"),
    (spec_text(sampler="{type: hyperopt}"), "sampler.type", "in hpo this is `tpe`"),
    (spec_text(sampler="TPESampler"), "sampler.type", "in hpo this is `tpe`"),
    (spec_text(pruner="asha"), "pruner.type", "in hpo this is `successive_halving`"),
    (spec_text(pruner="MedianStoppingRule"), "pruner.type", "in hpo this is `median`"),
    (
        spec_text(pruner="{type: hyperband, eta: 3, min_iter: 1}"),
        "pruner.eta",
        "unknown option; in hpo this is `reduction_factor:`",
    ),
    (
        spec_text(pruner="{type: successive_halving, grace_period: 1}"),
        "pruner.grace_period",
        "in hpo this is `min_resource:` (Ray Tune ASHA `grace_period`)",
    ),
    (
        spec_text(sampler="{type: tpe, n_startup_jobs: 3}"),
        "sampler.n_startup_jobs",
        "in hpo this is `n_startup_trials:`",
    ),
    (spec_text() + "method: bayes\n", "method", "in hpo this is `sampler: tpe` (W&B"),
    (spec_text() + "method: grid\n", "method", "in hpo this is `sampler: grid`"),
    (spec_text() + "parameters: {}\n", "parameters", "in hpo this is `search_space:`"),
    (spec_text() + "program: train.py\n", "program", "in hpo this is `command: [python, train.py"),
    (spec_text() + "command: [python, train.py]\n", "command", "give either objective or command"),
    (
        spec_text() + "early_terminate: {type: hyperband, min_iter: 3}\n",
        "early_terminate",
        "`pruner: {type: hyperband, min_resource: MIN_ITER, reduction_factor: ETA}`",
    ),
    (spec_text() + "num_samples: 20\n", "num_samples", "`budget: {n_trials: N}` (Ray Tune"),
    (spec_text() + "scheduler: asha\n", "scheduler", "in hpo this is `pruner:`"),
    (spec_text() + "search_alg: optuna\n", "search_alg", "in hpo this is `sampler:`"),
    (spec_text() + "n_trials: 20\n", "n_trials", "`budget: {n_trials: N}` (Optuna's"),
    (spec_text() + "timeout: 60\n", "timeout", "`budget: {timeout: SECONDS}`"),
    (spec_text(budget="{num_samples: 20}"), "budget.num_samples", "in hpo this is `n_trials:`"),
    (spec_text(direction="max"), "direction", "in hpo this is `maximize`"),
    (
        spec_text(metric="{name: val_accuracy, goal: maximize}"),
        "metric",
        "in hpo this is `metric: val_accuracy` and `direction: maximize`",
    ),
    (
        sp("{distribution: log_uniform_values, min: 1.0e-4, max: 0.1}"),
        "search_space.x",
        "in hpo this is `{type: float, log: true, low: 0.0001, high: 0.1}`",
    ),
    (
        sp("{distribution: int_uniform, min: 1, max: 8}"),
        "search_space.x",
        "in hpo this is `{type: int, low: 1, high: 8}`",
    ),
    (
        sp("{distribution: q_uniform, min: 0, max: 1, q: 0.1}"),
        "search_space.x",
        "`{type: float, low: 0, high: 1, step: 0.1}`",
    ),
    (
        sp("{distribution: categorical, values: [adam, sgd]}"),
        "search_space.x",
        "`{type: categorical, choices: ['adam', 'sgd']}`",
    ),
    (
        sp("{distribution: normal, mu: 0, sigma: 1}"),
        "search_space.x",
        "hpo has no equivalent: hpo samples uniform",
    ),
    (sp("{values: [adam, sgd]}"), "search_space.x", "`type: categorical, choices: [...]`"),
    (sp("{min: 1, max: 3}"), "search_space.x", "with `low:` and `high:`"),
    (
        sp("{type: loguniform, low: 0.001, high: 0.1}"),
        "search_space.x.type",
        "`type: float, log: true`",
    ),
    (sp("{type: float, min: 0.001, max: 0.1}"), "search_space.x.min", "in hpo this is `low:`"),
    (WANDB_SWEEP, "program", "in hpo this is `command: [python, train.py"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), FOREIGN)
def test_other_tools_words_get_what_hpo_calls_them(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = tmp_path / "foreign.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, check_objective=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {key}: ")
    assert fragment in message
    assert "cmaes" not in message  # 'bayes' is not a misspelling of 'cmaes'


# What a built-in objective reads and reports, checked when the spec is loaded to run.
BUILTIN = [
    (
        spec_text(metric="val_acc", direction="maximize"),
        "metric",
        "the mlp objective does not report it; did you mean 'val_accuracy'? (got 'val_acc')",
    ),
    (spec_text(metric="n_params"), "metric", "does not report it each epoch"),
    (
        spec_text(search_space="{learning_rate: {type: float, low: 0.001, high: 0.1}}"),
        "search_space.learning_rate",
        "the mlp objective does not read it; did you mean 'lr'?",
    ),
    (
        spec_text(fixed="{dropout_rate: 0.1}"),
        "fixed.dropout_rate",
        "does not read it; did you mean 'dropout'? (got 0.1)",
    ),
    (spec_text(fixed="{batchsize: 32}"), "fixed.batchsize", "did you mean 'batch_size'?"),
    (
        spec_text(objective="cnn", search_space="{hidden_size: {type: int, low: 8, high: 64}}"),
        "search_space.hidden_size",
        "the cnn objective does not read it; it reads: amp, batch_size",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BUILTIN)
def test_a_builtin_objectives_metrics_and_params_are_checked_at_load(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "builtin.yaml"
    path.write_text(text.replace("metric: loss", "metric: val_loss"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: {key}: ")
    assert fragment in str(info.value)
    load_spec(path, check_objective=False)  # a stored spec is read back without the check


def test_every_builtin_declares_the_training_loops_keys_and_metrics() -> None:
    pytest.importorskip("torch")
    import dataclasses

    from hpo.objectives import accepts_of
    from hpo.search import BUILTIN_OBJECTIVES
    from hpo.training import METRIC_NAMES, TrainConfig

    for name in BUILTIN_OBJECTIVES:
        accepts = accepts_of(resolve_objective(name))
        assert accepts is not None, name
        assert {f.name for f in dataclasses.fields(TrainConfig)} <= accepts.params
        if name == "diabetes":  # regression: its metrics are mse, mae and r2
            assert accepts.first_metrics == (
                "train_loss",
                "val_loss",
                "val_mse",
                "val_mae",
                "val_r2",
            )
        else:
            assert accepts.first_metrics == METRIC_NAMES


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_python_tags_are_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = spec_text(name=f"!!python/object/apply:os.system ['touch {marker}']")
    with pytest.raises(SpecError, match=r"spec\.yaml: YAML syntax error at line 1.*python/object"):
        parse(text)
    with pytest.raises(SpecError, match="python/object"):
        parse(spec_text(fixed="!!python/object:pathlib.Path {}"))
    assert not marker.exists()


def test_deep_nesting_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"spec\.yaml: YAML nested too deeply"):
        parse(spec_text(fixed="{a: " + "[" * 20_000 + "]" * 20_000 + "}"))


def test_alias_bombs_and_deep_nesting_stop_early() -> None:
    levels = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    bomb = spec_text() + "fixed:\n  l0: &l0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + levels
    with pytest.raises(SpecError, match=r"spec\.yaml: fixed\.l\d: has more than 10000 items"):
        parse(bomb)  # 10**9 leaves if walked naively
    pruner: dict[str, Any] = {"type": "none"}
    for _ in range(5000):
        pruner = {"type": "patient", "patience": 1, "wrapped": pruner}
    with pytest.raises(SpecError, match="nested too deeply"):
        spec_from_dict({"name": "s", "objective": "mlp", "pruner": pruner})


@pytest.mark.parametrize(
    ("objective", "fragment"),
    [
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz' (ModuleNotFoundError"),
        ("hpo_spec_objs:missing", "has no callable 'missing'"),
        ("hpo_spec_objs:not_callable", "has no callable 'not_callable'"),
        ("hpo_spec_objs:three", "must take (trial) or (trial, ctx)"),
        ("hpo_spec_objs", "'package.module:function'"),
        (":plain", "'package.module:function'"),
        ("raises_on_import:fn", "cannot import 'raises_on_import' (RuntimeError: no GPU here)"),
        ("exits_on_import:fn", "cannot import 'exits_on_import' (SystemExit: 3)"),
        ("broken_syntax:fn", "cannot import 'broken_syntax' (SyntaxError"),
        (".relative:fn", "cannot import '.relative'"),
    ],
)
def test_bad_objective(objectives_dir: Path, objective: str, fragment: str) -> None:
    (objectives_dir / "raises_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    (objectives_dir / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    (objectives_dir / "broken_syntax.py").write_text("def fn(:\n")
    with pytest.raises(SpecError) as info:
        parse(spec_text(objective=objective), check_objective=True)
    message = str(info.value)
    assert message.startswith("spec.yaml: objective: ") and "\n" not in message
    assert fragment in message and repr(objective) in message


# ---------------------------------------------------------------------------------------
# Property: any input loads to a valid spec or raises SpecError, never anything else

PARAM_KEYS = ["type", "low", "high", "log", "step", "values", "choices"]
SECTION_KEYS = ["type", "seed", "wrapped", "n_trials", "timeout", "trial_timeout", "max_retries"]
SECTION_KEYS += ["heartbeat_interval", "grace_period", "n_startup_trials", "patience"]
SECTION_KEYS += ["percentile", "min_resource", "max_resource", "lower", "multivariate", "gamma"]
TOP_KEYS = [*BASE, "metrics", "directions", "fixed", "pruner", "budget", "retry", "storage"]
TOP_KEYS += ["checkpoint_dir", "description"]
WORDS = ["float", "int", "categorical", "maximize", "minimize", "none", "mlp", "auto"]
WORDS += [*SAMPLERS, *PRUNERS]


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about nine times in ten, so that fuzzing gets past the first checks."""
    # st.one_of(good, good, ...) would not do: it does not weigh its branches by count
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: good if ok else bad)


keys = st.sampled_from(PARAM_KEYS + SECTION_KEYS + TOP_KEYS) | st.text(max_size=6)
numbers = st.integers(-5, 40) | st.floats(-2, 2) | st.sampled_from([0, 1, 1e-5, 0.5, 100])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | numbers
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(WORDS)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
params = st.fixed_dictionaries(
    {"type": mostly(st.sampled_from(["float", "int", "categorical"]), scalars)},
    optional={
        "low": mostly(numbers, values),
        "high": mostly(numbers, values),
        "log": mostly(st.booleans(), values),
        "step": mostly(numbers, values),
        "values": mostly(st.lists(numbers, max_size=4), values),
        "choices": mostly(st.lists(scalars, max_size=4), values),
    },
)
options = st.dictionaries(mostly(st.sampled_from(SECTION_KEYS), keys), mostly(numbers, values))
sampler = st.builds(
    lambda kind, seed, opts: {"type": kind, **opts, **seed},
    mostly(st.sampled_from(SAMPLERS), scalars),
    st.fixed_dictionaries({}, optional={"seed": mostly(st.integers(0, 9), values)}),
    st.dictionaries(keys, values, max_size=2),
)
pruner = st.recursive(
    st.builds(lambda kind, opts: {"type": kind, **opts}, st.sampled_from(PRUNERS), options),
    lambda inner: st.builds(dict, wrapped=inner, type=st.just("patient"), patience=numbers),
    max_leaves=3,
)
goals = mostly(
    st.sampled_from(
        [
            {},
            {"metric": "acc", "direction": "maximize"},
            {"metrics": ["a", "b"], "directions": ["minimize", "maximize"]},
        ]
    ),
    st.dictionaries(st.sampled_from(["metric", "metrics", "direction", "directions"]), values),
)
top_level = st.fixed_dictionaries(
    {"name": mostly(st.just("s"), scalars), "objective": mostly(st.just("mlp"), scalars)},
    optional={
        "search_space": st.dictionaries(st.text(max_size=3), mostly(params, values), max_size=3),
        "sampler": mostly(sampler, st.sampled_from(SAMPLERS) | values),
        "pruner": mostly(pruner, st.sampled_from(PRUNERS) | values),
        "budget": mostly(options, values),
        "retry": mostly(options, values),
        "fixed": mostly(st.dictionaries(keys, values, max_size=3), values),
        "storage": mostly(st.just("sqlite:///x.db"), values),
        "checkpoint_dir": mostly(st.just("ckpt"), values),
        "description": mostly(st.text(), values),
    },
)
specs = st.builds(lambda a, b: {**a, **b}, top_level, goals)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_loads_or_spec_error(load: Callable[[], StudySpec]) -> None:
    try:
        spec = load()
    except SpecError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.yaml")
        return
    assert isinstance(spec, StudySpec)
    # a spec that loads is usable: Optuna objects build, grids enumerate, it round-trips
    make_sampler(spec)
    make_pruner(spec.pruner)
    distributions(spec)
    if spec.is_grid:
        assert 1 <= spec.grid_size() <= MAX_GRID_POINTS and spec.n_trials is not None
        for p in spec.search_space:
            dist = distribution(p)
            assert all(dist._contains(dist.to_internal_repr(x)) for x in p.grid_values())
    stored = json.loads(json.dumps(spec.to_dict(), allow_nan=False))
    again = spec_from_dict(stored, source="fuzz.yaml", check_objective=False)
    assert again == dataclasses.replace(spec, storage=None)


@FUZZ
@given(specs)
def test_fuzz_spec_dicts(data: dict[str, Any]) -> None:
    check_loads_or_spec_error(
        lambda: spec_from_dict(data, source="fuzz.yaml", check_objective=False)
    )


@FUZZ
@given(specs | values)
def test_fuzz_yaml_dumped_specs(data: Any) -> None:
    text = yaml.safe_dump(data)
    check_loads_or_spec_error(lambda: parse_spec(text, source="fuzz.yaml", check_objective=False))


YAMLISH = st.lists(
    st.sampled_from([*"ab01.e-+:{}[],&*!|>'\"# \n\t%@`?<=~", *WORDS, *TOP_KEYS])
).map("".join)


@FUZZ
@given(YAMLISH | st.text())
def test_fuzz_text(text: str) -> None:
    check_loads_or_spec_error(lambda: parse_spec(text, source="fuzz.yaml", check_objective=False))


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("val_accuracy", "maximize"),
        ("val_f1", "maximize"),
        ("val_r2", "maximize"),
        ("val_loss", "minimize"),
        ("val_mse", "minimize"),
        ("loss", "minimize"),
    ],
)
def test_a_metric_whose_name_says_its_better_side_implies_the_direction(
    metric: str, direction: str
) -> None:
    # Seen: `direction:` left out of a val_accuracy spec minimized accuracy, silently.
    assert parse(spec_text(metric=metric, direction=None)).directions == (direction,)


def test_a_metric_of_unknown_sense_needs_its_direction() -> None:
    with pytest.raises(SpecError, match=r"direction: is required for 'reward'"):
        parse(spec_text(metric="reward", direction=None))
    assert parse(spec_text(metric="reward", direction="maximize")).directions == ("maximize",)


@pytest.mark.parametrize(
    ("metric", "direction", "fragment"),
    [
        ("val_loss", "maximize", "'val_loss' is better lower: minimize it"),
        ("val_accuracy", "minimize", "'val_accuracy' is better higher: maximize it"),
    ],
)
def test_a_direction_against_the_metrics_sense_is_an_error(
    metric: str, direction: str, fragment: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(fragment)):
        parse(spec_text(metric=metric, direction=direction))
