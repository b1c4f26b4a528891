"""``run_command(trial, ctx)``: a command spec's objective, run in hpo's trial process.

It starts the script, then handles what the script reports, in order, on this thread (the
only one that talks to the worker): each epoch goes to ``trial.report`` and the pruner's
verdict back to the script. Pruned, the script gets ``kill_grace_s`` to exit on its own (a
client call already said stop); one that reports again, or reports through its output,
gets SIGTERM to its group, then SIGKILL. Whatever ends the trial (an exception, the
worker's SIGTERM raising in this thread), the ``finally`` ends the group.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hpo._client import LINE_PREFIX, SOCKET_ENV
from hpo.context import TrialContext
from hpo.errors import RetryTrial, StopStudy
from hpo.script._launch import prepare
from hpo.script._metrics import LineParser, Report, as_epoch, as_number
from hpo.script._process import ScriptProcess
from hpo.script._server import ReportServer
from hpo.spec import CommandSpec

#: Seconds the script's group gets between SIGTERM and SIGKILL when the trial is ended from
#: outside (stop --now, trial_timeout, shutdown): less than the worker waits for the trial.
INTERRUPT_GRACE_S = 3.0
_REASON_CHARS = 1500


class ScriptFailed(RuntimeError):
    """The script exited with an error, or without reporting the study's metric."""


