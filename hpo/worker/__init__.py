"""The worker: pulls trials of one study from storage and runs them on local slots.

``_loop`` (the worker's loop and state), ``_assign`` (taking trials), ``_faults`` (giving
trials back for a retry), ``_slots`` (slots and their trial processes), ``_protocol`` (the
pipe messages) and ``_trial_process`` (the process that runs objectives).

Names are imported on first use (PEP 562): the forkserver every trial process forks from
imports ``hpo.worker._trial_process``, which runs this ``__init__`` first, and must not pay for
the loop's imports (SQLAlchemy, the study, the storage): that was 0.2 s of every worker's
start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Worker": "hpo.worker._loop",
    "join": "hpo.worker._run",
    "run": "hpo.worker._run",
    "THREADS_ENV": "hpo.worker._slots",
    "Slot": "hpo.worker._slots",
    "default_slots": "hpo.worker._slots",
    "spread_slots": "hpo.worker._slots",
    "start_trial_server": "hpo.worker._slots",
    "LoopState": "hpo.worker._state",
    "Phase": "hpo.worker._state",
    "Progress": "hpo.worker._state",
    "SIGTERM_ACTIONS": "hpo.worker._state",
    "Summary": "hpo.worker._state",
}

__all__ = [
    "SIGTERM_ACTIONS",
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

if TYPE_CHECKING:
    from hpo.worker._loop import Worker
    from hpo.worker._run import join, run
    from hpo.worker._slots import (
        THREADS_ENV,
        Slot,
        default_slots,
        spread_slots,
        start_trial_server,
    )
    from hpo.worker._state import SIGTERM_ACTIONS, LoopState, Phase, Progress, Summary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpo.worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
