"""One summary of a study for every view: ``hpo status`` (and ``--watch``), the progress of
``hpo run``, the HTML report and its plots, and ``hpo export``.

Each view used to count trials its own way and they disagreed (60/60 in status, "64 trials,
fail 4" in the report). Now every view calls :func:`summarize` (or :func:`study_summary`)
and shows its numbers, with these words, defined here once (README's CLI section repeats
them):

- **attempt**: one Optuna trial (one row). A retry is a new attempt.
- **logical trial**: one configuration as the budget counts it: a first attempt and all its
  retries, which share its number, seed and checkpoints.
- Every attempt has exactly one **outcome**; the seven counts add up to the attempts:

  - **complete**: the attempt returned its value(s);
  - **pruned**: the pruner stopped it;
  - **failed**: it failed and was not attempted again, so its logical trial failed;
  - **preempted**: its worker was preempted (a failed attempt with the system attribute
    ``preempted``); it is queued again and does not count against ``retry.max_retries``;
  - **retried**: it failed (a crash, a lost worker, a time-out) and a retry was queued;
  - **waiting**: queued, not started (a grid point, a retry);
  - **running**: started, not finished.

- **finished**: a logical trial is finished when its last attempt is complete, pruned or
  failed; ``finished`` counts them against the budget. The *study* is finished only when the
  budget is spent and nothing is running or waiting. After ``hpo stop`` it is *stopped*
  (waiting trials stay queued for the next run), never "finished".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo.storage import PREEMPTED_ATTR, logical_trial_number, retried_numbers

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpo.spec import StudySpec

#: The outcomes of an attempt, in the order every view lists them.
OUTCOMES = ("complete", "pruned", "failed", "preempted", "retried", "waiting", "running")
#: Trials per minute are counted over this window: long enough to smooth out trials that
#: end together, short enough to follow a change of pace (a worker joining or leaving).
RATE_WINDOW_S = 300.0


def sign(direction: str) -> int:
    """1 to minimize, -1 to maximize: ``sign * value`` is smaller for a better value."""
    return 1 if direction == "minimize" else -1


def outcome(trial: FrozenTrial, retried: set[int]) -> str:
    """The attempt's outcome (see the module docstring); ``retried`` from ``retried_numbers``."""
    state = trial.state.name
    if state == "FAIL":
        if trial.system_attrs.get(PREEMPTED_ATTR):
            return "preempted"
        return "retried" if trial.number in retried else "failed"
    if state in ("COMPLETE", "PRUNED", "WAITING", "RUNNING"):
        return state.lower()
    return "failed"  # no other state is stored; never count an attempt in no bucket


@dataclass(frozen=True)
class RunningTrial:
    """A running attempt, as status and watch list it."""

    number: int
    worker: str
    host: str | None
    gpu: str | None
    epoch: int | None  # the last step reported, None before the first report
    started: dt.datetime | None
    elapsed_s: float | None


