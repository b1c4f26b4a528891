"""The worker's state and figures: the phase of its loop, study-wide progress, and what it did."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from hpo.storage import retried_numbers
from hpo.study import StudySummary, summarize

if TYPE_CHECKING:
    import optuna

    from hpo.spec import StudySpec


#: What SIGTERM does to a worker: "drain" (finish the running trials; a second one abandons
#: them), as a terminal, systemd or ``timeout`` user expects; or "preempt" (end them now,
#: queued again to resume), as Slurm and Kubernetes need: they SIGKILL about 30 s later.
SIGTERM_ACTIONS = ("drain", "preempt")
#: Set in a job of these schedulers, SIGTERM preempts unless told otherwise (HPO_ON_SIGTERM).
SCHEDULER_ENVS = ("SLURM_JOB_ID", "KUBERNETES_SERVICE_HOST")


def sigterm_action(explicit: str | None) -> str:
    """``explicit`` (``--on-sigterm``, env HPO_ON_SIGTERM); else "preempt" inside a Slurm job
    or a Kubernetes pod, "drain" elsewhere."""
    import os

    if explicit:
        return explicit
    return "preempt" if any(os.environ.get(name) for name in SCHEDULER_ENVS) else "drain"


#: Study-wide counts, refreshed each tick, for progress bars: the one study summary.
Progress = StudySummary


@dataclass
class Summary:
    """What this worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    preempted: int = 0  # trials ended because this worker was preempted, queued again
    stop_reason: str = ""
    fatal: str | None = None
    signal: int | None = None  # the signal that interrupted the run, if one did

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed

    def count(self, state: TrialState) -> None:
        if state == TrialState.COMPLETE:
            self.complete += 1
        elif state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1


class Phase(enum.Enum):
    RUNNING = "running"  # takes new trials
    DRAINING = "draining"  # finishes its running trials, takes no new ones
    STOPPING = "stopping"  # abandons its running trials for a retry (or preempted), now


@dataclass
class LoopState:
    """Where the loop is, and why; the phase only moves forward."""

    phase: Phase = Phase.RUNNING
    reason: str = ""  # why it drains or stops
    budget_spent: bool = False  # the last turn of the lock found no trial left to create
    study_idle: bool = False  # nothing running or queued anywhere, as of the last tick
    preempted: bool = False  # stopping because preempted: trials end as preempted

    def preempt(self, reason: str) -> None:
        if not self.preempted:
            self.phase, self.reason, self.preempted = Phase.STOPPING, reason, True

    def drain(self, reason: str) -> None:
        if self.phase is Phase.RUNNING:
            self.phase, self.reason = Phase.DRAINING, reason

    def stop(self, reason: str) -> None:
        if self.phase is not Phase.STOPPING:
            self.phase, self.reason = Phase.STOPPING, reason


def is_idle(progress: Progress, *, grace_s: float) -> bool:
    """Nothing running or queued anywhere, and no retry about to be: a preempted attempt is
    always queued again, but by its worker just after it is failed (two writes), so for
    ``grace_s`` one without its retry yet means the retry is on its way."""
    if progress.running or progress.waiting:
        return False
    retried = retried_numbers(progress.trials)
    since = progress.at - dt.timedelta(seconds=grace_s)
    return not any(
        progress.outcomes[t.number] == "preempted"
        and t.number not in retried
        and (t.datetime_complete is None or t.datetime_complete > since)
        for t in progress.trials
    )


def study_progress(ostudy: optuna.Study, spec: StudySpec) -> Progress:
    """Study-wide counts from this worker's (cached) view of the trials."""
    return summarize(ostudy.get_trials(deepcopy=False), spec, budget=spec.n_trials)


def install_signal_handlers(on_signal: Callable[[int], None]) -> Callable[[], None]:
    """Route SIGINT, SIGTERM and SIGUSR1 to ``on_signal``; returns what puts the old handlers
    back."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        on_signal(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not in the main thread (e.g. a library caller's thread)
        return lambda: None

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
