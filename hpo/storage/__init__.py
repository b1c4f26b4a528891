"""Storage and coordination: URLs, the study lock and budget, the fleet, retries, and the
worker's batching storage over Optuna's RDB schema."""

# The fleet declares its table on _rdb's metadata, so open_storage creates it too.
from hpo.storage._fleet import (
    StaleTrial,
    fleet,
    host_slots,
    mark_stopped,
    orphan_trial_ids,
    stale_trials,
    this_host,
    this_job,
    upsert_workers,
    utcnow,
    worker_id,
    workers_table,
)
from hpo.storage._here import HERE_FILE, has_secret, remember_url, remembered_url
from hpo.storage._rdb import (
    DEFAULT_STORAGE,
    STUDY_UID_ATTR,
    Budget,
    BudgetView,
    budget_table,
    is_transient,
    mask,
    open_storage,
    peek_user_attr,
    resolve_url,
    study_checkpoint_dir,
)
from hpo.storage._retries import (
    PREEMPTED_ATTEMPTS_ATTR,
    PREEMPTED_ATTR,
    StaleTrialRetry,
    logical_trial_number,
    retried_numbers,
    state_counts,
)
from hpo.storage._worker_storage import StudyStorage, WorkerStorage, study_storage
from hpo.storage._write_through import WriteThroughStorage

__all__ = [
    "DEFAULT_STORAGE",
    "HERE_FILE",
    "PREEMPTED_ATTEMPTS_ATTR",
    "PREEMPTED_ATTR",
    "STUDY_UID_ATTR",
    "Budget",
    "BudgetView",
    "StaleTrial",
    "StaleTrialRetry",
    "StudyStorage",
    "WorkerStorage",
    "WriteThroughStorage",
    "budget_table",
    "fleet",
    "has_secret",
    "host_slots",
    "is_transient",
    "logical_trial_number",
    "mark_stopped",
    "mask",
    "open_storage",
    "orphan_trial_ids",
    "peek_user_attr",
    "remember_url",
    "remembered_url",
    "resolve_url",
    "retried_numbers",
    "stale_trials",
    "state_counts",
    "study_checkpoint_dir",
    "study_storage",
    "this_host",
    "this_job",
    "upsert_workers",
    "utcnow",
    "worker_id",
    "workers_table",
]
