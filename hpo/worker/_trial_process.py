"""The trial process: runs objectives for a worker, one trial at a time.

A worker keeps one such process per GPU slot. The process never touches the database: its
trial is a :class:`RemoteTrial` whose parameters were sampled by the worker, and whose
``report`` / ``should_prune`` / ``set_user_attr`` travel over a pipe to the worker, which
applies them to the real Optuna trial. So a process costs no database connection, imports
torch and the objective once, and can be killed at any time without corrupting anything.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import datetime as dt
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.trial import BaseTrial

from hpo.context import TrackedParams, TrialContext
from hpo.errors import RetryTrial, StopStudy, TrialInterrupted
from hpo.worker import _protocol as msg
from hpo.worker._protocol import Method, TrialJob, TrialOutcome

#: Set by the worker before its first trial process starts: the objective's module, which
#: the forkserver (``hpo.worker._forkserver``) imports once for all of them.
OBJECTIVE_MODULE_ENV = "HPO_OBJECTIVE_MODULE"
#: "forkserver" (the default) or "spawn": how the worker starts trial processes.
START_METHOD_ENV = "HPO_START_METHOD"


class RemoteError(RuntimeError):
    """An Optuna call the worker made on this trial's behalf raised."""


class DistributionMismatch(ValueError):
    """The objective's suggest_* for a searched parameter differs from the spec's."""


