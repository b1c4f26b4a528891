"""``hpo status --watch``: periodic snapshots of a study, with its rate and time to finish.

:func:`snapshot` reads the trials once and derives everything from them; :func:`watch` polls
until the study is finished or the user presses Ctrl-C. Drawing is the caller's business
(``_console.watching``), so the loop can be driven by a test without a terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpo.storage import retried_numbers, state_counts

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpo.study import Study

#: Trials per minute are counted over this window: long enough to smooth out trials that
#: end together, short enough to follow a change of pace (a worker joining or leaving).
RATE_WINDOW_S = 300.0


@dataclass(frozen=True)
class RunningTrial:
    number: int
    worker: str
    gpu: str | None
    epoch: int | None  # the last step reported, None before the first report
    elapsed_s: float | None


@dataclass(frozen=True)
class Snapshot:
    """A study at one moment, as ``hpo status --watch`` shows it."""

    name: str
    at: dt.datetime
    metrics: tuple[str, ...]
    budget: int | None
    counts: Mapping[str, int]
    done: int  # finished trials that count against the budget (a retried attempt does not)
    best_values: tuple[float, ...] | None
    best_number: int | None
    pareto_size: int
    rate_per_min: float | None  # finished trials per minute, over the recent window
    running: tuple[RunningTrial, ...]
    stop: str | None

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.done)

    @property
    def eta_s(self) -> float | None:
        """Seconds to finish the budget at the recent rate; None when it cannot be told."""
        if self.remaining == 0:
            return 0.0
        if self.remaining is None or not self.rate_per_min:
            return None
        return 60.0 * self.remaining / self.rate_per_min

    @property
    def finished(self) -> bool:
        """Nothing left to wait for: the budget is spent, or a stop was asked, and no trial runs."""
        if self.running:
            return False
        return self.remaining == 0 or self.stop is not None


def snapshot(
    study: Study, *, window_s: float = RATE_WINDOW_S, now: dt.datetime | None = None
) -> Snapshot:
    """Read the study's trials and budget once and summarise them."""
    from optuna.trial import TrialState

    # Optuna stores naive local timestamps, so "now" must be naive local time too.
    now = now or dt.datetime.now()
    trials = study.optuna.get_trials(deepcopy=False)
    n_trials, _, stop = study.budget.state()
    retried = retried_numbers(trials)
    counts = state_counts(trials)
    finished = [t for t in trials if t.state.is_finished() and t.number not in retried]
    running = [t for t in trials if t.state == TrialState.RUNNING]

    best_values, best_number, pareto_size = None, None, 0
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.spec.directions) == 1:
        sign = 1 if study.spec.directions[0] == "minimize" else -1
        best = min(complete, key=lambda t: sign * t.values[0])
        best_values, best_number = tuple(best.values), best.number
    elif complete:
        pareto_size = len(study.optuna.best_trials)

    return Snapshot(
        name=study.name,
        at=now,
        metrics=study.spec.metrics,
        budget=n_trials,
        counts=dict(counts),
        done=len(finished),
        best_values=best_values,
        best_number=best_number,
        pareto_size=pareto_size,
        rate_per_min=_rate(trials, running, now, window_s),
        running=tuple(
            RunningTrial(
                number=t.number,
                worker=str(t.user_attrs.get("worker") or t.user_attrs.get("host") or "-"),
                gpu=t.user_attrs.get("gpu"),
                epoch=max(t.intermediate_values) if t.intermediate_values else None,
                elapsed_s=(now - t.datetime_start).total_seconds() if t.datetime_start else None,
            )
            for t in running
        ),
        stop=stop,
    )


def watch(
    study: Study,
    on_snapshot: Callable[[Snapshot], None],
    *,
    interval: float = 2.0,
    window_s: float = RATE_WINDOW_S,
) -> Snapshot | None:
    """Call ``on_snapshot`` every ``interval`` seconds until the study is finished.

    Ctrl-C ends the watch quietly (it only stops watching, never the study) and returns the
    last snapshot shown, or None if there was none yet. While a snapshot is read, Ctrl-C only
    marks the watch to stop after it: a KeyboardInterrupt raised inside the database driver
    can leave a lock taken that the process then waits on for ever. A second Ctrl-C stops at
    once, wherever the watch is.
    """
    last = None
    with _ctrl_c() as ctrl_c:
        try:
            while not ctrl_c.pressed:
                last = snapshot(study, window_s=window_s)
                on_snapshot(last)
                if last.finished:
                    return last
                ctrl_c.sleep(interval)
        except KeyboardInterrupt:  # a second Ctrl-C, or a watch outside the main thread
            pass
    return last


class _WakeUp(Exception):
    """Raised by the Ctrl-C handler, only into :meth:`_CtrlC.sleep`."""


class _CtrlC:
    def __init__(self) -> None:
        self.pressed = False
        self._sleeping = False

    def handle(self, signum: int, frame: object) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        if self._sleeping:
            raise _WakeUp

    def sleep(self, seconds: float) -> None:
        """Sleep, or return as soon as Ctrl-C is pressed."""
        try:
            try:
                self._sleeping = True
                if not self.pressed:
                    time.sleep(seconds)
            finally:
                self._sleeping = False
        except _WakeUp:
            pass


@contextlib.contextmanager
def _ctrl_c() -> Iterator[_CtrlC]:
    ctrl_c = _CtrlC()
    try:
        previous = signal.signal(signal.SIGINT, ctrl_c.handle)
    except ValueError:  # not the main thread: Ctrl-C stays a plain KeyboardInterrupt
        yield ctrl_c
        return
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)


def _rate(
    trials: Sequence[FrozenTrial], running: Sequence[FrozenTrial], now: dt.datetime, window_s: float
) -> float | None:
    """Finished trials per minute over the last ``window_s`` seconds.

    The window starts no earlier than the first start among the trials that finished in it
    or still run, so a run that began a minute ago is not diluted by four idle minutes
    before it; when nothing runs it ends at the last completion, for the same reason.
    """
    since = now - dt.timedelta(seconds=window_s)
    recent = [t for t in trials if t.datetime_complete is not None and t.datetime_complete >= since]
    starts = [t.datetime_start for t in [*recent, *running] if t.datetime_start is not None]
    if not recent or not starts:
        return None
    # With nothing running the study is idle or done: measure up to its last completion.
    end = now if running else max(t.datetime_complete for t in recent)  # type: ignore[type-var]
    elapsed = (end - max(since, min(starts))).total_seconds()
    return 60.0 * len(recent) / elapsed if elapsed > 0 else None