def run_command(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float | tuple[float, ...]:
    spec: CommandSpec = ctx.extra["command"]
    if ctx.checkpoint_dir is None:
        raise RuntimeError("a command trial needs its trial directory (ctx.checkpoint_dir)")
    params = {k: ctx.params[k] for k in ctx.params}  # every one is read: the command gets all
    launch = prepare(
        spec,
        params,
        searched=set(trial.distributions),  # sampled; the rest are fixed (or a retrain's)
        number=trial.number,
        seed=ctx.seed,
        trial_dir=Path(ctx.checkpoint_dir).resolve(),  # the script runs elsewhere
    )
    trial.set_user_attr("trial_dir", str(launch.trial_dir))
    if launch.resume:
        trial.set_user_attr("resumed_from", launch.resume)
    # None: one of the script's two output streams ended, so it is exiting; waking on it,
    # rather than on a poll, keeps hpo's share of a short trial to milliseconds.
    events: queue.SimpleQueue[Report | None] = queue.SimpleQueue()
    parser = LineParser(spec.stdout_regex)

    def on_line(line: str) -> None:
        report = parser.parse(line)
        if report is not None:
            events.put(report)
        elif line.strip() and len(parser.unread) < 3:  # shown if the metric never comes
            parser.unread.append(line.strip()[:160])

    run = _Run(trial, ctx, spec, history_file=launch.trial_dir / "history.json")
    if launch.resume:
        run.restore()
    server = ReportServer(events)  # listening: the script may connect at once
    try:
        launch.env[SOCKET_ENV] = server.path
        try:
            # forks before any thread of ours runs
            proc = ScriptProcess(launch, on_line, on_close=lambda: events.put(None))
        except OSError as e:  # on a worker whose machine lacks the program, say
            raise ScriptFailed(f"cannot start {launch.argv[0]!r}: {e.strerror or e}") from None
        server.start()
        ended = False
        try:
            run.follow(proc, events)
            ended = True
        finally:
            proc.end(spec.kill_grace_s if ended else min(spec.kill_grace_s, INTERRUPT_GRACE_S))
    finally:
        server.close()
    return run.result(proc, parser.problems, parser.unread)


@dataclass
class _Run:
    trial: optuna.trial.BaseTrial
    ctx: TrialContext
    spec: CommandSpec
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    verdicts: dict[int, bool] = field(default_factory=dict)
    pruned_at: int | None = None
    end_at: float | None = None  # when to end the script's group (pruned)
    asks: list[Report] = field(default_factory=list)
    history_file: Path | None = None  # the epochs so far, for a retry that resumes

    def restore(self) -> None:
        """A resumed retry's curve starts with the epochs its earlier attempts reported."""
        if self.history_file is None:
            return
        try:
            rows = json.loads(self.history_file.read_text())
        except (OSError, ValueError):
            return
        for row in rows if isinstance(rows, list) else []:
            epoch = as_epoch(row.pop("epoch", None)) if isinstance(row, dict) else None
            metrics = {k: v for k, v in ((k, as_number(v)) for k, v in row.items())}
            if epoch is None:
                continue
            self.history[epoch] = {k: v for k, v in metrics.items() if v is not None}
            value = self.history[epoch].get(self.ctx.metric)
            if value is not None and len(self.ctx.directions) == 1:
                self.trial.report(value, epoch)
                self.verdicts[epoch] = False

    def follow(self, proc: ScriptProcess, events: queue.SimpleQueue[Report | None]) -> None:
        """Handle reports until the script has exited and its output is read to the end."""
        exited_at: float | None = None
        closed = 0  # output streams at their end: then the exit is a moment away
        while True:
            timeout = 0.1 if closed < 2 else 0.002
            if self.end_at is not None:
                timeout = min(timeout, max(0.0, self.end_at - time.monotonic()))
            try:
                report = events.get(timeout=timeout)
                if report is None:
                    closed += 1
                else:
                    self._handle(report)
                continue  # drain what is queued before looking at the process
            except queue.Empty:
                pass
            if self.end_at is not None and time.monotonic() >= self.end_at:
                proc.end(self.spec.kill_grace_s)
                self.end_at = None
            if proc.poll() is not None:
                if exited_at is None:
                    exited_at = time.monotonic()
                    proc.end(self.spec.kill_grace_s)  # what it forked and left behind
                if proc.output_done(0.05) and events.empty():
                    break
                if time.monotonic() - exited_at > 10:
                    break  # a pipe held open by something outside the group

    def _handle(self, report: Report) -> None:
        if report.ask:
            self.asks.append(report)
        elif report.epoch is not None:
            told = self.pruned_at is not None
            stop = self._epoch(report.epoch, report.metrics)
            if report.reply is not None:
                report.reply(stop)
            if stop and report.reply is None:
                self._end_soon(0.0)  # reported through its output: nothing else tells it
            elif stop and not told:
                self._end_soon(self.spec.kill_grace_s)  # the call said stop: time to exit
            # told before and reporting on: it keeps the deadline the verdict gave it
        elif report.reply is not None:
            report.reply(self.pruned_at is not None)
        self._answer_asks()

    def _epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record an epoch; True when the trial must stop (the pruner said so, now or before)."""
        if self.pruned_at is not None:
            return True
        self.history.setdefault(epoch, {}).update(metrics)
        self._save_history()
        metric = self.ctx.metric
        if len(self.ctx.directions) > 1 or metric not in metrics or epoch in self.verdicts:
            return self.verdicts.get(epoch, False)
        self.trial.report(metrics[metric], epoch)
        stop = bool(self.trial.should_prune())
        self.verdicts[epoch] = stop
        if stop:
            self.pruned_at = epoch
        return stop

    def _save_history(self) -> None:
        if self.history_file is not None:
            rows = [{"epoch": e, **self.history[e]} for e in sorted(self.history)]
            with contextlib.suppress(OSError):
                self.history_file.write_text(json.dumps(_json_number(rows)))

    def _end_soon(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        self.end_at = at if self.end_at is None else min(self.end_at, at)

    def _answer_asks(self) -> None:
        """Ranks other than 0 wait for rank 0's verdict on their epoch (or a later one)."""
        waiting = []
        for ask in self.asks:
            assert ask.reply is not None
            since = ask.epoch or 0
            later = [stop for e, stop in self.verdicts.items() if e >= since]
            if self.pruned_at is not None or later:
                ask.reply(self.pruned_at is not None or any(later))
            else:
                waiting.append(ask)
        self.asks = waiting

    # -- how it ended ----------------------------------------------------------------
    def result(
        self, proc: ScriptProcess, problems: list[str], unread: list[str]
    ) -> float | tuple[float, ...]:
        code = proc.popen.returncode
        epochs = sorted(self.history)
        attrs: dict[str, Any] = {
            "history": [{"epoch": e, **self.history[e]} for e in epochs],
            "epochs_run": len(epochs),
            "exit_code": code,
        }
        if self.pruned_at is not None:
            self._set_attrs(attrs, stop_reason="pruned")
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_at}")
        if code != 0:
            self._set_attrs(attrs, stop_reason="failed")
            reason = _exit_reason(code, list(proc.stderr_tail))
            if code < 0 or epochs:  # killed, or crashed after making progress: may resume
                raise RetryTrial(reason)
            raise ScriptFailed(reason)
        chosen = self._chosen_epoch()
        if chosen is None:
            self._set_attrs(attrs, stop_reason="failed")
            self._never_reported(problems, unread)
        assert chosen is not None
        row = self.history[chosen]
        self._set_attrs({**attrs, "best_epoch": chosen, **row}, stop_reason="completed")
        values = tuple(row[m] for m in self.ctx.metrics)
        return values[0] if len(values) == 1 else values

    def _chosen_epoch(self) -> int | None:
        """The epoch whose metrics are the trial's values: the best, or the last."""
        metrics = self.ctx.metrics
        complete = [e for e in sorted(self.history) if all(m in self.history[e] for m in metrics)]
        if not complete:
            return None
        if self.spec.value == "last" or len(self.ctx.metrics) > 1:
            return complete[-1]
        sign = 1.0 if self.ctx.direction == "minimize" else -1.0
        metric = self.ctx.metric

        def key(e: int) -> float:
            v = self.history[e][metric]
            return math.inf if math.isnan(v) else sign * v

        return min(complete, key=key)

    def _never_reported(self, problems: list[str], unread: list[str]) -> None:
        seen = sorted({m for row in self.history.values() for m in row})
        missing = [m for m in self.ctx.metrics if not any(m in r for r in self.history.values())]
        what = ", ".join(repr(m) for m in missing)
        if seen:  # it reports, under other names: every trial would fail the same way
            raise StopStudy(
                f"the command exited 0 but never reported {what}; it reported: "
                f"{', '.join(seen)} (the spec's metric must be one of them)"
            )
        how = (
            f"call hpo.report(epoch, {missing[0]}=...) or print "
            f'\'{LINE_PREFIX}{{"epoch": 1, "{missing[0]}": ...}}\''
        )
        if self.spec.stdout_regex:
            how += ", or print lines script.stdout_regex matches"
        extra = f"; ignored: {problems[0]}" if problems else ""
        printed = f"; it printed {unread[0]!r}, which no report matched" if unread else ""
        # Nothing reported at all is how the script reports (or a regex that does not match
        # its lines): every trial would spend its budget failing the same way.
        raise StopStudy(f"the command exited 0 without reporting {what}: {how}{extra}{printed}")

    def _set_attrs(self, attrs: Mapping[str, Any], *, stop_reason: str) -> None:
        for key, value in {**attrs, "stop_reason": stop_reason}.items():
            self.trial.set_user_attr(key, _json_number(value))


def _json_number(value: Any) -> Any:
    """NaN and infinities as strings: the stored attributes are JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return value


def _exit_reason(code: int, tail: list[str]) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        head = f"the command was killed by {name}"
        if name == "SIGKILL":
            head += " (out of memory?)"
    else:
        head = f"the command exited with code {code}"
    lines = [line.strip() for line in tail[-5:]]
    text = f"{head}: {' | '.join(lines)}" if lines else f"{head} (nothing on stderr)"
    return text if len(text) <= _REASON_CHARS else "..." + text[-_REASON_CHARS:]
