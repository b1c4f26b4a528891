"""The messages on the pipe between a worker and one of its trial processes, declared once.

Worker to trial process: :class:`RunTrial` (now, or as soon as the current one ends),
:class:`Cancel` (give a trial sent ahead back unstarted), :class:`Reply` (to a :class:`Call`)
and :class:`Exit`.

Trial process to worker: :class:`Ready` (objective imported), :class:`Fatal` (it cannot be),
:class:`Call` (an Optuna call that needs an answer: ``should_prune``, ``suggest``),
:class:`Cast` (one that needs none: ``report``, attributes), :class:`Cancelled` (a cancelled
trial was dropped unstarted) and :class:`Done` (the trial's outcome).

The pipe keeps order, so a :class:`Cast` is applied before the :class:`Done` that follows it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo.context import TrialContext

#: How long a trial process has, after its worker's SIGTERM, to end its trial and exit (an
#: objective's ``finally`` blocks, a script's process group) before it is killed.
END_GRACE_S = 10.0
#: A trial process's exit code when SIGTERM ended it (128 + SIGTERM, as a shell reports it).
INTERRUPTED_EXIT = 143


@dataclass(frozen=True)
class TrialJob:
    """What the worker sends to run one trial."""

    trial_id: int
    number: int
    params: Mapping[str, Any]
    distributions: Mapping[str, str]  # name -> distribution JSON
    user_attrs: Mapping[str, Any]
    system_attrs: Mapping[str, Any]
    context: TrialContext
    datetime_start: dt.datetime | None = None
    threads: int | None = None  # for torch in this trial; None leaves the user's setting
    # Define-by-run parameters the worker sampled ahead: name -> (value, distribution JSON).
    # Not the spec's: the objective may not ask for one (a conditional parameter), and one
    # asked with another distribution is sampled on demand instead.
    ahead: Mapping[str, tuple[Any, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialOutcome:
    """What the process sends back when the objective returns or raises."""

    trial_id: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    values: tuple[float, ...] | None = None
    reason: str | None = None
    duration_s: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Set when this trial shows that every trial would be wrong (a searched parameter the
    # objective never reads, a suggest_* that disagrees with the spec): the worker fails
    # the trial with this reason and stops the study instead of spending its budget.
    stop_study: str | None = None
    warning: str | None = None  # for the worker's log (fixed keys nothing read)
    retry: bool = False  # a failed trial worth retrying (hpo.errors.RetryTrial)


class Method(enum.Enum):
    """The trial operations a trial process asks its worker to apply to the real trial."""

    REPORT = "report"
    SHOULD_PRUNE = "should_prune"
    SET_USER_ATTR = "set_user_attr"
    SET_SYSTEM_ATTR = "set_system_attr"
    SUGGEST = "suggest"


# -- worker -> trial process ---------------------------------------------------------------
@dataclass(frozen=True)
class RunTrial:
    job: TrialJob


@dataclass(frozen=True)
class Cancel:
    trial_id: int


@dataclass(frozen=True)
class Reply:
    ok: bool
    value: Any  # the call's result, or the error as text when not ok


@dataclass(frozen=True)
class Exit:
    pass


ToTrial = RunTrial | Cancel | Reply | Exit


# -- trial process -> worker ---------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Fatal:
    message: str


@dataclass(frozen=True)
class Call:
    method: Method
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Cast:
    method: Method
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Cancelled:
    trial_id: int


@dataclass(frozen=True)
class Done:
    outcome: TrialOutcome


ToWorker = Ready | Fatal | Call | Cast | Cancelled | Done
