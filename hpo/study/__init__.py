"""Creating, resuming, inspecting and deleting studies: the library behind the CLI."""

from hpo.study._study import (
    SPEC_ATTR,
    Status,
    Study,
    best_params,
    create_study,
    delete_study,
    list_studies,
    load_study,
    request_stop,
    retrain_trial,
    status,
    trial_rows,
)

__all__ = [
    "SPEC_ATTR",
    "Status",
    "Study",
    "best_params",
    "create_study",
    "delete_study",
    "list_studies",
    "load_study",
    "request_stop",
    "retrain_trial",
    "status",
    "trial_rows",
]