class _Link:
    """The pipe to the worker, as the trial process reads it.

    The worker may send the next trial (and cancel it again) while this one runs, so a
    reply to a call can arrive behind them: those wait in ``backlog`` for :meth:`next_job`.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.backlog: collections.deque[msg.ToTrial] = collections.deque()

    def send(self, message: msg.ToWorker) -> None:
        self.conn.send(message)

    def reply(self) -> msg.Reply:
        while True:
            message = self.conn.recv()
            if isinstance(message, msg.Reply):
                return message
            self.backlog.append(message)

    def next_job(self) -> TrialJob | None:
        """The next trial to run, or None to exit; drops cancelled trials, saying so."""
        while True:
            while self.conn.poll():  # cancels that came in behind their trial count too
                self.backlog.append(self.conn.recv())
            if not self.backlog:
                self.backlog.append(self.conn.recv())
            cancelled = {m.trial_id for m in self.backlog if isinstance(m, msg.Cancel)}
            message = self.backlog.popleft()
            if isinstance(message, msg.Exit):
                return None
            if not isinstance(message, msg.RunTrial):
                continue  # a cancel whose trial already ran
            if message.job.trial_id not in cancelled:
                return message.job
            self.conn.send(msg.Cancelled(message.job.trial_id))


class RemoteTrial(BaseTrial):
    """An Optuna trial whose storage operations are done by the worker process.

    Parameters in the spec's search space were sampled before the trial started, so
    ``suggest_*`` for them is a local lookup. A parameter outside the spec (a plain Optuna
    objective's define-by-run parameter) that every finished trial asked for was sampled
    ahead too: asked with the same distribution, its value is used and the worker stores it
    (a message, no round trip); any other is sampled by the worker on request.
    """

    def __init__(self, link: _Link, job: TrialJob) -> None:
        self._link = link
        self._job = job
        self._params = dict(job.params)
        self._dists = {k: json_to_distribution(v) for k, v in job.distributions.items()}
        self._user_attrs = dict(job.user_attrs)
        self._system_attrs = dict(job.system_attrs)
        # The spec's search space, as sampled by the worker: what suggest_* must agree with.
        self._space = dict(self._dists)
        # Sampled ahead, not the spec's: never checked against, nor required to be read.
        self._ahead = {k: (v, json_to_distribution(d)) for k, (v, d) in job.ahead.items()}
        self.suggested: set[str] = set()
        self.params_read = False  # trial.params was read: every sampled value counts as used
        self.stop_reason: str | None = None

    # -- sampling ----------------------------------------------------------------------
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        from optuna.distributions import FloatDistribution

        return self._suggest(name, FloatDistribution(low, high, step=step, log=log))

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self.suggest_float(name, low, high, step=q)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        from optuna.distributions import IntDistribution

        return int(self._suggest(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        from optuna.distributions import CategoricalDistribution

        return self._suggest(name, CategoricalDistribution(choices))

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        self.suggested.add(name)
        spec = self._space.get(name)
        if spec is not None and spec != dist:
            # Optuna would keep the spec's value silently (a float outside the objective's
            # own range) or fail every trial without naming the parameter (categorical).
            self.stop_reason = (
                f"search_space.{name}: the objective asks for {_shown(dist)} but the spec "
                f"searches {_shown(spec)}; make them the same, or leave {name!r} out of "
                "search_space so the objective's own suggest_* samples it"
            )
            raise DistributionMismatch(self.stop_reason)
        if name in self._params and self._dists.get(name) == dist:
            return self._params[name]
        ahead = self._ahead.pop(name, None)
        if ahead is not None and ahead[1] == dist:
            # The worker's Trial holds this very value as a relative sample: it stores it.
            value = ahead[0]
            self._link.send(msg.Cast(Method.SUGGEST, (name, distribution_to_json(dist))))
        else:  # unseen, or another distribution than sampled ahead: the objective's own
            value = self._call(Method.SUGGEST, name, distribution_to_json(dist))
        self._params[name] = value
        self._dists[name] = dist
        return value

    # -- reporting ---------------------------------------------------------------------
    def report(self, value: float, step: int) -> None:
        if len(self._job.context.directions) > 1:
            raise NotImplementedError("trial.report is not supported for multi-objective studies")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"the reported value must be a float, got {value!r}") from None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"the step must be a non-negative int, got {step!r}")
        # Fire and forget: the pipe keeps order, and a round trip per epoch buys nothing.
        self._link.send(msg.Cast(Method.REPORT, (value, step)))

    def should_prune(self) -> bool:
        if len(self._job.context.directions) > 1:
            raise NotImplementedError("trial.should_prune is not supported for multi-objective")
        return bool(self._call(Method.SHOULD_PRUNE))

    def set_user_attr(self, key: str, value: Any) -> None:
        self._user_attrs[key] = value
        self._link.send(msg.Cast(Method.SET_USER_ATTR, (key, value)))

    def set_system_attr(self, key: str, value: Any) -> None:
        self._system_attrs[key] = value
        self._link.send(msg.Cast(Method.SET_SYSTEM_ATTR, (key, value)))

    def set_constraint(self, key: str, value: float) -> None:
        raise NotImplementedError("constraints are not supported by hpo workers")

    # -- read-only views ---------------------------------------------------------------
    @property
    def number(self) -> int:
        return self._job.number

    @property
    def params(self) -> dict[str, Any]:
        self.params_read = True
        return dict(self._params)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._user_attrs)

    @property
    def system_attrs(self) -> dict[str, Any]:
        return dict(self._system_attrs)

    @property
    def datetime_start(self) -> dt.datetime | None:
        return self._job.datetime_start

    @property
    def relative_params(self) -> dict[str, Any]:
        return {}

    def _call(self, method: Method, *args: Any) -> Any:
        self._link.send(msg.Call(method, args))
        reply = self._link.reply()
        if not reply.ok:
            raise RemoteError(reply.value)
        return reply.value


def main(conn: Connection, objective_ref: str, env: Mapping[str, str], parent: int) -> None:
    """Entry point of a trial process (spawned, so CUDA is initialised here, not inherited)."""
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES must be set before torch is imported
    _die_with_parent(parent)
    _own_signals()
    try:
        _serve(conn, objective_ref)
    except TrialInterrupted:
        # The worker ended the trial and gives it back, or a signal to every process of a
        # Slurm job did (the exit code tells the worker); the objective's finally ran.
        sys.exit(msg.INTERRUPTED_EXIT)
    except (EOFError, BrokenPipeError, OSError):
        return  # the worker is gone


def _serve(conn: Connection, objective_ref: str) -> None:
    from hpo.errors import SpecError
    from hpo.spec import objective_arity, resolve_objective

    try:
        objective = resolve_objective(objective_ref)
        arity = objective_arity(objective)
    except SpecError as e:
        conn.send(msg.Fatal(str(e)))
        return
    conn.send(msg.Ready(os.getpid()))
    link = _Link(conn)
    while (job := link.next_job()) is not None:
        _set_threads(job.threads)
        conn.send(msg.Done(run_trial(link, job, objective, arity)))


def _own_signals() -> None:
    """Only the worker decides when a trial ends.

    A terminal's Ctrl-C, ``timeout``, systemd and Slurm signal a whole process group: in a
    group of its own, the process hears only its worker, which sends SIGTERM to end the trial
    now. That raises :class:`TrialInterrupted` here, so the objective's ``finally`` blocks
    run (a script's process group is ended there) before the process exits.
    """
    with contextlib.suppress(OSError):  # already a group leader (a session leader, say)
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # preemption's warning is the worker's
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise TrialInterrupted(signal.Signals(signum).name)


def run_trial(
    link: _Link, job: TrialJob, objective: Callable[..., Any], arity: int
) -> TrialOutcome:
    """Call the objective and map how it ended to a trial state, the way Optuna does."""
    trial = RemoteTrial(link, job)
    ctx = dataclasses.replace(job.context, params=TrackedParams(job.context.params))
    start = time.perf_counter()
    n = len(job.context.directions)
    retry = False
    try:
        result = objective(trial) if arity == 1 else objective(trial, ctx)
        values = _as_values(result, n)
        state, reason = "COMPLETE", None
    except RetryTrial as e:  # failed, and a retry resumes from the trial's checkpoints
        values, state, reason, retry = None, "FAIL", " ".join(str(e).split()), True
    except optuna.TrialPruned as e:
        values, state, reason = None, "PRUNED", str(e) or None
    except (BrokenPipeError, EOFError):
        raise  # the worker is gone; nothing left to report to
    except Exception as e:  # an objective may raise anything; the trial fails, we go on
        values, state, reason = None, "FAIL", f"{type(e).__name__}: {' '.join(str(e).split())}"
        if isinstance(e, StopStudy):  # every trial would fail the same way
            trial.stop_reason = trial.stop_reason or " ".join(str(e).split())
        _release_memory(e)
    # Only a completed trial shows what the objective reads: a failed or pruned one may have
    # stopped before it read the rest (an objective that prunes bad combinations up front).
    complete = state == "COMPLETE"
    stop = trial.stop_reason or (_never_read(job, trial, ctx) if complete else None)
    unused = _unused_fixed(job, ctx, arity) if complete and stop is None else []
    if unused:
        trial.set_user_attr("unused_fixed", unused)
    if stop is not None:
        values, state, reason = None, "FAIL", stop
    return TrialOutcome(
        trial_id=job.trial_id,
        state=state,
        values=values,
        reason=reason,
        duration_s=time.perf_counter() - start,
        stop_study=stop,
        retry=retry and stop is None,
        warning=_unused_warning(
            [_with_hint(k, trial, ctx, set(job.context.params)) for k in unused], arity
        ),
    )


def _with_hint(key: str, trial: RemoteTrial, ctx: TrialContext, exclude: set[str]) -> str:
    """``key``, with the key the objective looked for that it may be a typo of."""
    hint = _closest(key, trial, ctx, exclude=exclude)
    return f"{key} (did you mean {hint!r}?)" if hint else key


def _unused_warning(unused: list[str], arity: int) -> str | None:
    if not unused:
        return None
    who = "a plain objective f(trial) cannot read" if arity == 1 else "the objective never read"
    return f"fixed keys {who}: {', '.join(unused)}"


def _ctx_read(ctx: TrialContext) -> set[str]:
    return ctx.params.read if isinstance(ctx.params, TrackedParams) else set(ctx.params)


def _never_read(job: TrialJob, trial: RemoteTrial, ctx: TrialContext) -> str | None:
    """Why the study must stop: a searched parameter this completed trial never read."""
    if trial.params_read:
        return None  # it read trial.params, the searched values all at once
    read = _ctx_read(ctx) | trial.suggested
    unread = [name for name in job.params if name not in read]
    if not unread:
        return None
    name = unread[0]
    hint = _closest(name, trial, ctx, exclude=set(job.params))
    if hint:
        return (
            f"search_space.{name}: trial {job.number} completed without reading it (did you "
            f"mean {hint!r}?); the study is stopped rather than search a parameter nothing uses"
        )
    return (
        f"search_space.{name}: trial {job.number} completed without reading it, so the study is "
        "stopped; if the objective reads it only under a condition, leave it out of "
        "search_space and let the objective's own suggest_* sample it when it needs it"
    )


def _unused_fixed(job: TrialJob, ctx: TrialContext, arity: int) -> list[str]:
    """Fixed keys nothing read (a plain objective ``f(trial)`` cannot see any of them)."""
    fixed = [k for k in job.context.params if k not in job.params]
    return [k for k in fixed if arity == 1 or k not in _ctx_read(ctx)]


def _closest(name: str, trial: RemoteTrial, ctx: TrialContext, exclude: set[str]) -> str | None:
    """A key the objective looked for, or the training loop reads, that ``name`` may mean."""
    from hpo.objectives import closest_param

    known = set(trial.suggested)
    if isinstance(ctx.params, TrackedParams):
        known |= ctx.params.asked
    if "torch" in sys.modules:  # the training loop's keys, when the objective may use it
        with contextlib.suppress(Exception):
            from hpo.training import TrainConfig

            known |= {f.name for f in dataclasses.fields(TrainConfig)}
    return closest_param(name, known - exclude)


def _shown(dist: BaseDistribution) -> str:
    """A distribution as a spec writes it."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"categorical {list(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    low, high, step, log = (getattr(dist, k, None) for k in ("low", "high", "step", "log"))
    extra = (", log: true" if log else "") + (
        f", step: {step:g}" if step is not None and not (kind == "int" and step == 1) else ""
    )
    return f"{kind} [{low:g}, {high:g}{extra}]" if low is not None else repr(dist)


def _as_values(result: Any, n: int) -> tuple[float, ...]:
    seq = result if isinstance(result, list | tuple) else (result,)
    if len(seq) != n:
        raise ValueError(f"the objective returned {len(seq)} values for {n} objective(s)")
    values = []
    for v in seq:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"the objective returned {v!r}, not a number") from None
        if math.isnan(f):
            raise ValueError("the objective returned NaN")
        values.append(f)
    return tuple(values)


def _release_memory(e: BaseException) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _set_threads(threads: int | None) -> None:
    """Size this process's thread pools for the next trial (the worker recounts the slots
    on the host as workers come and go). OMP_NUM_THREADS is set too, for what the objective
    starts or imports itself; it cannot resize a pool that already exists, torch's can."""
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        with contextlib.suppress(RuntimeError):
            torch.set_num_threads(threads)


def _die_with_parent(worker: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no orphan keeps a GPU.

    The parent is the worker's forkserver, which exits the moment the worker dies.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    # The worker died before prctl took effect (then its forkserver is on its way out too).
    try:
        os.kill(worker, 0)
    except ProcessLookupError:
        os._exit(1)
    except PermissionError:
        pass  # alive, as another user: cannot happen for our own parent, but is not death
