"""The spec-to-Optuna mapping: distributions, samplers and pruners, in one place.

hpo's own TPE sampler and Hyperband pruner (:mod:`hpo.search._tpe`,
:mod:`hpo.search._hyperband`) are Optuna's algorithms reading each finished trial once.
"""

from hpo.search._factory import (
    OptionError,
    check_pruner_options,
    check_sampler_options,
    make_pruner,
    make_sampler,
    pruner_class,
    sampler_class,
)
from hpo.search._registry import (
    BUILTIN_OBJECTIVES,
    PRUNER_CLASSES,
    PRUNERS,
    SAMPLER_CLASSES,
    SAMPLERS,
)
from hpo.search._space import distribution, distributions, grid_points

__all__ = [
    "BUILTIN_OBJECTIVES",
    "PRUNERS",
    "PRUNER_CLASSES",
    "SAMPLERS",
    "SAMPLER_CLASSES",
    "OptionError",
    "check_pruner_options",
    "check_sampler_options",
    "distribution",
    "distributions",
    "grid_points",
    "make_pruner",
    "make_sampler",
    "pruner_class",
    "sampler_class",
]
