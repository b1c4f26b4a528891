"""Hints for specs written the way W&B Sweeps, Ray Tune or Optuna spell things.

Someone coming from another tool writes what they know (``method: bayes``, ``parameters:``,
``distribution: log_uniform_values``); a bare "unknown key" or a "did you mean" to an
unrelated word ('bayes' -> 'cmaes') sends them to the docs. Every such word hpo knows about
is in the tables below, in one place, each with what hpo calls it.

A leaf: imports nothing of hpo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Where a key was found: "" (the top level), "param" (one search_space entry), or the
# section's own name ("budget", "sampler", "pruner", "retry", "metric").
_KEYS: dict[str, dict[str, str]] = {
    "": {
        "method": "`sampler: tpe` (W&B `method: bayes`), `sampler: random` or `sampler: grid`",
        "parameters": "`search_space:` (W&B `parameters:`), entries "
        "like `lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}`",
        "program": "`command: [python, train.py, --config, '{config}']` (W&B `program`), "
        "or `objective: module:function` for a Python function",
        "early_terminate": "`pruner:` (W&B `early_terminate: {type: hyperband, min_iter, eta}` "
        "is `pruner: {type: hyperband, min_resource: MIN_ITER, reduction_factor: ETA}`)",
        "run_cap": "`budget: {n_trials: N}`",
        "project": "nothing: studies are grouped by their storage (`storage:`)",
        "entity": "nothing: studies are grouped by their storage (`storage:`)",
        "goal": "`direction: minimize|maximize`",
        "num_samples": "`budget: {n_trials: N}` (Ray Tune `num_samples`)",
        "scheduler": "`pruner:` (Ray Tune's ASHA is `pruner: successive_halving`, "
        "HyperBand `pruner: hyperband`, MedianStoppingRule `pruner: median`)",
        "search_alg": "`sampler:` (Ray Tune's OptunaSearch/HyperOptSearch is `sampler: tpe`)",
        "param_space": "`search_space:` (Ray Tune `param_space`)",
        "mode": "`direction: minimize|maximize` (Ray Tune `mode: min|max`)",
        "time_budget_s": "`budget: {timeout: SECONDS}` (Ray Tune `time_budget_s`)",
        "max_concurrent_trials": "`hpo run --workers N` or more `hpo worker` processes",
        "resources_per_trial": "`hpo worker --gpus/--per-gpu/--processes`",
        "n_trials": "`budget: {n_trials: N}` (Optuna's `optimize(n_trials=...)`)",
        "timeout": "`budget: {timeout: SECONDS}` (Optuna's `optimize(timeout=...)`)",
        "n_jobs": "`hpo run --workers N`",
        "study_name": "`name:`",
        "load_if_exists": "nothing: `hpo run` resumes a study whose stored spec matches",
        "max_trials": "`budget: {n_trials: N}`",
        "max_evals": "`budget: {n_trials: N}` (hyperopt `max_evals`)",
        "trial_timeout": "`budget: {trial_timeout: SECONDS}`",
        "max_retries": "`retry: {max_retries: N}`",
        "seed": "`sampler: {type: tpe, seed: N}`",
        "objectives": "`metrics: [a, b]` with `directions: [minimize, maximize]`",
    },
    "param": {
        "distribution": "`type: float|int|categorical` (with `log: true` for a log scale)",
        "min": "`low:`",
        "max": "`high:`",
        "q": "`step:`",
        "value": "a constant: put it under `fixed:`",
        "mu": "nothing: hpo samples uniform or log-uniform ranges, not normal distributions",
        "sigma": "nothing: hpo samples uniform or log-uniform ranges, not normal distributions",
        "lower": "`low:`",
        "upper": "`high:`",
        "base": "`log: true` (the base does not matter to the sampler)",
    },
    "budget": {
        "num_samples": "`n_trials:` (Ray Tune `num_samples`)",
        "max_trials": "`n_trials:`",
        "max_evals": "`n_trials:` (hyperopt `max_evals`)",
        "run_cap": "`n_trials:` (W&B `run_cap`)",
        "time_budget_s": "`timeout:` (seconds)",
        "max_time": "`timeout:` (seconds)",
    },
    "pruner": {
        "min_iter": "`min_resource:` (W&B hyperband `min_iter`)",
        "max_iter": "`max_resource:` (W&B hyperband `max_iter`)",
        "eta": "`reduction_factor:`",
        "grace_period": "`min_resource:` (Ray Tune ASHA `grace_period`)",
        "max_t": "`max_resource:` (Ray Tune ASHA `max_t`)",
        "time_attr": "nothing: hpo prunes on the epochs (steps) the objective reports",
        "metric": "the spec's top-level `metric:`",
        "mode": "the spec's top-level `direction:`",
    },
    "sampler": {
        "n_startup_jobs": "`n_startup_trials:` (hyperopt `n_startup_jobs`)",
        "n_initial_points": "`n_startup_trials:` (scikit-optimize `n_initial_points`)",
        "random_state": "`seed:`",
        "metric": "the spec's top-level `metric:`",
        "mode": "the spec's top-level `direction:`",
    },
}

# Foreign values of a field with a fixed vocabulary.
_VALUES: dict[str, dict[str, str]] = {
    "sampler.type": {
        "bayes": "`tpe` (Bayesian optimization; `gp` for a Gaussian process)",
        "bayesian": "`tpe` (Bayesian optimization; `gp` for a Gaussian process)",
        "bayesopt": "`gp` (a Gaussian process) or `tpe`",
        "hyperopt": "`tpe` (hyperopt's algorithm)",
        "optuna": "`tpe` (Optuna's default sampler)",
        "skopt": "`gp` (a Gaussian process)",
        "bohb": "`tpe` with `pruner: hyperband`",
        "grid_search": "`grid`",
        "random_search": "`random`",
        "sobol": "`qmc` (with `qmc_type: sobol`)",
        "halton": "`qmc` (with `qmc_type: halton`)",
        "cma": "`cmaes`",
        "cma-es": "`cmaes`",
        "nsga2": "`nsgaii`",
        "nsga3": "`nsgaiii`",
        "gridsampler": "`grid`",
        "tpesampler": "`tpe`",
        "randomsampler": "`random`",
        "cmaessampler": "`cmaes`",
        "gpsampler": "`gp`",
        "qmcsampler": "`qmc`",
        "nsgaiisampler": "`nsgaii`",
        "nsgaiiisampler": "`nsgaiii`",
        "bruteforcesampler": "`bruteforce`",
    },
    "pruner.type": {
        "asha": "`successive_halving` (asynchronous successive halving)",
        "sha": "`successive_halving`",
        "hb": "`hyperband`",
        "bohb": "`hyperband` (with `sampler: tpe`)",
        "median_stopping_rule": "`median`",
        "median_stopping": "`median`",
        "medianstoppingrule": "`median`",
        "fifo": "`none`",
        "nop": "`none`",
        "noppruner": "`none`",
        "pbt": "nothing: population-based training is not supported",
        "medianpruner": "`median`",
        "percentilepruner": "`percentile`",
        "successivehalvingpruner": "`successive_halving`",
        "hyperbandpruner": "`hyperband`",
        "patientpruner": "`patient`",
        "thresholdpruner": "`threshold`",
        "wilcoxonpruner": "`wilcoxon`",
    },
    "direction": {
        "min": "`minimize`",
        "max": "`maximize`",
        "minimum": "`minimize`",
        "maximum": "`maximize`",
        "studydirection.minimize": "`minimize`",
        "studydirection.maximize": "`maximize`",
    },
    # W&B's `distribution:` values (as a param's `type:` too), and Optuna's/Ray's names.
    "param.type": {
        "uniform": "`type: float`",
        "log_uniform_values": "`type: float, log: true` (low/high are the values)",
        "log_uniform": "`type: float, log: true`, with low/high as values, not exponents "
        "(W&B `log_uniform` takes exponents of e)",
        "loguniform": "`type: float, log: true`",
        "int_uniform": "`type: int`",
        "randint": "`type: int` (high is included)",
        "q_uniform": "`type: float, step: Q`",
        "quniform": "`type: float, step: Q`",
        "discrete_uniform": "`type: float, step: Q`",
        "q_log_uniform_values": "`type: float, log: true` (a step cannot be combined with log)",
        "q_log_uniform": "`type: float, log: true` (a step cannot be combined with log)",
        "qrandint": "`type: int, step: Q`",
        "qloguniform": "`type: float, log: true` (a step cannot be combined with log)",
        "lograndint": "`type: int, log: true`",
        "choice": "`type: categorical, choices: [...]`",
        "constant": "a constant: put it under `fixed:`",
        "normal": "nothing: hpo samples uniform or log-uniform ranges",
        "q_normal": "nothing: hpo samples uniform or log-uniform ranges",
        "log_normal": "nothing: hpo samples uniform or log-uniform ranges",
        "q_log_normal": "nothing: hpo samples uniform or log-uniform ranges",
        "inv_log_uniform": "nothing: hpo samples uniform or log-uniform ranges",
        "inv_log_uniform_values": "nothing: hpo samples uniform or log-uniform ranges",
        "beta": "nothing: hpo samples uniform or log-uniform ranges",
        "real": "`type: float`",
        "double": "`type: float`",
        "integer": "`type: int`",
        "discrete": "`type: int` or `type: categorical`",
        "categorical_choice": "`type: categorical`",
    },
}


def key_hint(where: str, key: Any, value: Any = None) -> str | None:
    """What hpo calls a foreign ``key`` found at ``where``, as 'in hpo this is ...'."""
    if not isinstance(key, str):
        return None
    section = "param" if where.startswith("search_space.") else where
    if section == "" and key == "method" and isinstance(value, str):
        sampler = {"bayes": "tpe", "random": "random", "grid": "grid"}.get(value.lower())
        if sampler:
            return _in_hpo(f"`sampler: {sampler}` (W&B `method: {value}`)")
    if section == "param" and key in ("distribution", "type"):
        return value_hint("param.type", value) or _in_hpo(_KEYS["param"].get(key))
    if section == "param" and key == "values" and value is not None:
        return None  # hpo has `values:` too (grid points of a float or int)
    return _in_hpo(_KEYS.get(section, {}).get(key))


def value_hint(field: str, value: Any) -> str | None:
    """What hpo calls a foreign ``value`` of ``field`` (e.g. ``sampler.type: bayes``)."""
    if not isinstance(value, str):
        return None
    section = "param.type" if field.startswith("search_space.") else field
    if section.startswith("pruner") and section.endswith(".type"):
        section = "pruner.type"  # a patient pruner's wrapped one too
    return _in_hpo(_VALUES.get(section, {}).get(value.strip().lower()))


def metric_hint(raw: Any) -> str | None:
    """W&B's ``metric: {name, goal}`` (and Ray's ``metric`` + ``mode``) in hpo's words."""
    if not isinstance(raw, Mapping):
        return None
    name = raw.get("name", "NAME")
    goal = str(raw.get("goal", raw.get("mode", "minimize"))).lower()
    direction = "maximize" if goal.startswith("max") else "minimize"
    return f"in hpo this is `metric: {name}` and `direction: {direction}` (two top-level keys)"


