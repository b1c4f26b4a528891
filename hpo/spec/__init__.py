"""The study spec: YAML in, frozen typed objects out, validated once.

Every error is a :class:`~hpo.errors.SpecError` whose message names the file, the dotted key
and the offending value, so the CLI can print it on one line and exit 2 without a traceback.
"""

from hpo.spec._command import (
    FIXED_PLACEHOLDERS,
    fill,
    format_value,
    has_key,
    metrics_regex,
    read_config,
    resolve_program,
    set_key,
    template_names,
    write_config,
)
from hpo.spec._load import load_spec, parse_spec, spec_from_dict
from hpo.spec._model import (
    COMMAND_OBJECTIVE,
    KATIB_REGEX,
    MAX_GRID_POINTS,
    PARAM_TYPES,
    PLACEHOLDERS,
    BudgetSpec,
    CommandSpec,
    ParamSpec,
    PrunerSpec,
    RetrySpec,
    SamplerSpec,
    StudySpec,
)
from hpo.spec._objective import objective_arity, objective_module, resolve_objective

__all__ = [
    "COMMAND_OBJECTIVE",
    "FIXED_PLACEHOLDERS",
    "KATIB_REGEX",
    "MAX_GRID_POINTS",
    "PARAM_TYPES",
    "PLACEHOLDERS",
    "BudgetSpec",
    "CommandSpec",
    "ParamSpec",
    "PrunerSpec",
    "RetrySpec",
    "SamplerSpec",
    "StudySpec",
    "fill",
    "format_value",
    "has_key",
    "load_spec",
    "metrics_regex",
    "objective_arity",
    "objective_module",
    "parse_spec",
    "read_config",
    "resolve_objective",
    "resolve_program",
    "set_key",
    "spec_from_dict",
    "template_names",
    "write_config",
]
