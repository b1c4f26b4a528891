"""The worker: pulls trials of one study from storage and runs them on local slots.

One worker process per machine owns the database connection and the sampler; it keeps one
trial process per slot (a GPU, or a CPU share) and feeds it trials. Its loop, in
:meth:`Worker.work`, is flat on purpose (after rq's ``Worker.work``): stop check, assign,
serve, tick.

Guarantees, and where they come from:
- study-wide budget exact: a new trial is created only under the study-wide lock, after
  counting the logical trials (``Budget.turn``);
- a killed trial is retried: a dead trial process is seen at once; a dead worker's trials
  stop heartbeating and any live worker fails them and enqueues a retry
  (:class:`StaleTrialRetry`), which resumes from the trial's checkpoint directory;
- first SIGINT/SIGTERM (or ``hpo stop``) finishes the running trials, a second abandons
  them to be retried.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from hpo.context import TrialContext
from hpo.search import distributions, grid_points
from hpo.spec import objective_module
from hpo.storage import (
    StaleTrialRetry,
    is_transient,
    logical_trial_number,
    orphan_trial_ids,
    retried_numbers,
    upsert_workers,
    utcnow,
)
from hpo.worker import _trial_process as tp

if TYPE_CHECKING:
    from hpo.study import Study

log = logging.getLogger("hpo.worker")
# hpo drives heartbeats itself rather than through Study.optimize, on purpose.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
POLL_S = 0.5  # how long the loop blocks waiting for trial processes between ticks
START_TIMEOUT_S = 300  # importing torch on a cold disk can be slow


@dataclass(frozen=True)
class Slot:
    """Where one trial process runs: a GPU index as the host numbers it, or None for CPU."""

    index: int
    gpu: str | None = None
    threads: int | None = None

    def env(self) -> dict[str, str]:
        env = {"CUDA_VISIBLE_DEVICES": self.gpu if self.gpu is not None else ""}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


@dataclass
class Progress:
    """Study-wide counts, refreshed each tick, for progress bars."""

    budget: int | None
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    best_number: int | None = None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class Summary:
    """What this worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    stop_reason: str = ""
    fatal: str | None = None

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class _Running:
    trial: optuna.Trial
    started: float


@dataclass
class _Proc:
    """A trial process, and the messages from it that are not yet applied to storage.

    Messages wait in ``inbox`` until applied, in order, so a database outage delays them
    instead of losing a report or a finished trial's result.
    """

    slot: Slot
    process: mp.process.BaseProcess
    conn: Connection
    spawned: float
    ready: bool = False
    dead: bool = False
    running: _Running | None = None
    queued: _Running | None = None  # sent ahead, to start the moment ``running`` ends
    cancelling: bool = False  # asked the process to give ``queued`` back
    inbox: collections.deque[tuple[Any, ...]] = field(default_factory=collections.deque)


