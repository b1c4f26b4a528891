"""Storage and coordination: URLs, the study lock and budget, the fleet, retries, and the
worker's batching storage over Optuna's RDB schema."""

from hpo.storage._here import HERE_FILE, has_secret, remember_url, remembered_url
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
from hpo.storage._worker_storage import WorkerStorage

__all__ = [
    "DEFAULT_STORAGE",
    "HERE_FILE",
    "Budget",
    "BudgetView",
    "StaleTrialRetry",
    "WorkerStorage",
    "budget_table",
    "fleet",
    "has_secret",
    "is_transient",
    "logical_trial_number",
    "mask",
    "open_storage",
    "orphan_trial_ids",
    "peek_user_attr",
    "remember_url",
    "remembered_url",
    "resolve_url",
    "retried_numbers",
    "state_counts",
    "upsert_workers",
    "utcnow",
    "workers_table",
]
