"""Slots and their trial processes: where trials run, how processes start, die and are fed.

A slot is a GPU (or a share of the CPU); each has one long-lived trial process, forked from
a server that imported the objective once (:func:`start_trial_server`). The worker reads
their pipes here (:func:`serve`) and applies what they said in its own loop.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import optuna

from hpo._optuna._study import trial_id
from hpo.errors import UsageError
from hpo.script import SLOT_GPUS_ENV
from hpo.spec import objective_module
from hpo.storage import this_host, this_job, utcnow, worker_id
from hpo.worker import _protocol as msg
from hpo.worker import _trial_process as tp

#: Threads per trial process, overriding the default share of the host's cores.
THREADS_ENV = "HPO_THREADS"
#: The user's own thread settings, which hpo leaves alone when set.
USER_THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Slot:
    """Where one trial process runs.

    ``gpu`` is the slot's GPUs as the host numbers them, comma-separated as
    CUDA_VISIBLE_DEVICES takes them ("0", or "0,1" for a slot of two), or None for CPU.
    ``ranks`` is how many processes a trial started there may run, one per GPU (torchrun's
    ``--nproc-per-node {gpus}``); a CPU slot has ``--gpus-per-trial`` of them (gloo ranks).
    """

    index: int
    gpu: str | None = None
    ranks: int = 1

    def __post_init__(self) -> None:
        if self.gpu is not None:
            # a GPU slot's ranks are its GPUs, whatever the caller passed
            object.__setattr__(self, "ranks", len(self.gpu.split(",")))

    def env(self) -> dict[str, str]:
        return {
            "CUDA_VISIBLE_DEVICES": self.gpu if self.gpu is not None else "",
            SLOT_GPUS_ENV: str(self.ranks),
        }

    @property
    def label(self) -> str | None:
        """The slot's GPUs as the fleet table and a trial's ``gpu`` attribute show them:
        "3", "0,1", "0-3" (a run of three or more); None for CPU."""
        return None if self.gpu is None else gpu_label(self.gpu.split(","))


def gpu_groups(gpus: Sequence[str], per_trial: int) -> list[str]:
    """``gpus`` cut into consecutive groups of ``per_trial``, as CUDA_VISIBLE_DEVICES values.

    Raises UsageError when the GPUs cannot be cut evenly: a group that is short would start
    a trial on fewer GPUs than its command asks for.
    """
    if per_trial < 1:
        raise UsageError(f"--gpus-per-trial must be at least 1 (got {per_trial})")
    if not gpus or per_trial == 1:
        return list(gpus)
    listed = ",".join(gpus)
    if per_trial > len(gpus):
        have = f"{len(gpus)} GPUs" if len(gpus) > 1 else "1 GPU"
        raise UsageError(f"--gpus-per-trial {per_trial}: only {have} to use ({listed})")
    if len(gpus) % per_trial:
        fit = ",".join(gpus[: len(gpus) - len(gpus) % per_trial])
        raise UsageError(
            f"--gpus-per-trial {per_trial} does not divide the {len(gpus)} GPUs {listed}: "
            f"name the ones to use, e.g. --gpus {fit}"
        )
    return [",".join(gpus[i : i + per_trial]) for i in range(0, len(gpus), per_trial)]


def default_slots(
    processes: int, gpus: Sequence[str] = (), per_gpu: int = 1, *, gpus_per_trial: int = 1
) -> list[Slot]:
    """``per_gpu`` slots on each group of ``gpus_per_trial`` GPUs, else ``processes`` CPU
    slots sharing the cores, each with ``gpus_per_trial`` ranks."""
    groups = gpu_groups(gpus, gpus_per_trial)
    if groups:
        return [Slot(i, gpu=g) for i, g in enumerate(g for g in groups for _ in range(per_gpu))]
    return [Slot(i, ranks=gpus_per_trial) for i in range(processes)]


def spread_slots(n: int, gpus: Sequence[str], *, gpus_per_trial: int = 1) -> list[Slot]:
    """``n`` slots dealt round-robin over ``gpus`` in groups of ``gpus_per_trial`` (CPU
    slots of that many ranks when there are none)."""
    groups = gpu_groups(gpus, gpus_per_trial)
    if not groups:
        return default_slots(n, gpus_per_trial=gpus_per_trial)
    return [Slot(i, gpu=groups[i % len(groups)]) for i in range(n)]


def gpu_label(ids: Sequence[str]) -> str:
    """GPU indices for a table: runs of three or more consecutive ones shortened to "a-b"."""
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and _next(ids[j], ids[j + 1]):
            j += 1
        if j - i >= 2:
            parts.append(f"{ids[i]}-{ids[j]}")
        else:
            parts.extend(ids[i : j + 1])
        i = j + 1
    label = ",".join(parts)
    # the fleet table's column holds 32 characters; a label that long says only how many
    return label if len(label) <= 32 else f"{len(ids)} GPUs"


def _next(a: str, b: str) -> bool:
    return a.isdigit() and b.isdigit() and int(b) == int(a) + 1


def slot_ranks(slots: Sequence[Slot]) -> int:
    """Processes the slots may run at once, which share this host's cores."""
    return sum(s.ranks for s in slots)


