"""Samplers and pruners from a spec, and their options checked against Optuna's classes."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpo.search._domains import OptionError, check_pruner_domain, check_sampler_domain
from hpo.search._registry import PRUNER_CLASSES, SAMPLER_CLASSES

if TYPE_CHECKING:
    import optuna

    from hpo.spec._model import PrunerSpec, StudySpec


# The annotation parts a YAML value can satisfy; any other part (a callable, a sampler,
# an array) is a Python object that a spec cannot give.
_YAML_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
    "dict[str, Any]": (dict,),
}


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    import optuna.samplers

    return getattr(optuna.samplers, SAMPLER_CLASSES[name])


def pruner_class(name: str) -> type[optuna.pruners.BasePruner]:
    import optuna.pruners

    return getattr(optuna.pruners, PRUNER_CLASSES[name])


def check_sampler_options(name: str, opts: Mapping[str, Any]) -> None:
    """Options Optuna's class takes, of a type a spec can give, within their domain."""
    check_options(sampler_class(name), opts, f"the {name} sampler", skip=("seed",))
    check_sampler_domain(name, opts)


def check_pruner_options(name: str, opts: Mapping[str, Any]) -> None:
    """Options Optuna's class takes, of a type a spec can give, within their domain."""
    check_options(pruner_class(name), opts, f"the {name} pruner", skip=("wrapped_pruner",))
    check_pruner_domain(name, opts)


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    opts = dict(spec.sampler.options)
    check_sampler_options(spec.sampler.type, opts)
    from hpo._optuna import internals_supported

    cls: Callable[..., optuna.samplers.BaseSampler] = sampler_class(spec.sampler.type)
    if spec.sampler.type == "tpe":
        if internals_supported():
            # Imported here only: on an Optuna release hpo was not tested with, hpo never
            # imports the Optuna internals it builds on.
            from hpo.search._tpe import IncrementalTPESampler

            cls = IncrementalTPESampler  # Optuna's TPE, each finished trial read once
        # Several workers ask at once; without the liar they all sample next to the same
        # best point. Optuna's docs recommend it for parallel TPE.
        opts.setdefault("constant_liar", True)
    # For a grid, hpo assigns grid points itself (one per logical trial, enqueued exactly
    # once), so the sampler only has to draw params an objective asks for outside the grid.
    return cls(seed=spec.sampler.seed, **opts)


def make_pruner(p: PrunerSpec) -> optuna.pruners.BasePruner:
    opts = dict(p.options)
    check_pruner_options(p.type, opts)
    from hpo._optuna import internals_supported

    cls: Callable[..., optuna.pruners.BasePruner] = pruner_class(p.type)
    if p.type == "hyperband" and internals_supported():
        from hpo.search._hyperband import HyperbandPruner  # here only, as the sampler above

        cls = HyperbandPruner  # Optuna's, each trial's bracket computed once: same decisions
    if p.type == "patient":
        assert p.wrapped is not None  # the spec loader always sets it for patient
        wrapped = None if p.wrapped.type == "none" else make_pruner(p.wrapped)
        return cls(wrapped, **opts)
    return cls(**opts)


def check_options(
    cls: type, opts: Mapping[str, Any], what: str, skip: tuple[str, ...] = ()
) -> None:
    """Raise :class:`OptionError` for an unknown, missing or mistyped constructor option."""
    params = {
        k: prm
        for k, prm in inspect.signature(cls).parameters.items()
        if k not in ("self", *skip) and prm.kind not in (prm.VAR_KEYWORD, prm.VAR_POSITIONAL)
    }
    for k, val in opts.items():
        prm = params.get(k) if isinstance(k, str) else None
        if prm is None:
            hint = difflib.get_close_matches(str(k), params, n=1)
            known = f"its options are: {', '.join(params)}" if params else "it takes none"
            shown = f"did you mean {hint[0]!r}?" if hint else known
            raise OptionError(str(k), val, f"unknown option of {what}; {shown}", unknown=True)
        annotation = prm.annotation if isinstance(prm.annotation, str) else prm.annotation.__name__
        kinds = [_YAML_TYPES.get(part.strip()) for part in annotation.split("|")]
        if not any(t and t != (type(None),) for t in kinds):
            raise OptionError(k, val, "takes a Python object, which a spec cannot give")
        allowed = tuple(t for ts in kinds if ts for t in ts)
        if not isinstance(val, allowed) or (isinstance(val, bool) and bool not in allowed):
            raise OptionError(k, val, f"must be {annotation}")
    for k, prm in params.items():
        if prm.default is prm.empty and k not in opts:
            raise OptionError(k, None, f"is required by {what}")
