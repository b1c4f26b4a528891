"""Resolving the objective a spec names: a built-in name or ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from hpo.errors import SpecError
from hpo.search import BUILTIN_OBJECTIVES


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def objective_module(ref: str) -> str:
    """The module of the objective a spec names (``""`` if the name is malformed)."""
    return _objective_parts(ref)[0]


def _objective_parts(ref: str) -> tuple[str, str]:
    module_name, _, attr = (
        BUILTIN_OBJECTIVES[ref].partition(":") if ref in BUILTIN_OBJECTIVES else ref.partition(":")
    )
    return module_name, attr


def resolve_objective(ref: str, *, source: str = "<spec>") -> Callable[..., Any]:
    """Import the objective a spec names: a built-in name or ``package.module:function``."""
    module_name, attr = _objective_parts(ref)
    if not attr or not module_name:
        raise SpecError(
            source,
            "objective",
            ref,
            f"must be a built-in ({', '.join(BUILTIN_OBJECTIVES)}) or 'package.module:function'",
        )
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr, None)
    except (Exception, SystemExit) as e:  # an objective module can raise anything on import
        raise SpecError(
            source,
            "objective",
            ref,
            f"cannot import {module_name!r} ({type(e).__name__}: {_one_line(e)})",
        ) from None
    if not callable(fn):
        raise SpecError(source, "objective", ref, f"{module_name!r} has no callable {attr!r}")
    objective_arity(fn, source=source, ref=ref)
    return fn


def objective_arity(fn: Callable[..., Any], *, source: str = "<spec>", ref: str = "") -> int:
    """1 for a plain Optuna objective ``f(trial)``, 2 for hpo's ``f(trial, ctx)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) not in (1, 2):
        raise SpecError(
            source,
            "objective",
            ref or getattr(fn, "__name__", repr(fn)),
            "must take (trial) or (trial, ctx)",
        )
    return len(positional)
