"""A study's cached trials kept in number order, and its per-state lists kept up to date."""

from __future__ import annotations

import bisect
from collections.abc import Container

from optuna.trial import FrozenTrial, TrialState


class InOrder:
    """A study's cached trials by number, and its lists by states, kept up to date as trials
    are read in and change, rather than sorted and filtered again after every change.

    Trials numbered below ``settled`` are all finished: they never change state again, so each
    list keeps its part of them, and only the trials from ``settled`` on are filtered per read.
    """

    def __init__(self, source: dict[int, FrozenTrial]) -> None:
        self.source = source  # the cache's own trials of the study, by number
        self.trials: list[FrozenTrial | None] = []  # by number; None for one not read yet
        self.settled = 0
        self.kept: dict[frozenset[TrialState] | None, list[FrozenTrial]] = {}
        for number in sorted(source):
            self.put(source[number])

    def put(self, trial: FrozenTrial) -> None:
        """A trial read in or created (a finished one may be read again: a fresh copy)."""
        n = trial.number
        if n >= len(self.trials):
            self.trials.extend([None] * (n + 1 - len(self.trials)))
        old, self.trials[n] = self.trials[n], trial
        if n >= self.settled:
            return
        if old is None or old.state != trial.state:  # a settled trial changed: start over
            self.settled, self.kept = 0, {}
            return
        for states, kept in self.kept.items():
            if states is None or trial.state in states:
                kept[bisect.bisect_left(kept, n, key=_number)] = trial

    def get(self, states: Container[TrialState] | None) -> list[FrozenTrial]:
        """The trials in these states (all if None), by number, in a new list."""
        self._settle()
        key = None if states is None else frozenset(states)  # type: ignore[call-overload]
        kept = self.kept.get(key)
        if kept is None:
            settled: list[FrozenTrial] = self.trials[: self.settled]  # type: ignore[assignment]
            kept = self.kept[key] = [t for t in settled if key is None or t.state in key]
        rest = self.trials[self.settled :]
        return kept + [t for t in rest if t is not None and (key is None or t.state in key)]

    def _settle(self) -> None:
        """Move the finished trials next to the settled ones into the lists."""
        trials, n = self.trials, self.settled
        while n < len(trials) and (t := trials[n]) is not None and t.state.is_finished():
            for states, kept in self.kept.items():
                if states is None or t.state in states:
                    kept.append(t)
            n += 1
        self.settled = n


def _number(trial: FrozenTrial) -> int:
    return trial.number
