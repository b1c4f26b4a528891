"""Resolving the objective a spec names: a built-in name or ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from hpo.errors import SpecError
from hpo.search import BUILTIN_OBJECTIVES
from hpo.spec._model import StudySpec
from hpo.spec._validate import one_line


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
        module = _import(module_name)
        fn = getattr(module, attr, None)
    except (Exception, SystemExit) as e:  # an objective module can raise anything on import
        where = ""
        if (
            isinstance(e, ModuleNotFoundError)
            and (e.name or "").split(".")[0] == module_name.split(".")[0]
        ):
            where = f"; it is looked up in the working directory ({Path.cwd()}) and PYTHONPATH"
        raise SpecError(
            source,
            "objective",
            ref,
            f"cannot import {module_name!r} ({type(e).__name__}: {one_line(e)}){where}",
        ) from None
    if not callable(fn):
        raise SpecError(source, "objective", ref, f"{module_name!r} has no callable {attr!r}")
    objective_arity(fn, source=source, ref=ref)
    return fn


def _import(module_name: str) -> ModuleType:
    """Import the objective's module; one in the working directory too, as ``python -m``
    would find it (the ``hpo`` script's sys.path holds its own directory, not the cwd)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = module_name.partition(".")[0]
        if e.name != top or cwd in sys.path or not _in_dir(cwd, top):
            raise
    # Appended, not prepended: a file in the cwd never shadows an installed package.
    sys.path.append(cwd)
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


def _in_dir(directory: str, top: str) -> bool:
    path = Path(directory)
    return (path / f"{top}.py").is_file() or (path / top).is_dir()


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


def check_accepts(spec: StudySpec, fn: Callable[..., Any]) -> None:
    """The spec's metrics and params against what the objective declares it reads and reports.

    Every built-in declares ``ACCEPTS`` (:class:`hpo.objectives.Accepts`); a key it does not
    read would be searched to no effect, a metric it does not report would fail every trial.
    """
    from hpo.objectives import accepts_of, closest_param

    accepts = accepts_of(fn)
    if accepts is None:
        return
    builtin = spec.objective in BUILTIN_OBJECTIVES
    what = f"the {spec.objective} objective" if builtin else fn.__name__
    for i, metric in enumerate(spec.metrics):
        allowed = accepts.first_metrics if i == 0 else accepts.metrics
        if metric not in allowed:
            key = "metric" if len(spec.metrics) == 1 else f"metrics.{i}"
            hint = closest_param(metric, allowed)
            shown = f"did you mean {hint!r}?" if hint else f"it reports: {', '.join(allowed)}"
            first = " each epoch" if i == 0 and metric in accepts.metrics else ""
            raise SpecError(spec.source, key, metric, f"{what} does not report it{first}; {shown}")
    given = [("search_space", p.name, None) for p in spec.search_space]
    given += [("fixed", k, v) for k, v in spec.fixed.items()]
    for section, name, value in given:
        if name not in accepts.params:
            hint = closest_param(name, accepts.params)
            known = ", ".join(sorted(accepts.params))
            shown = f"did you mean {hint!r}?" if hint else f"it reads: {known}"
            raise SpecError(
                spec.source, f"{section}.{name}", value, f"{what} does not read it; {shown}"
            )
