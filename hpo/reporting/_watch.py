"""``hpo status --watch``: periodic snapshots of a study, with its rate and time to finish.

:func:`snapshot` is the study summary (:func:`hpo.study.study_summary`) with its rate;
:func:`watch` polls until the study is finished or stopped, or the user presses Ctrl-C.
Drawing is the caller's business (``_console.watching``), so the loop can be driven by a
test without a terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hpo.study import RATE_WINDOW_S, RunningTrial, StudySummary, study_summary

if TYPE_CHECKING:
    from hpo.study import Study

__all__ = ["RATE_WINDOW_S", "RunningTrial", "Snapshot", "snapshot", "watch"]

#: What one refresh of the watch shows: the study summary every other view shows too.
Snapshot = StudySummary


def snapshot(
    study: Study, *, window_s: float = RATE_WINDOW_S, now: dt.datetime | None = None
) -> Snapshot:
    """Read the study's trials and budget once and summarise them, with the recent rate."""
    return study_summary(study, now=now, window_s=window_s)


def watch(
    study: Study,
    on_snapshot: Callable[[Snapshot], None],
    *,
    interval: float = 2.0,
    window_s: float = RATE_WINDOW_S,
) -> Snapshot | None:
    """Call ``on_snapshot`` every ``interval`` seconds until the study is finished or
    stopped (:attr:`StudySummary.over`).

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
                if last.over:
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
