"""Storage and coordination: URLs, the study lock and budget, the fleet, retries, and the
worker's batching storage over Optuna's RDB schema."""

from hpo.storage._rdb import (
    DEFAULT_STORAGE,
    Budget,
    BudgetView,
    budget_table,
    fleet,
    is_transient,
    mask,
    open_storage,
    orphan_trial_ids,
    peek_user_attr,
    resolve_url,
    upsert_workers,
    utcnow,
    workers_table,
)
from hpo.storage._retries import (
    StaleTrialRetry,
    logical_trial_number,
    retried_numbers,
    state_counts,
)
from hpo.storage._worker_storage import StudyStorage, WorkerStorage, study_storage
from hpo.storage._write_through import WriteThroughStorage

__all__ = [
    "DEFAULT_STORAGE",
    "Budget",
    "BudgetView",
    "StaleTrialRetry",
    "StudyStorage",
    "WorkerStorage",
    "WriteThroughStorage",
    "budget_table",
    "fleet",
    "is_transient",
    "logical_trial_number",
    "mask",
    "open_storage",
    "orphan_trial_ids",
    "peek_user_attr",
    "resolve_url",
    "retried_numbers",
    "state_counts",
    "study_storage",
    "upsert_workers",
    "utcnow",
    "workers_table",
]
