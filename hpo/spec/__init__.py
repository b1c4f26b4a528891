"""The study spec: YAML in, frozen typed objects out, validated once.

Every error is a :class:`~hpo.errors.SpecError` whose message names the file, the dotted key
and the offending value, so the CLI can print it on one line and exit 2 without a traceback.
"""

from hpo.spec._load import load_spec, parse_spec, spec_from_dict
from hpo.spec._model import (
    MAX_GRID_POINTS,
    PARAM_TYPES,
    BudgetSpec,
    ParamSpec,
    PrunerSpec,
    RetrySpec,
    SamplerSpec,
    StudySpec,
)
from hpo.spec._objective import objective_arity, objective_module, resolve_objective

__all__ = [
    "MAX_GRID_POINTS",
    "PARAM_TYPES",
    "BudgetSpec",
    "ParamSpec",
    "PrunerSpec",
    "RetrySpec",
    "SamplerSpec",
    "StudySpec",
    "load_spec",
    "objective_arity",
    "objective_module",
    "parse_spec",
    "resolve_objective",
    "spec_from_dict",
]