def param_hint(p: Mapping[str, Any]) -> str | None:
    """A search_space entry written another tool's way (no hpo `type:`)."""
    dist = p.get("distribution")
    if dist is not None:
        written = _rewritten(str(dist).lower(), p)
        if written:
            return _in_hpo(f"`{written}` (W&B `distribution: {dist}`)")
        return value_hint("param.type", dist) or _in_hpo(_KEYS["param"]["distribution"])
    if "values" in p and "type" not in p:
        return _in_hpo(
            "`type: categorical, choices: [...]` (a float or int grid: `type` and `values`)"
        )
    if ("min" in p or "max" in p) and "type" not in p:
        return _in_hpo("`type: float` (or `int`) with `low:` and `high:`")
    if "value" in p and "type" not in p:
        return _in_hpo(_KEYS["param"]["value"])
    return None


def _in_hpo(text: str | None) -> str | None:
    if text and text.startswith("nothing: "):
        return f"hpo has no equivalent: {text.removeprefix('nothing: ')}"
    return f"in hpo this is {text}" if text else None


# W&B distributions that map onto one hpo parameter, written out with the entry's bounds.
_REWRITE = {
    "uniform": "type: float",
    "log_uniform_values": "type: float, log: true",
    "int_uniform": "type: int",
    "q_uniform": "type: float",
    "categorical": "type: categorical",
}


def _rewritten(dist: str, p: Mapping[str, Any]) -> str | None:
    head = _REWRITE.get(dist)
    if head is None:
        return None
    if dist == "categorical":
        return f"{{{head}, choices: {list(p.get('values', []))}}}"
    low, high = p.get("min", "LOW"), p.get("max", "HIGH")
    step = f", step: {p['q']}" if dist == "q_uniform" and "q" in p else ""
    return f"{{{head}, low: {low}, high: {high}{step}}}"
