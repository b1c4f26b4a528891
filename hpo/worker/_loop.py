"""The worker: pulls trials of one study from storage and runs them on local slots.

One worker process per machine owns the database connection and the sampler; it keeps one
trial process per slot (a GPU, or a CPU share) and feeds it trials. Its loop, in
:meth:`Worker.work`, is flat on purpose (after rq's ``Worker.work``): apply what the trial
processes said, assign trials to idle slots, tick, wait on the pipes.

Its state is one :class:`Phase` (running, draining, stopping), moved forward only by
:meth:`LoopState.drain` and :meth:`LoopState.stop`, plus two facts read from storage.

Guarantees, and where they come from:
- study-wide budget exact: a new trial is created only under the study-wide lock, after
  counting the logical trials (``Budget.turn``, in ``_assign.take_trials``);
- a killed trial is retried: a dead trial process is seen at once; a dead worker's trials
  stop heartbeating and any live worker gives them back with the reason
  (``_faults.Recovery``), and their retry resumes from the trial's checkpoint directory;
- first SIGINT/SIGTERM (or ``hpo stop``) finishes the running trials, a second abandons
  them to be retried; either way the command exits 130 (SIGINT) or 143 (SIGTERM);
- preemption: SIGUSR1 (Slurm's warning, ``--signal=B:USR1@N``), and SIGTERM inside a Slurm
  job or a Kubernetes pod (``on_sigterm``), end the running trials at once; each is recorded
  as preempted and queued again with its parameters, not counted against ``max_retries``,
  and resumes from its checkpoints on whichever worker takes it (exit 138 or 143).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.trial import TrialState

from hpo._optuna._study import storage_of, study_id, trial_id
from hpo.search import distributions, grid_points
from hpo.storage import (
    host_slots,
    is_transient,
    mark_stopped,
    this_host,
    upsert_workers,
    utcnow,
    worker_id,
)
from hpo.worker import _protocol as msg
from hpo.worker._ahead import AheadSpace
from hpo.worker._apply import apply_call, close_trial
from hpo.worker._assign import take_trials, trial_job
from hpo.worker._faults import Recovery
from hpo.worker._slots import (
    Running,
    Slot,
    TrialProcess,
    end_all,
    fleet_rows,
    serve,
    slot_ranks,
    spawn,
    start_trial_server,
    stop_all,
    trial_threads,
)
from hpo.worker._state import (
    LoopState,
    Phase,
    Progress,
    Summary,
    install_signal_handlers,
    is_idle,
    sigterm_action,
    study_progress,
)

if TYPE_CHECKING:
    from hpo.storage import WorkerStorage
    from hpo.study import Study

log = logging.getLogger("hpo.worker")
# hpo drives heartbeats itself rather than through Study.optimize, on purpose.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
POLL_S = 0.5  # how long the loop blocks waiting for trial processes between ticks
# A scheduler ending a job signals each of its processes: a trial process ended that way is
# seen a moment before the worker's own signal may be; this long, the worker waits for it.
OWN_SIGNAL_WAIT_S = 2.0
# A signal repeated within this long is one request heard twice (`timeout` signals its child,
# then its whole process group); a person sending it again takes longer.
SAME_SIGNAL_S = 0.1
START_TIMEOUT_S = 300  # importing torch on a cold disk can be slow


@dataclass
class Worker:
    study: Study
    slots: Sequence[Slot]
    timeout: float | None = None
    on_progress: Callable[[Progress], None] | None = None
    checkpoint_dir: str | None = None  # overrides the spec's, e.g. a shared mount per machine
    threads: int | None = None  # per trial process; None: the user's setting, or a share
    tick_s: float = 1.0
    max_outage_s: float = 900.0
    # A slot whose trials take less than this gets its next trial sampled and sent while the
    # current one runs, so it never waits on the sampler or the database. Longer trials gain
    # nothing from it and would let the sampler decide a trial earlier than it must.
    prefetch_below_s: float = 60.0
    summary: Summary = field(default_factory=Summary)
    on_sigterm: str | None = None  # "drain" or "preempt"; None: preempt in a scheduler's job

    def __post_init__(self) -> None:
        self._spec = self.study.spec
        self._ostudy = self.study.optuna
        # create_study and load_study open every hpo study on the worker's storage
        self._storage = cast("WorkerStorage", storage_of(self._ostudy))
        self._dists = distributions(self._spec)
        self._grid = grid_points(self._spec) if self._spec.is_grid else None
        self._ahead = AheadSpace(self._dists)  # what the objective's own suggest_* define
        self._procs: list[TrialProcess] = []
        self._recovery = Recovery(self.study, self._storage)
        self.state = LoopState()
        self._started = time.monotonic()
        self._started_at = utcnow()
        self._last_tick = self._last_beat = 0.0
        self._outage: tuple[float, int] | None = None  # (since, failed attempts)
        self._typical_s: float | None = None  # moving average of this worker's trial times
        self._host, self._pid = this_host(), os.getpid()
        self._uid: str | None = None  # the study's identity, read under the lock
        self._took = False  # whether this worker has had a turn of the lock yet
        self._last_signal: tuple[int, float] | None = None  # (signal, when), to drop echoes
        self._threads = trial_threads(self.threads, slot_ranks(self.slots))
        self._sigterm = sigterm_action(self.on_sigterm)

    # -- the loop ----------------------------------------------------------------------
    def work(self) -> Summary:
        """Run trials until the budget is spent, the study is stopped or time runs out."""
        restore = install_signal_handlers(self._on_signal)
        try:
            self._start_processes()
            while True:
                try:
                    self._apply_inboxes()  # reports, prune checks and results, in order
                    if self.state.phase is Phase.RUNNING:
                        self._assign_trials()  # take or create trials for idle slots
                    else:
                        self._cancel_queued()  # trials sent ahead go back to the queue
                    self._tick()  # heartbeats, lost workers, timeouts, stop flag, fleet
                    self._outage = None
                except Exception as e:
                    self._back_off(e)  # storage unreachable: wait and go on, or give up
                if self._finished():
                    break
                serve(self._procs, POLL_S)  # wait for trial processes; reads pipes only
        finally:
            self._teardown()
            restore()
        self._report_progress()  # the final figures: the loop may end between ticks
        return self.summary

    def _finished(self) -> bool:
        if self.summary.fatal:
            return True
        if self.state.phase is Phase.STOPPING:
            self.summary.stop_reason = self.state.reason
            return True
        if any(p.running or p.queued or p.inbox or p.dead for p in self._procs):
            return False
        if self.state.phase is Phase.DRAINING:
            self.summary.stop_reason = self.state.reason
            return True
        if self.state.budget_spent and (self.state.study_idle or self._refresh_idle()):
            self.summary.stop_reason = "budget spent"
            return True
        return False

    def _refresh_idle(self) -> bool:
        """Whether the study has nothing running or queued anywhere, read fresh: with the
        budget spent, this worker stays only to take retries of other workers' trials."""
        try:
            self._storage.sync(study_id(self._ostudy))
        except Exception as e:
            if not is_transient(e):
                raise
            return False  # the loop backs off on its next storage call
        progress = self._progress()
        self.state.study_idle = is_idle(progress, grace_s=self._spec.retry.grace_period)
        return self.state.study_idle

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
            taken = take_trials(
                self.study,
                self._storage,
                self._dists,
                self._grid,
                len(wanted),
                self._ahead,
                first=not self._took,
            )
            self._took = True
            self.state.budget_spent, self._uid = taken.budget_spent, taken.uid
            for proc, trial, sampled in zip(wanted, taken.trials, taken.ahead, strict=False):
                self._send(proc, trial, sampled)
        finally:
            self._storage.flush()  # the new trials' parameters, placement and heartbeats

    def _prefetch(self) -> bool:
        typical = self._typical_s
        return self._storage.batched and typical is not None and typical < self.prefetch_below_s

    def _cancel_queued(self) -> None:
        for proc in self._procs:
            if proc.queued is not None and not proc.cancelling and not proc.dead:
                proc.tell(msg.Cancel(trial_id(proc.queued.trial)))
                proc.cancelling = True

    def _send(
        self, proc: TrialProcess, trial: optuna.Trial, ahead: Mapping[str, Any] | None = None
    ) -> None:
        root = self.checkpoint_dir or self._spec.checkpoint_dir
        job = trial_job(
            self.study,
            trial,
            checkpoint_root=root,
            uid=self._uid,
            threads=self._threads,
            ahead=ahead,
        )
        self._storage.record_heartbeat(trial_id(trial))
        trial.set_user_attr("host", self._host)
        trial.set_user_attr("gpu", proc.slot.label)
        trial.set_user_attr("worker", worker_id(self._host, self._pid, proc.slot.index))
        proc.send(msg.RunTrial(job))
        if proc.running is None:
            proc.running = Running(trial=trial, started=time.monotonic())
        else:
            proc.queued = Running(trial=trial, started=time.monotonic())
        log.info("trial %d started on slot %d %s", trial.number, proc.slot.index, job.params)

    # -- applying what trial processes said ----------------------------------------------
    def _apply_inboxes(self) -> None:
        for proc in list(self._procs):
            while proc.inbox:
                self._handle(proc, proc.inbox[0])
                proc.inbox.popleft()  # only once applied: a storage error keeps it queued
            if proc.dead:
                self._on_process_died(proc)

    def _handle(self, proc: TrialProcess, message: msg.ToWorker) -> None:
        match message:
            case msg.Ready():
                proc.ready = True
                log.debug(
                    "slot %d ready after %.2f s", proc.slot.index, time.monotonic() - proc.spawned
                )
            case msg.Fatal(text):
                self.summary.fatal = text
            case msg.Done(outcome):
                self._finish(proc, outcome)
            case msg.Cancelled(cancelled):
                self._requeue(proc, cancelled)
            case msg.Call() | msg.Cast() if proc.running is not None:
                apply_call(self._storage, proc, proc.running.trial, message)

    def _finish(self, proc: TrialProcess, outcome: msg.TrialOutcome) -> None:
        running = proc.running
        if running is None or trial_id(running.trial) != outcome.trial_id:
            return
        attrs: dict[str, Any] = {"duration_s": round(outcome.duration_s, 3)}
        if outcome.reason:
            attrs["fail_reason" if outcome.state == "FAIL" else "prune_reason"] = outcome.reason
        state = TrialState[outcome.state]
        values = list(outcome.values) if outcome.values is not None else None
        closed = close_trial(self._ostudy, running.trial, state, values, attrs)
        if closed and outcome.retry and state == TrialState.FAIL:  # a crashed script
            self.summary.retried += self._recovery.retry(outcome.trial_id)
        proc.running, proc.queued = proc.queued, None
        if proc.running is not None:  # the trial sent ahead started as this one ended
            proc.running.started = time.monotonic()
            self._storage.set_trial_start(trial_id(proc.running.trial), dt.datetime.now())
        self.summary.count(state)
        if outcome.warning:
            log.warning("trial %d: %s", running.trial.number, outcome.warning)
        if outcome.stop_study:  # every trial would be as wrong: stop the study, all workers
            self.study.budget.request_stop("graceful")
            self.summary.fatal = self.summary.fatal or outcome.stop_study
            self.state.drain(outcome.stop_study)
        d = outcome.duration_s
        self._typical_s = d if self._typical_s is None else 0.8 * self._typical_s + 0.2 * d
        log.info(
            "trial %d %s %s", running.trial.number, state.name.lower(), values or outcome.reason
        )

    # -- faults: every trial that will not finish goes through Recovery.give_back ------
    def _on_process_died(self, proc: TrialProcess) -> None:
        code = proc.process.exitcode
        if not proc.ready:  # it never got as far as importing the objective: no use retrying
            self.summary.fatal = (
                self.summary.fatal or f"a trial process exited while starting (code {code})"
            )
            return
        if code == msg.INTERRUPTED_EXIT and self.state.phase is not Phase.STOPPING:
            self._await_own_signal()  # a SIGTERM from outside: the whole job may be ending
        if self.state.preempted:
            self._abandon(proc, self._preempted_reason(), preempted=True)
            return
        self._abandon(proc, f"trial process died (exit code {code})")
        if self.summary.fatal or self.state.phase is Phase.STOPPING:
            return
        log.warning("slot %d: trial process died (exit code %s); restarting", proc.slot.index, code)
        self._respawn(proc)

    def _await_own_signal(self) -> None:
        deadline = time.monotonic() + OWN_SIGNAL_WAIT_S
        while self.state.phase is not Phase.STOPPING and time.monotonic() < deadline:
            time.sleep(0.05)  # the signal handler runs in this thread, between the sleeps

    def _abandon(
        self, proc: TrialProcess, reason: str, *, retry: bool = True, preempted: bool = False
    ) -> None:
        """Give the slot's running trial back (a retry, unless ``retry`` is False; preempted:
        not counted against ``max_retries``); a trial sent ahead goes back to the queue
        untouched."""
        if proc.queued is not None:
            self._requeue(proc, trial_id(proc.queued.trial))
        if proc.running is None:
            return
        given = self._recovery.give_back(
            trial_id(proc.running.trial), reason, retry=retry, preempted=preempted
        )
        if preempted:
            self.summary.preempted += 1
        else:
            self.summary.retried += given.retried
            self.summary.failed += 1
        proc.running = None

    def _requeue(self, proc: TrialProcess, given_back: int) -> None:
        """A trial sent ahead that the slot never started goes back to the study's queue."""
        for attr in ("queued", "running"):  # it was promoted if its predecessor ended first
            item = getattr(proc, attr)
            if item is not None and trial_id(item.trial) == given_back:
                self._storage.requeue(given_back)
                setattr(proc, attr, None)
                log.info("trial %d went back to the queue", item.trial.number)
        proc.cancelling = False

    def _check_processes(self, now: float) -> None:
        limit = self._spec.budget.trial_timeout
        for proc in list(self._procs):
            if limit is not None and proc.running and now - proc.running.started > limit:
                proc.kill()
                self._abandon(proc, f"trial_timeout: ran longer than {limit:g} s", retry=False)
                self._respawn(proc)
            elif not proc.ready and now - proc.spawned > START_TIMEOUT_S:
                self.summary.fatal = f"a trial process did not start within {START_TIMEOUT_S} s"

    # -- periodic upkeep ---------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < self.tick_s and self.state.phase is not Phase.STOPPING:
            return
        self._last_tick = now
        self._check_processes(now)
        if now - self._last_beat >= self._spec.retry.heartbeat_interval:
            self._last_beat = now
            self._storage.beat([i for p in self._procs for i in p.trial_ids()])
            self._recovery.take_over_lost(mine={i for p in self._procs for i in p.trial_ids()})
            self._recount_threads()
        self._storage.flush()  # reports of running trials reach the database once a tick
        self._read_stop_requests(now)
        if self.state.phase is Phase.STOPPING:
            self._end_and_give_back(self._procs, "stopped before finishing; left for a retry")
        progress = self._progress()
        self.state.study_idle = is_idle(progress, grace_s=self._spec.retry.grace_period)
        self._update_fleet()
        if self.on_progress is not None:
            self.on_progress(progress)

    def _read_stop_requests(self, now: float) -> None:
        _, _, stop = self.study.budget.state()
        if stop == "now":
            self.state.stop("stopped now")
        elif stop == "graceful":
            self.state.drain("stopped by hpo stop")
        if self.timeout is not None and now - self._started > self.timeout:
            self.state.drain("timeout")

    def _recount_threads(self) -> None:
        """Share the host's cores among every worker slot on it, as workers come and go."""
        if self.threads is None:
            grace = self._spec.retry.grace_period
            others = host_slots(self.study.budget.engine, self._host, self._pid, fresh_s=grace)
            self._threads = trial_threads(None, others + slot_ranks(self.slots))

    def _progress(self) -> Progress:
        """Study-wide counts, as of this worker's view of the trials; no side effects."""
        return study_progress(self._ostudy, self._spec)

    def _report_progress(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self._progress())
        except Exception as e:  # a progress line is not worth failing a finished run for
            log.debug("no final progress: %s", type(e).__name__)

    def _update_fleet(self) -> None:
        idle = "idle" if self.state.phase is Phase.RUNNING else "draining"
        rows = fleet_rows(self._procs, self.study.budget.study_id, self._started_at, idle=idle)
        upsert_workers(self.study.budget.engine, rows)

    # -- processes ---------------------------------------------------------------------
    def _start_processes(self) -> None:
        """One trial process per slot; each gets trials as soon as it is ready."""
        start_trial_server(self._spec.objective)  # already running if the caller started it
        self._procs = [spawn(slot, self._spec.objective) for slot in self.slots]

    def _respawn(self, proc: TrialProcess) -> None:
        self._procs[self._procs.index(proc)] = spawn(proc.slot, self._spec.objective)

    def _teardown(self) -> None:
        running = [proc for proc in self._procs if proc.running is not None]
        self._end_and_give_back(
            running, "worker stopped before the trial finished; left for a retry"
        )
        stop_all(self._procs)
        try:
            mark_stopped(self.study.budget.engine, self._host, self._pid)
        except Exception as e:  # best effort: the study's trials are what matter
            log.warning("could not mark this worker stopped: %s", type(e).__name__)

    def _end_and_give_back(self, procs: Sequence[TrialProcess], reason: str) -> None:
        """End the trials of ``procs`` now and give them back: preempted, when the worker is."""
        end_all(procs)
        preempted = self.state.preempted
        for proc in procs:
            why = self._preempted_reason() if preempted else reason
            self._abandon(proc, why, preempted=preempted)

    def _preempted_reason(self) -> str:
        return f"{self.state.reason}; queued again to resume from its checkpoints"

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        last = self._last_signal
        if last is not None and last[0] == signum and now - last[1] < SAME_SIGNAL_S:
            # One request, delivered twice: `timeout` signals its child and then its whole
            # process group, so the worker hears it both ways within microseconds.
            return
        self._last_signal = (signum, now)
        self.summary.signal = self.summary.signal or signum  # the exit code tells it
        if signum == signal.SIGUSR1 or (signum == signal.SIGTERM and self._sigterm == "preempt"):
            self.state.preempt(f"worker preempted ({name})")
            log.warning("preempted (%s): ending the running trials now", name)
        elif self.state.phase is Phase.RUNNING:
            self.state.drain(f"{name}: finishing running trials")
            log.warning("finishing running trials; send the signal again to stop now")
        else:
            self.state.stop(f"{name} twice")