@dataclass(frozen=True)
class StudySummary:
    """A study's trials at one moment, counted once for every view (see the module doc)."""

    name: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    budget: int | None  # logical trials to run; None: until stopped
    stop: str | None  # a stop asked with `hpo stop` ("graceful" or "now"), or None
    at: dt.datetime  # naive local time, as Optuna stores trial times
    logical: int
    attempts: int
    counts: Mapping[str, int]  # outcome -> attempts, every word of OUTCOMES, in that order
    running_trials: tuple[RunningTrial, ...]
    rate_per_min: float | None  # finished logical trials per minute over the recent window
    outcomes: Mapping[int, str] = field(repr=False)  # trial number -> outcome
    trials: tuple[FrozenTrial, ...] = field(repr=False)

    # -- the counts, by name -------------------------------------------------------------
    @property
    def complete(self) -> int:
        return self.counts["complete"]

    @property
    def pruned(self) -> int:
        return self.counts["pruned"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def preempted(self) -> int:
        return self.counts["preempted"]

    @property
    def retried(self) -> int:
        return self.counts["retried"]

    @property
    def waiting(self) -> int:
        return self.counts["waiting"]

    @property
    def running(self) -> int:
        return self.counts["running"]

    @property
    def finished(self) -> int:
        """Finished logical trials: those the budget has spent."""
        return self.complete + self.pruned + self.failed

    # -- the study as a whole ------------------------------------------------------------
    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.finished)

    @property
    def phase(self) -> str:
        """ "finished", "stopped", "stopping" or "in progress" (see the module docstring)."""
        idle = self.running == 0 and self.waiting == 0
        if idle and self.remaining == 0:
            return "finished"
        if self.stop is not None:
            return "stopped" if self.running == 0 else "stopping"
        return "in progress"

    @property
    def over(self) -> bool:
        """Nothing more will happen without a new `hpo run` or `hpo worker`."""
        return self.phase in ("finished", "stopped")

    @property
    def eta_s(self) -> float | None:
        """Seconds to finish the budget at the recent rate; None when it cannot be told."""
        if self.phase == "finished":
            return 0.0
        if self.remaining is None or not self.rate_per_min:
            return None
        return 60.0 * self.remaining / self.rate_per_min

    # -- best --------------------------------------------------------------------------
    @functools.cached_property
    def best_trials(self) -> tuple[FrozenTrial, ...]:
        """The best trial (one objective) or the Pareto front; computed when first asked."""
        return _best(self.trials, self.outcomes, self.directions)

    @property
    def best(self) -> FrozenTrial | None:
        """The best trial of a single-objective study (None with several objectives)."""
        return self.best_trials[0] if len(self.directions) == 1 and self.best_trials else None

    def key(self, trial: FrozenTrial) -> float:
        """Sort key on the first metric: smaller is better, whatever the direction."""
        return sign(self.directions[0]) * trial.values[0]

    def leader(self) -> FrozenTrial | None:
        """The best trial; with several objectives, the Pareto trial best on the first."""
        return min(self.best_trials, key=self.key) if self.best_trials else None

    def complete_trials(self) -> list[FrozenTrial]:
        return [t for t in self.trials if self.outcomes[t.number] == "complete"]

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON: what `hpo status --format json` prints."""
        return {
            "study": self.name,
            "budget": self.budget,
            "phase": self.phase,
            "logical_trials": self.logical,
            "attempts": self.attempts,
            "finished": self.finished,
            "counts": dict(self.counts),
            "stop": self.stop,
            "rate_per_min": self.rate_per_min,
        }


def summarize(
    trials: Sequence[FrozenTrial],
    spec: StudySpec,
    *,
    budget: int | None,
    stop: str | None = None,
    now: dt.datetime | None = None,
    window_s: float | None = None,
) -> StudySummary:
    """Count ``trials`` of a study with ``spec`` and ``budget`` logical trials (None: no limit).

    The rate is measured only when ``window_s`` is given (over the ``window_s`` seconds
    before ``now``); reading the trials is the caller's, so a view reads them once.
    """
    # Optuna stores naive local timestamps, so "now" must be naive local time too.
    now = now or dt.datetime.now()
    retried = retried_numbers(trials)
    outcomes = {t.number: outcome(t, retried) for t in trials}
    counts = dict.fromkeys(OUTCOMES, 0)
    for o in outcomes.values():
        counts[o] += 1
    running = [t for t in trials if outcomes[t.number] == "running"]
    return StudySummary(
        name=spec.name,
        metrics=spec.metrics,
        directions=spec.directions,
        budget=budget,
        stop=stop,
        at=now,
        logical=len({logical_trial_number(t) for t in trials}),
        attempts=len(trials),
        counts=counts,
        running_trials=tuple(_running(t, now) for t in running),
        rate_per_min=None if window_s is None else _rate(trials, outcomes, now, window_s),
        outcomes=outcomes,
        trials=tuple(trials),
    )


def _best(
    trials: Sequence[FrozenTrial], outcomes: Mapping[int, str], directions: Sequence[str]
) -> tuple[FrozenTrial, ...]:
    done = [t for t in trials if outcomes[t.number] == "complete"]
    if not done:
        return ()
    signs = [sign(d) for d in directions]
    if len(signs) == 1:
        return (min(done, key=lambda t: (signs[0] * t.values[0], t.number)),)
    return _pareto_front(done, signs)


def _pareto_front(done: Sequence[FrozenTrial], signs: Sequence[int]) -> tuple[FrozenTrial, ...]:
    """The trials no other trial dominates (no worse on every metric, better on one), as
    Optuna's ``Study.best_trials`` defines them, without reading the storage again.

    In lexicographic order of the losses a dominating trial comes first, and a trial
    dominated by one off the front is dominated by one on it, so each trial is compared
    with the front found so far only.
    """
    losses = {t.number: tuple(s * v for s, v in zip(signs, t.values, strict=True)) for t in done}
    front: list[FrozenTrial] = []
    for t in sorted(done, key=lambda t: (losses[t.number], t.number)):
        mine = losses[t.number]
        if not any(_dominates(losses[f.number], mine) for f in front):
            front.append(t)
    return tuple(sorted(front, key=lambda t: t.number))


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def _running(t: FrozenTrial, now: dt.datetime) -> RunningTrial:
    host = t.user_attrs.get("host")
    return RunningTrial(
        number=t.number,
        worker=str(t.user_attrs.get("worker") or host or "-"),
        host=None if host is None else str(host),
        gpu=t.user_attrs.get("gpu"),
        epoch=max(t.intermediate_values) if t.intermediate_values else None,
        started=t.datetime_start,
        elapsed_s=(now - t.datetime_start).total_seconds() if t.datetime_start else None,
    )


def _rate(
    trials: Sequence[FrozenTrial], outcomes: Mapping[int, str], now: dt.datetime, window_s: float
) -> float | None:
    """Finished logical trials per minute over the last ``window_s`` seconds.

    The window starts no earlier than the first start among the trials that finished in it
    or still run, so a run that began a minute ago is not diluted by four idle minutes
    before it; when nothing runs it ends at the last completion, for the same reason.
    """
    since = now - dt.timedelta(seconds=window_s)
    final = ("complete", "pruned", "failed")
    recent = [
        t
        for t in trials
        if outcomes[t.number] in final
        and t.datetime_complete is not None
        and t.datetime_complete >= since
    ]
    running = [t for t in trials if outcomes[t.number] == "running"]
    starts = [t.datetime_start for t in [*recent, *running] if t.datetime_start is not None]
    if not recent or not starts:
        return None
    # With nothing running the study is idle or done: measure up to its last completion.
    ends = [t.datetime_complete for t in recent if t.datetime_complete is not None]
    end = now if running else max(ends)
    elapsed = (end - max(since, min(starts))).total_seconds()
    return 60.0 * len(recent) / elapsed if elapsed > 0 else None
