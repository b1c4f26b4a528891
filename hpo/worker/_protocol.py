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

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.worker._trial_process import TrialJob, TrialOutcome


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
