"""The worker: pulls trials of one study from storage and runs them on local slots.

``_loop`` (the worker's loop and state), ``_assign`` (taking trials), ``_faults`` (giving
trials back for a retry), ``_slots`` (slots and their trial processes), ``_protocol`` (the
pipe messages) and ``_trial_process`` (the process that runs objectives).
"""

from hpo.worker._loop import Worker
from hpo.worker._run import join, run
from hpo.worker._slots import (
    THREADS_ENV,
    Slot,
    default_slots,
    spread_slots,
    start_trial_server,
)
from hpo.worker._state import LoopState, Phase, Progress, Summary

__all__ = [
    "THREADS_ENV",
    "LoopState",
    "Phase",
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
