"""The worker: pulls trials of one study from storage and runs them on local slots."""

from hpo.worker._loop import (
    Progress,
    Slot,
    Summary,
    Worker,
    default_slots,
    spread_slots,
    start_trial_server,
)
from hpo.worker._run import join, run

__all__ = [
    "Progress",
    "Slot",
    "Summary",
    "Worker",
    "default_slots",
    "join",
    "run",
    "spread_slots",
    "start_trial_server",
]
