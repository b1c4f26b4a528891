"""hpo: hyperparameter optimization for PyTorch training, on Optuna and SQL storage.

Names are imported on first use (PEP 562), so ``hpo --help`` and the trial processes do not
pay for SQLAlchemy, Optuna or torch before they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrialContext": "hpo.context",
    "HpoError": "hpo.errors",
    "SpecError": "hpo.errors",
    "StorageError": "hpo.errors",
    "UsageError": "hpo.errors",
    "run": "hpo.worker",
    "join": "hpo.worker",
    "StudySpec": "hpo.spec",
    "load_spec": "hpo.spec",
    "parse_spec": "hpo.spec",
    "Study": "hpo.study",
    "create_study": "hpo.study",
    "load_study": "hpo.study",
    "delete_study": "hpo.study",
    "list_studies": "hpo.study",
    "status": "hpo.study",
    "report": "hpo._client",
}

__all__ = [
    "HpoError",
    "SpecError",
    "StorageError",
    "Study",
    "StudySpec",
    "TrialContext",
    "UsageError",
    "__version__",
    "create_study",
    "delete_study",
    "join",
    "list_studies",
    "load_spec",
    "load_study",
    "parse_spec",
    "report",
    "run",
    "status",
]

if TYPE_CHECKING:
    from hpo._client import report
    from hpo.context import TrialContext
    from hpo.errors import HpoError, SpecError, StorageError, UsageError
    from hpo.spec import StudySpec, load_spec, parse_spec
    from hpo.study import Study, create_study, delete_study, list_studies, load_study, status
    from hpo.worker import join, run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