def host_cores() -> int:
    """The cores this process may run on (its affinity, which taskset and cgroups narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def trial_threads(explicit: int | None, host_slots: int) -> int | None:
    """Threads for each trial process: ``explicit`` (``--threads``, env HPO_THREADS); else
    None, leaving the user's OMP_NUM_THREADS / MKL_NUM_THREADS alone, when either is set;
    else an equal share of the host's cores among every slot of every worker on it."""
    if explicit is not None:
        return explicit
    if any(os.environ.get(name) for name in USER_THREAD_ENVS):
        return None
    return max(1, host_cores() // max(1, host_slots))


# -- trial processes -------------------------------------------------------------------
@dataclass
class Running:
    trial: optuna.Trial
    started: float


@dataclass
class TrialProcess:
    """A slot's trial process, and the messages from it not yet applied to storage.

    Messages wait in ``inbox`` until applied, in order, so a database outage delays them
    instead of losing a report or a finished trial's result.
    """

    slot: Slot
    process: mp.process.BaseProcess
    conn: Connection
    spawned: float
    ready: bool = False
    dead: bool = False
    running: Running | None = None
    queued: Running | None = None  # sent ahead, to start the moment ``running`` ends
    cancelling: bool = False  # asked the process to give ``queued`` back
    inbox: collections.deque[msg.ToWorker] = field(default_factory=collections.deque)

    def trial_ids(self) -> list[int]:
        """Ids of the trials this process holds: running, and sent ahead."""
        return [trial_id(r.trial) for r in (self.running, self.queued) if r is not None]

    def send(self, message: msg.ToTrial) -> None:
        self.conn.send(message)

    def tell(self, message: msg.ToTrial) -> None:
        """Send, ignoring a process that is gone (its sentinel tells the loop)."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(message)

    def end(self) -> None:
        """Ask the process to end its trial now: SIGTERM, so the objective's ``finally``
        blocks run and a script's process group is ended (:meth:`kill` waits for it)."""
        if self.process.pid is not None and self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """End the trial (:meth:`end`), and SIGKILL a process that has not exited within
        ``END_GRACE_S`` of the first request."""
        end_all([self])


def end_all(procs: Sequence[TrialProcess]) -> None:
    """End every process's trial at once, then wait for each, killing the ones that hang."""
    live = [p for p in procs if p.process.is_alive()]
    for proc in live:
        proc.end()
    deadline = time.monotonic() + msg.END_GRACE_S
    for proc in live:
        proc.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.process.is_alive():
            proc.process.kill()
            proc.process.join(timeout=10)


def fleet_rows(
    procs: Sequence[TrialProcess], study_id: int, started_at: dt.datetime, *, idle: str
) -> list[dict[str, Any]]:
    """This worker's rows of the fleet table, one per slot; ``idle`` names a free slot's
    state ("idle", or "draining" once it takes no more trials)."""
    host, pid, now, job = this_host(), os.getpid(), utcnow(), this_job()
    return [
        {
            "worker_id": worker_id(host, pid, proc.slot.index),
            "study_id": study_id,
            "host": host,
            "pid": pid,
            "slot": proc.slot.index,
            "gpu": proc.slot.label,
            "trial_number": proc.running.trial.number if proc.running else None,
            "state": "running" if proc.running else idle,
            "started_at": started_at,
            "heartbeat_at": now,
            "job": job,
        }
        for proc in procs
    ]


def spawn(slot: Slot, objective: str) -> TrialProcess:
    ctx: Any = mp.get_context(_start_method())  # typeshed's BaseContext lacks Process
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(
        target=tp.main,
        args=(child, objective, slot.env(), os.getpid()),
        name=f"hpo-trial-{slot.index}",
        # Not daemonic, so an objective can start DataLoader workers; teardown joins or kills
        # every trial process, and each dies with its worker (PR_SET_PDEATHSIG).
        daemon=False,
    )
    process.start()
    child.close()
    return TrialProcess(slot=slot, process=process, conn=parent, spawned=time.monotonic())


def serve(procs: Sequence[TrialProcess], timeout: float) -> None:
    """Move messages from the pipes into the inboxes; note processes that died."""
    pipes: dict[object, TrialProcess] = {p.conn: p for p in procs if not p.dead}
    sentinels: dict[object, TrialProcess] = {p.process.sentinel: p for p in procs if not p.dead}
    for ready in wait([*pipes, *sentinels], timeout=timeout):  # type: ignore[list-item]
        proc = pipes.get(ready) or sentinels[ready]
        try:
            while proc.conn.poll():
                proc.inbox.append(proc.conn.recv())
        except (EOFError, OSError):
            pass  # the process is gone; its sentinel tells
        if ready in sentinels and not proc.process.is_alive():
            proc.dead = True


def stop_all(procs: Sequence[TrialProcess]) -> None:
    """Ask every process to exit, then make sure it did."""
    for proc in procs:
        proc.tell(msg.Exit())
    for proc in procs:
        proc.process.join(timeout=5)
        if proc.process.is_alive():
            proc.process.kill()
            proc.process.join(timeout=5)


def _start_method() -> str:
    return "spawn" if os.environ.get(tp.START_METHOD_ENV) == "spawn" else "forkserver"


def start_trial_server(objective: str) -> None:
    """Start the server that trial processes fork from, without waiting for it.

    Trial processes fork from a server that imported Optuna, hpo and the objective's module
    (and so torch) once, and never touched CUDA or the database: they start ready, rather
    than each importing torch. Its imports take about as long as opening the study, so
    callers that know the objective early start it first and the two overlap. Does nothing
    if the server runs already or trial processes are spawned (``HPO_START_METHOD=spawn``).
    """
    if _start_method() == "spawn":
        return
    from multiprocessing import forkserver

    # Read by the server as it starts (hpo.worker._forkserver); a server started earlier for
    # another objective still works: the trial process imports its own objective.
    os.environ[tp.OBJECTIVE_MODULE_ENV] = objective_module(objective)
    mp.get_context("forkserver").set_forkserver_preload(["hpo.worker._forkserver"])
    forkserver.ensure_running()