@dataclass
class Worker:
    study: Study
    slots: Sequence[Slot]
    timeout: float | None = None
    on_progress: Callable[[Progress], None] | None = None
    checkpoint_dir: str | None = None  # overrides the spec's, e.g. a shared mount per machine
    tick_s: float = 1.0
    max_outage_s: float = 900.0
    # A slot whose trials take less than this gets its next trial sampled and sent while the
    # current one runs, so it never waits on the sampler or the database. Longer trials gain
    # nothing from it and would let the sampler decide a trial earlier than it must.
    prefetch_below_s: float = 60.0
    summary: Summary = field(default_factory=Summary)

    def __post_init__(self) -> None:
        self._spec = self.study.spec
        self._ostudy = self.study.optuna
        self._storage = self._ostudy._storage
        self._dists = distributions(self._spec)
        self._grid = grid_points(self._spec) if self._spec.is_grid else None
        self._procs: list[_Proc] = []
        self._ctx = mp.get_context(_start_method())
        self._draining = ""  # why no new trials are started; "" while running normally
        self._stop_now = False
        self._exhausted = False
        self._study_idle = False
        self._started = time.monotonic()
        self._started_at = utcnow()
        self._last_tick = self._last_beat = 0.0
        self._outage: tuple[float, int] | None = None  # (since, failed attempts)
        self._typical_s: float | None = None  # moving average of this worker's trial times
        self._host = socket.gethostname()

    # -- the loop ----------------------------------------------------------------------
    def work(self) -> Summary:
        """Run trials until the budget is spent, the study is stopped or time runs out."""
        restore = self._install_signal_handlers()
        try:
            self._start_processes()
            while True:
                try:
                    self._apply_inboxes()  # reports, prune checks and results, in order
                    if not self._draining:
                        self._assign_trials()  # take or create trials for idle slots
                    else:
                        self._cancel_queued()  # trials sent ahead go back to the queue
                    self._tick()  # heartbeats, stale trials, timeouts, stop flag, fleet
                    self._outage = None
                except Exception as e:
                    self._back_off(e)  # storage unreachable: wait and go on, or give up
                if self._finished():
                    break
                self._serve(POLL_S)  # wait for trial processes; reads pipes only
        finally:
            self._teardown()
            restore()
        self._report_progress()  # the final figures: the loop may end between ticks
        return self.summary

    def _report_progress(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self._progress())
        except Exception as e:  # a progress line is not worth failing a finished run for
            log.debug("no final progress: %s", type(e).__name__)

    def _finished(self) -> bool:
        if self.summary.fatal:
            return True
        if self._stop_now:
            self.summary.stop_reason = self.summary.stop_reason or "stopped now"
            return True
        if any(p.running or p.queued or p.inbox or p.dead for p in self._procs):
            return False
        if self._draining:
            self.summary.stop_reason = self._draining
            return True
        if self._exhausted and (self._study_idle or self._refresh_idle()):
            self.summary.stop_reason = "budget spent"
            return True
        return False

    def _refresh_idle(self) -> bool:
        """Whether the study has nothing running or queued anywhere, read fresh: with the
        budget spent, this worker stays only to take retries of other workers' trials."""
        try:
            self._storage.sync(self._ostudy._study_id)
        except Exception as e:
            if not is_transient(e):
                raise
            return False  # the loop backs off on its next storage call
        self._study_idle = self._progress().running == 0 and not self._waiting
        return self._study_idle

    def _back_off(self, e: Exception) -> None:
        if not is_transient(e):
            raise e
        since, attempts = self._outage or (time.monotonic(), 0)
        self._outage = (since, attempts + 1)
        down = time.monotonic() - since
        if down > self.max_outage_s:
            self.summary.fatal = f"storage unreachable for {down:.0f} s: {type(e).__name__}"
            return
        delay = min(2.0**attempts, 30.0)
        log.warning("storage unreachable (%s); retrying in %.0f s", type(e).__name__, delay)
        time.sleep(delay)

    # -- assigning trials --------------------------------------------------------------
    def _assign_trials(self) -> None:
        usable = [p for p in self._procs if p.ready and not p.dead]
        idle = [p for p in usable if p.running is None]
        ahead = [p for p in usable if p.running and not p.queued] if self._prefetch() else []
        if not idle and not ahead:
            return
        try:
            wanted = idle + ahead  # the budget may give fewer: idle slots come first
            for proc, trial in zip(wanted, self._next_trials(len(wanted)), strict=False):
                self._send(proc, trial)
        finally:
            self._storage.flush()  # the new trials' parameters, placement and heartbeats

    def _prefetch(self) -> bool:
        typical = self._typical_s
        return self._storage.batched and typical is not None and typical < self.prefetch_below_s

    def _cancel_queued(self) -> None:
        for proc in self._procs:
            if proc.queued is not None and not proc.cancelling and not proc.dead:
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.conn.send(("cancel", proc.queued.trial._trial_id))
                proc.cancelling = True

    def _next_trials(self, wanted: int) -> list[optuna.Trial]:
        """Up to ``wanted`` trials, taken from the queue or created, in one turn of the lock."""
        trials: list[optuna.Trial] = []
        with self.study.budget.turn() as budget:
            logical, waiting = budget.logical, budget.waiting
            while len(trials) < wanted:
                if not waiting:  # queued trials (retries, grid points) are taken first
                    if budget.stop or (budget.n_trials is not None and logical >= budget.n_trials):
                        self._exhausted = True
                        break
                    if self._grid is not None:
                        # The k-th logical trial of a grid is its k-th point; skip_if_exists
                        # guards against a point enqueued twice, and needs a fresh view.
                        self._storage.sync(self._ostudy._study_id)
                        self._ostudy.enqueue_trial(self._grid[logical], skip_if_exists=True)
                        logical, waiting = logical + 1, waiting + 1
                self._exhausted = False
                popped = self._storage.popped
                # Under the lock: ask() pops the oldest queued trial, or creates a new one (and
                # with the queue known empty it does not read the queue).
                with self._storage.queue_empty(not waiting):
                    trials.append(self._ostudy.ask(self._dists))
                if self._storage.popped > popped:
                    waiting = max(0, waiting - 1)
                else:
                    logical += 1
        return trials

    def _send(self, proc: _Proc, trial: optuna.Trial) -> None:
        frozen = trial._get_latest_trial()
        logical = logical_trial_number(frozen)
        root = self.checkpoint_dir or self._spec.checkpoint_dir
        ckpt = tp.checkpoint_dir(root, self._spec.name, logical)
        ctx = TrialContext(
            params={**self._spec.fixed, **frozen.params},
            metrics=self._spec.metrics,
            directions=self._spec.directions,
            checkpoint_dir=ckpt,
            seed=self._spec.trial_seed(logical),
        )
        self._storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("host", self._host)
        trial.set_user_attr("gpu", proc.slot.gpu)
        trial.set_user_attr("worker", f"{self._host}:{os.getpid()}/{proc.slot.index}")
        job = tp.TrialJob(
            trial_id=trial._trial_id,
            number=trial.number,
            params=dict(frozen.params),
            distributions={k: distribution_to_json(v) for k, v in frozen.distributions.items()},
            user_attrs=dict(frozen.user_attrs),
            system_attrs=dict(frozen.system_attrs),
            context=ctx,
            datetime_start=frozen.datetime_start,
        )
        proc.conn.send(("trial", job))
        if proc.running is None:
            proc.running = _Running(trial=trial, started=time.monotonic())
        else:
            proc.queued = _Running(trial=trial, started=time.monotonic())
        log.info("trial %d started on slot %d %s", trial.number, proc.slot.index, frozen.params)

    # -- serving trial processes -------------------------------------------------------
    def _serve(self, timeout: float) -> None:
        """Move messages from the pipes into the inboxes; note processes that died."""
        pipes = {p.conn: p for p in self._procs if not p.dead}
        sentinels = {p.process.sentinel: p for p in self._procs if not p.dead}
        for ready in wait([*pipes, *sentinels], timeout=timeout):
            proc = pipes.get(ready) or sentinels[ready]  # type: ignore[index]
            try:
                while proc.conn.poll():
                    proc.inbox.append(proc.conn.recv())
            except (EOFError, OSError):
                pass  # the process is gone; its sentinel tells
            if ready in sentinels and not proc.process.is_alive():
                proc.dead = True

    def _apply_inboxes(self) -> None:
        for proc in list(self._procs):
            while proc.inbox:
                self._handle(proc, proc.inbox[0])
                proc.inbox.popleft()  # only once applied: a storage error keeps it queued
            if proc.dead:
                self._on_process_died(proc)

    def _handle(self, proc: _Proc, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ready":
            proc.ready = True
            log.debug(
                "slot %d ready after %.2f s", proc.slot.index, time.monotonic() - proc.spawned
            )
        elif kind == "fatal":
            self.summary.fatal = msg[1]
        elif kind == "done":
            self._finish(proc, msg[1])
        elif kind == "cancelled":
            self._requeue(proc, msg[1])
        elif kind in ("call", "cast") and proc.running is not None:
            _, method, args = msg
            try:
                result = self._apply(proc.running.trial, method, args)
                reply: tuple[str, Any] = ("ok", result)
            except Exception as e:
                if is_transient(e):
                    raise
                reply = ("err", f"{type(e).__name__}: {e}")  # the objective sees Optuna's error
                if kind == "cast":
                    log.warning("trial %d: %s failed: %s", proc.running.trial.number, method, e)
            if kind == "call":
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.conn.send(reply)

    def _apply(self, trial: optuna.Trial, method: str, args: tuple[Any, ...]) -> Any:
        if method == "report":
            return trial.report(*args)
        if method == "should_prune":
            return trial.should_prune()
        if method == "set_user_attr":
            return trial.set_user_attr(*args)
        if method == "set_system_attr":
            return self._storage.set_trial_system_attr(trial._trial_id, *args)
        if method == "suggest":
            name, dist = args
            return trial._suggest(name, json_to_distribution(dist))
        raise ValueError(f"unknown trial method {method!r}")

    def _finish(self, proc: _Proc, outcome: tp.TrialOutcome) -> None:
        running = proc.running
        if running is None or running.trial._trial_id != outcome.trial_id:
            return
        attrs: dict[str, Any] = {"duration_s": round(outcome.duration_s, 3)}
        if outcome.reason:
            attrs["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.reason
        state = TrialState[outcome.state]
        values = list(outcome.values) if outcome.values is not None else None
        self._close(running.trial, state, values, attrs)
        proc.running, proc.queued = proc.queued, None
        if proc.running is not None:  # the trial sent ahead started as this one ended
            proc.running.started = time.monotonic()
            self._storage.set_trial_start(proc.running.trial._trial_id, dt.datetime.now())
        self._count(state)
        d = outcome.duration_s
        self._typical_s = d if self._typical_s is None else 0.8 * self._typical_s + 0.2 * d
        log.info(
            "trial %d %s %s", running.trial.number, state.name.lower(), values or outcome.reason
        )

    def _close(
        self,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        attrs: dict[str, Any],
    ) -> bool:
        """Record attributes and the final state; False if the trial was already finished.

        Idempotent on purpose: after a lost connection the same result is applied again,
        and a trial may have been failed as stale by another worker meanwhile.
        """
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if state == TrialState.COMPLETE:
                self._ostudy.tell(trial, values)
            else:
                self._ostudy.tell(trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def _count(self, state: TrialState) -> None:
        if state == TrialState.COMPLETE:
            self.summary.complete += 1
        elif state == TrialState.PRUNED:
            self.summary.pruned += 1
        else:
            self.summary.failed += 1

    # -- faults ------------------------------------------------------------------------
    def _on_process_died(self, proc: _Proc) -> None:
        code = proc.process.exitcode
        if not proc.ready:  # it never got as far as importing the objective: no use retrying
            self.summary.fatal = (
                self.summary.fatal or f"a trial process exited while starting (code {code})"
            )
            return
        self._abandon(proc, f"trial process died (exit code {code})")
        if self.summary.fatal or self._stop_now:
            return
        log.warning("slot %d: trial process died (exit code %s); restarting", proc.slot.index, code)
        self._procs[self._procs.index(proc)] = self._spawn(proc.slot)

    def _requeue(self, proc: _Proc, trial_id: int) -> None:
        """A trial sent ahead that the slot never started goes back to the study's queue."""
        for attr in ("queued", "running"):  # it was promoted if its predecessor ended first
            item = getattr(proc, attr)
            if item is not None and item.trial._trial_id == trial_id:
                self._storage.requeue(trial_id)
                setattr(proc, attr, None)
                log.info("trial %d went back to the queue", item.trial.number)
        proc.cancelling = False

    def _abandon(self, proc: _Proc, reason: str) -> None:
        """Fail the slot's running trial and queue its retry (subject to the retry limit);
        a trial sent ahead goes back to the queue untouched."""
        if proc.queued is not None:
            self._requeue(proc, proc.queued.trial._trial_id)
        running = proc.running
        if running is None:
            return
        trial = running.trial
        self._close(trial, TrialState.FAIL, None, {"fail_reason": reason})
        frozen = self._storage.backend.get_trial(trial._trial_id)
        retry = StaleTrialRetry(self._spec.retry.max_retries)
        if (
            frozen.state == TrialState.FAIL
            and not self._retry_queued(frozen.number)
            and retry(self._ostudy, frozen)
        ):
            self.summary.retried += 1
        proc.running = None
        self.summary.failed += 1

    def _fail_orphans(self) -> None:
        """Fail and retry trials whose worker died before their first heartbeat."""
        mine = {r.trial._trial_id for p in self._procs for r in (p.running, p.queued) if r}
        grace = self._spec.retry.grace_period
        for trial_id in orphan_trial_ids(
            self.study.budget.engine, self._ostudy._study_id, grace_s=grace
        ):
            if trial_id in mine:
                continue
            try:
                if not self._storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile
            frozen = self._storage.backend.get_trial(trial_id)
            log.warning("trial %d never started on its worker; retrying it", frozen.number)
            StaleTrialRetry(self._spec.retry.max_retries)(self._ostudy, frozen)

    def _retry_queued(self, number: int) -> bool:
        """Whether some worker already queued a retry of trial ``number`` (read fresh)."""
        trials = self._storage.backend.get_all_trials(self._ostudy._study_id, deepcopy=False)
        return any(number in t.system_attrs.get("retry_history", ()) for t in trials)

    def _kill(self, proc: _Proc) -> None:
        if proc.process.is_alive():
            proc.process.kill()
        proc.process.join(timeout=10)

    # -- periodic upkeep ---------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < self.tick_s and not self._stop_now:
            return
        self._last_tick = now
        for proc in self._procs:
            self._check_trial_timeout(proc, now)
            if not proc.ready and now - proc.spawned > START_TIMEOUT_S:
                self.summary.fatal = f"a trial process did not start within {START_TIMEOUT_S} s"
        if now - self._last_beat >= self._spec.retry.heartbeat_interval:
            self._last_beat = now
            self._storage.beat(
                [r.trial._trial_id for p in self._procs for r in (p.running, p.queued) if r]
            )
            # Other workers' trials whose heartbeat stopped: fail them and queue retries.
            optuna.storages.fail_stale_trials(self._ostudy)
            self._fail_orphans()
        self._storage.flush()  # reports of running trials reach the database once a tick
        _, _, stop = self.study.budget.state()
        if stop == "now":
            self._stop_now = True
        elif stop == "graceful" and not self._draining:
            self._draining = "stopped by hpo stop"
        if self.timeout is not None and now - self._started > self.timeout and not self._draining:
            self._draining = "timeout"
        if self._stop_now:
            for proc in self._procs:
                self._kill(proc)
                self._abandon(proc, "stopped before finishing; left for a retry")
        progress = self._progress()
        self._study_idle = progress.running == 0 and not self._waiting
        self._update_fleet()
        if self.on_progress is not None:
            self.on_progress(progress)

    def _check_trial_timeout(self, proc: _Proc, now: float) -> None:
        limit = self._spec.budget.trial_timeout
        if limit is None or proc.running is None or now - proc.running.started <= limit:
            return
        self._kill(proc)
        if proc.queued is not None:
            self._requeue(proc, proc.queued.trial._trial_id)
        reason = f"trial_timeout: ran longer than {limit:g} s"
        self._close(proc.running.trial, TrialState.FAIL, None, {"fail_reason": reason})
        proc.running = None
        self.summary.failed += 1
        self._procs[self._procs.index(proc)] = self._spawn(proc.slot)

    def _progress(self) -> Progress:
        trials = self._ostudy.get_trials(deepcopy=False)
        p = Progress(budget=self._spec.n_trials)
        self._waiting = False
        best_sign = 1 if self._spec.directions[0] == "minimize" else -1
        retried = retried_numbers(trials)
        for t in trials:
            if t.state == TrialState.COMPLETE:
                p.complete += 1
                if len(self._spec.directions) == 1 and (
                    p.best is None or best_sign * t.values[0] < best_sign * p.best
                ):
                    p.best, p.best_number = t.values[0], t.number
            elif t.state == TrialState.PRUNED:
                p.pruned += 1
            elif t.state == TrialState.FAIL and t.number not in retried:
                p.failed += 1
            elif t.state == TrialState.RUNNING:
                p.running += 1
            elif t.state == TrialState.WAITING:
                self._waiting = True
        return p

    def _update_fleet(self) -> None:
        now = utcnow()
        rows = [
            {
                "worker_id": f"{self._host}:{os.getpid()}:{proc.slot.index}",
                "study_id": self.study.budget.study_id,
                "host": self._host,
                "pid": os.getpid(),
                "slot": proc.slot.index,
                "gpu": proc.slot.gpu,
                "trial_number": proc.running.trial.number if proc.running else None,
                "state": "running" if proc.running else ("draining" if self._draining else "idle"),
                "started_at": self._started_at,
                "heartbeat_at": now,
            }
            for proc in self._procs
        ]
        upsert_workers(self.study.budget.engine, rows)

    # -- processes ---------------------------------------------------------------------
    def _start_processes(self) -> None:
        """One trial process per slot; each gets trials as soon as it is ready."""
        start_trial_server(self._spec.objective)  # already running if the caller started it
        self._waiting = False
        self._procs = [self._spawn(slot) for slot in self.slots]

    def _spawn(self, slot: Slot) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=tp.main,
            args=(child, self._spec.objective, slot.env(), os.getpid()),
            name=f"hpo-trial-{slot.index}",
            # Not daemonic, so an objective can start DataLoader workers; _teardown joins or
            # kills every trial process, and each dies with the worker (PR_SET_PDEATHSIG).
            daemon=False,
        )
        process.start()
        child.close()
        return _Proc(slot=slot, process=process, conn=parent, spawned=time.monotonic())

    def _teardown(self) -> None:
        for proc in self._procs:
            if proc.running is not None:
                self._kill(proc)
                self._abandon(proc, "worker stopped before the trial finished; left for a retry")
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.conn.send(("exit",))
        for proc in self._procs:
            proc.process.join(timeout=5)
            if proc.process.is_alive():
                proc.process.kill()
                proc.process.join(timeout=5)
        self._update_fleet_stopped()

    def _update_fleet_stopped(self) -> None:
        from hpo.storage import workers_table

        try:
            with self.study.budget.engine.begin() as con:
                con.execute(
                    workers_table.update()
                    .where(workers_table.c.host == self._host)
                    .where(workers_table.c.pid == os.getpid())
                    .values(state="stopped", trial_number=None, heartbeat_at=utcnow())
                )
        except Exception as e:  # best effort: the study's trials are what matter
            log.warning("could not mark this worker stopped: %s", type(e).__name__)

    def _install_signal_handlers(self) -> Callable[[], None]:
        def handler(signum: int, frame: Any) -> None:
            if self._draining:
                self._stop_now = True
                self.summary.stop_reason = f"{signal.Signals(signum).name} twice"
            else:
                self._draining = f"{signal.Signals(signum).name}: finishing running trials"
                log.warning("finishing running trials; send the signal again to stop now")

        try:
            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not in the main thread (e.g. a library caller's thread)
            return lambda: None

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore


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


def default_slots(processes: int, gpus: Sequence[str] = (), per_gpu: int = 1) -> list[Slot]:
    """``per_gpu`` slots on each GPU, else ``processes`` CPU slots sharing the cores."""
    if gpus:
        return [Slot(i, gpu=g) for i, g in enumerate(g for g in gpus for _ in range(per_gpu))]
    threads = max(1, (os.cpu_count() or 1) // max(1, processes))
    return [Slot(i, threads=threads) for i in range(processes)]


def spread_slots(n: int, gpus: Sequence[str]) -> list[Slot]:
    """``n`` slots dealt round-robin over ``gpus`` (CPU slots when there are none)."""
    if not gpus:
        return default_slots(n)
    return [Slot(i, gpu=gpus[i % len(gpus)]) for i in range(n)]
