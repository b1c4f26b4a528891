"""The worker's state and figures: the phase of its loop, study-wide progress, and what it did."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from hpo.study import StudySummary, summarize

if TYPE_CHECKING:
    import optuna

    from hpo.spec import StudySpec


#: Study-wide counts, refreshed each tick, for progress bars: the one study summary.
Progress = StudySummary


@dataclass
class Summary:
    """What this worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
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
    STOPPING = "stopping"  # abandons its running trials for a retry, now


@dataclass
class LoopState:
    """Where the loop is, and why; the phase only moves forward."""

    phase: Phase = Phase.RUNNING
    reason: str = ""  # why it drains or stops
    budget_spent: bool = False  # the last turn of the lock found no trial left to create
    study_idle: bool = False  # nothing running or queued anywhere, as of the last tick

    def drain(self, reason: str) -> None:
        if self.phase is Phase.RUNNING:
            self.phase, self.reason = Phase.DRAINING, reason

    def stop(self, reason: str) -> None:
        if self.phase is not Phase.STOPPING:
            self.phase, self.reason = Phase.STOPPING, reason


def study_progress(ostudy: optuna.Study, spec: StudySpec) -> Progress:
    """Study-wide counts from this worker's (cached) view of the trials."""
    return summarize(ostudy.get_trials(deepcopy=False), spec, budget=spec.n_trials)


def install_signal_handlers(on_signal: Callable[[int], None]) -> Callable[[], None]:
    """Route SIGINT and SIGTERM to ``on_signal``; returns what puts the old handlers back."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        on_signal(signum)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not in the main thread (e.g. a library caller's thread)
        return lambda: None

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
