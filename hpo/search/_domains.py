"""Sampler and pruner options checked against what they mean, not only their type.

Optuna's constructors check some of their arguments and not others: a Hyperband
``reduction_factor: 1`` or a TPE ``n_ei_candidates: 0`` is accepted, and the study fails (or
silently does nothing useful) trials later. Each rule here is the domain where the option has
a meaning, so a spec is refused at load time with the option and its value named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class OptionError(ValueError):
    """A sampler or pruner option that Optuna would reject (or choke on later)."""

    def __init__(self, option: str, value: Any, message: str, *, unknown: bool = False) -> None:
        self.option, self.value, self.message = option, value, message
        self.unknown = unknown  # not an option of the class at all (a typo, another tool's)
        super().__init__(f"{option}: {message} (got {value!r})")


#: (predicate, what the value must be); the predicate sees a value of the right type.
Rule = tuple[Callable[[Any], bool], str]


def _ge(n: int | float, why: str = "") -> Rule:
    return (lambda v: v >= n, f">= {n}" + (f" ({why})" if why else ""))


def _gt(n: int | float, why: str = "") -> Rule:
    return (lambda v: v > n, f"> {n}" + (f" ({why})" if why else ""))


def _within(low: float, high: float, why: str = "") -> Rule:
    return (lambda v: low <= v <= high, f"in [{low:g}, {high:g}]" + (f" ({why})" if why else ""))


def _one_of(*allowed: Any) -> Rule:
    shown = ", ".join("null" if a is None else repr(a) for a in allowed)
    return (lambda v: v in allowed, f"one of {shown}")


_PROBABILITY = _within(0, 1, "a probability")
_STARTUP = _ge(0, "trials before the algorithm takes over")
_WARMUP = _ge(0, "steps before a trial can be pruned")
_INTERVAL = _ge(1, "steps between pruning checks")
_RATE = _ge(2, "the factor between rungs; 1 would never prune")
_BOOTSTRAP = _ge(0)
_AUTO_OR_1 = (lambda v: v == "auto" or (isinstance(v, int) and v >= 1), "'auto' or an integer >= 1")

SAMPLER_DOMAINS: dict[str, dict[str, Rule]] = {
    "tpe": {
        "n_startup_trials": _STARTUP,
        "n_ei_candidates": _ge(1, "candidates drawn per parameter"),
        "prior_weight": _gt(0),
    },
    "cmaes": {
        "n_startup_trials": _STARTUP,
        "sigma0": _gt(0, "the initial step size"),
        "popsize": _ge(2, "CMA-ES recombines the best half of a generation"),
        "inc_popsize": (lambda v: v == -1 or v >= 1, "-1 (the default) or >= 1"),
        "restart_strategy": _one_of(None, "ipop", "bipop"),
    },
    "gp": {"n_startup_trials": _STARTUP},
    "qmc": {"qmc_type": _one_of("sobol", "halton")},
    "nsgaii": {
        "population_size": _ge(2, "crossover needs two parents"),
        "mutation_prob": _PROBABILITY,
        "crossover_prob": _PROBABILITY,
        "swapping_prob": _PROBABILITY,
    },
    "nsgaiii": {
        "population_size": _ge(2, "crossover needs two parents"),
        "mutation_prob": _PROBABILITY,
        "crossover_prob": _PROBABILITY,
        "swapping_prob": _PROBABILITY,
        "dividing_parameter": _ge(1, "divisions of each objective axis"),
    },
}

_MEDIAN: dict[str, Rule] = {
    "n_startup_trials": _ge(0, "trials finished before pruning starts"),
    "n_warmup_steps": _WARMUP,
    "interval_steps": _INTERVAL,
    "n_min_trials": _ge(1, "trials reporting a step before it is compared"),
}

PRUNER_DOMAINS: dict[str, dict[str, Rule]] = {
    "median": _MEDIAN,
    "percentile": {**_MEDIAN, "percentile": _within(0, 100)},
    "successive_halving": {
        "min_resource": _AUTO_OR_1,
        "reduction_factor": _RATE,
        "min_early_stopping_rate": _ge(0),
        "bootstrap_count": _BOOTSTRAP,
    },
    "hyperband": {
        "min_resource": _ge(1, "steps of the first rung"),
        "max_resource": _AUTO_OR_1,
        "reduction_factor": _RATE,
        "bootstrap_count": _BOOTSTRAP,
    },
    "threshold": {"n_warmup_steps": _WARMUP, "interval_steps": _INTERVAL},
    "patient": {"patience": _ge(0, "checks without improvement"), "min_delta": _ge(0)},
    "wilcoxon": {"p_threshold": _PROBABILITY, "n_startup_steps": _ge(0)},
}


def check_sampler_domain(name: str, opts: Mapping[str, Any]) -> None:
    """Raise :class:`OptionError` for a sampler option outside its domain."""
    _check(SAMPLER_DOMAINS.get(name, {}), opts)


def check_pruner_domain(name: str, opts: Mapping[str, Any]) -> None:
    """Raise :class:`OptionError` for a pruner option outside its domain, alone or together."""
    _check(PRUNER_DOMAINS.get(name, {}), opts)
    if name == "hyperband":
        low, high = opts.get("min_resource", 1), opts.get("max_resource", "auto")
        if high != "auto" and high < low:
            raise OptionError("max_resource", high, f"must be >= min_resource ({low})")
    elif name == "successive_halving":
        if opts.get("bootstrap_count", 0) > 0 and opts.get("min_resource", "auto") == "auto":
            raise OptionError(
                "bootstrap_count", opts["bootstrap_count"], "needs an integer min_resource"
            )
    elif name == "threshold":
        lower, upper = opts.get("lower"), opts.get("upper")
        if lower is None and upper is None:
            raise OptionError("lower", None, "(or upper) is required by the threshold pruner")
        if lower is not None and upper is not None and lower > upper:
            raise OptionError("lower", lower, f"must be <= upper ({upper})")


def _check(rules: Mapping[str, Rule], opts: Mapping[str, Any]) -> None:
    for key, value in opts.items():
        rule = rules.get(key)
        if rule is None or (value is None and key != "restart_strategy"):
            continue
        ok, what = rule
        if not ok(value):
            raise OptionError(key, value, f"must be {what}")
