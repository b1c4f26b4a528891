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
from hpo.study._summary import (
    OUTCOMES,
    RATE_WINDOW_S,
    RunningTrial,
    StudySummary,
    outcome,
    sign,
    study_summary,
    summarize,
)

__all__ = [
    "OUTCOMES",
    "RATE_WINDOW_S",
    "SPEC_ATTR",
    "RunningTrial",
    "Status",
    "Study",
    "StudySummary",
    "best_params",
    "create_study",
    "delete_study",
    "list_studies",
    "load_study",
    "outcome",
    "request_stop",
    "retrain_trial",
    "sign",
    "status",
    "study_summary",
    "summarize",
    "trial_rows",
]
