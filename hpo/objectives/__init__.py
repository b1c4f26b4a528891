"""Built-in objectives, selected in a spec by name: ``objective: mlp`` -> ``hpo.objectives.mlp``.

Each module exposes ``objective(trial, ctx)``, reads its hyperparameters from
``ctx.params`` (sampled values merged over the spec's fixed ones; missing keys take the
module's defaults) and trains with :func:`hpo.training.train`. The data ship with the
packages (scikit-learn's bundled datasets) or are generated; nothing is downloaded.

This module stays free of heavy imports so that resolving a name does not load torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpo.search import BUILTIN_OBJECTIVES

__all__ = ["BUILTIN_OBJECTIVES", "choice_param", "float_param", "int_param"]


def int_param(params: Mapping[str, Any], key: str, default: int, *, minimum: int = 1) -> int:
    """``params[key]`` as an int >= ``minimum`` (integral floats accepted), else ``default``."""
    value = params.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{key}` must be an integer >= {minimum}, but got {key}={value!r}.")
    return value


def float_param(
    params: Mapping[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    """``params[key]`` as a float in ``[low, high)``, else ``default``."""
    value = params.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value < high:
        raise ValueError(f"`{key}` must be a number in [{low}, {high}), but got {key}={value!r}.")
    return float(value)


def choice_param(params: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> str:
    """``params[key]``, which must be one of ``choices``, else ``default``."""
    value = params.get(key, default)
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {list(choices)}, but got {key}={value!r}.")
    return str(value)
