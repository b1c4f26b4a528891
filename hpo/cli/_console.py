"""Everything the CLI prints: progress, tables, YAML/JSON/CSV documents."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from hpo.reporting import Snapshot
    from hpo.study import Retrained, RunningTrial, Status, Study, StudySummary
    from hpo.worker import Summary

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress(name: str) -> Iterator[Callable[[StudySummary], None]]:
    """A live bar on a terminal; one line per change of the counts otherwise (logs, CI)."""
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        bar = Bar(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        task = bar.add_task(name, total=None, detail="starting")
        with bar:

            def update(s: StudySummary) -> None:
                bar.update(task, completed=s.finished, total=s.budget, detail=_detail(s))

            yield update
        return

    last: list[Any] = [None]

    def log_line(s: StudySummary) -> None:
        key = (s.finished, tuple(s.counts.values()), _best_text(s))
        if key != last[0]:
            last[0] = key
            err.print(f"[{name}] {finished_text(s)} | {_detail(s)}", markup=False)

    yield log_line


def _detail(s: StudySummary) -> str:
    return f"best {_best_text(s)} | {counts_text(s)}"


def finished_text(s: StudySummary) -> str:
    """``54/60 finished``: the finished logical trials against the budget."""
    budget = "unlimited" if s.budget is None else str(s.budget)
    return f"{s.finished}/{budget} finished"


def counts_text(s: StudySummary) -> str:
    """The outcomes of the attempts, in one order, for every view: zeros left out."""
    words = [f"{k} {n}" for k, n in s.counts.items() if n]
    if s.attempts != s.logical:
        words.append(f"{s.logical} logical trials in {s.attempts} attempts")
    return ", ".join(words) or "no trials"


def _best_text(s: StudySummary) -> str:
    if s.best is not None:
        return f"{_fmt(s.best.values[0])} (trial #{s.best.number}, {s.metrics[0]})"
    if s.best_trials:
        return f"Pareto front of {len(s.best_trials)} trial(s)"
    return "-"


def print_summary(study: Study, summary: Summary) -> StudySummary:
    """Print what this worker did and where the study stands; return the study's summary."""
    from hpo.study import study_summary

    s = study_summary(study, window_s=None)
    err.print(
        f"{study.name}: this worker ran {summary.ran} trial(s) "
        # The README's words: a failed attempt that was retried is "retried", not "failed".
        f"({summary.complete} complete, {summary.pruned} pruned, "
        f"{max(0, summary.failed - summary.retried)} failed, {summary.retried} retried"
        + (f", {summary.preempted} preempted" if summary.preempted else "")
        + "); "
        f"{summary.stop_reason or 'done'}"
    )
    err.print(f"study {study.name}: {finished_text(s)} ({counts_text(s)})", markup=False)
    if summary.stop_reason == "stopped by hpo stop":
        err.print(
            f"the study stays stopped until `hpo run SPEC` or `hpo create SPEC` for "
            f"{study.name!r} clears the stop",
            markup=False,
        )
    _print_failures(s)
    _print_best(s)
    return s


def _print_failures(s: StudySummary) -> None:
    """The commonest reasons attempts failed, under their outcome (failed, retried,
    preempted): a typo in `fixed` fails every trial the same way."""
    from collections import Counter

    reasons = Counter(
        (s.outcomes[t.number], str(t.user_attrs.get("fail_reason", "no reason recorded")))
        for t in s.trials
        if s.outcomes[t.number] in ("failed", "retried", "preempted")
    )
    for (outcome, reason), n in reasons.most_common(3):
        err.print(f"{outcome} {n}x: {reason}", markup=False)


def _print_best(st: StudySummary) -> None:
    if not st.best_trials:
        out.print("no completed trial")
        return
    if st.best is not None:
        # One trial: a vertical table stays readable however many parameters there are.
        t = st.best
        table = Table(title=f"best trial #{t.number}", show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value")
        table.add_row(st.metrics[0], _fmt(t.value))
        for k, v in t.params.items():
            table.add_row(k, _fmt(v))
        out.print(table)
        return
    table = Table(title=f"Pareto front ({len(st.best_trials)} trials)")
    table.add_column("trial", justify="right")
    for m, d in zip(st.metrics, st.directions, strict=True):
        table.add_column(f"{m} ({d[:3]})", justify="right")
    params = sorted({k for t in st.best_trials for k in t.params})
    for k in params:
        table.add_column(k)
    for t in st.best_trials[:20]:
        table.add_row(
            str(t.number), *[_fmt(v) for v in t.values], *[_fmt(t.params.get(k)) for k in params]
        )
    out.print(table)


def note(text: str) -> None:
    err.print(f"hpo: note: {text}", markup=False)


def print_retrained(done: Retrained, objective: str) -> None:
    """What `hpo retrain` trained and saved, and plainly what it could not save."""
    for text in done.notes:
        note(text)
    what = f"trial #{done.trial}" if done.trial is not None else "your configuration"
    out.print(f"retrained {what} with seed {done.seed}: wrote {done.manifest}", markup=False)
    if done.checkpoints:
        out.print(f"model checkpoints beside it: {', '.join(done.checkpoints)}", markup=False)
    elif done.plain:
        out.print(
            f"no model was saved: {objective} is a plain Optuna objective f(trial), whose model "
            "hpo cannot see; the manifest has its params, values, seed and versions. To keep "
            "the model, save it in the objective, or take f(trial, ctx) and save it under "
            "ctx.checkpoint_dir.",
            markup=False,
        )
    else:
        out.print(
            f"no model was saved: {objective} wrote no *.pt file to its checkpoint directory "
            f"({done.manifest.parent})",
            markup=False,
        )


def print_status(st: Status, fmt: str) -> None:
    s = st.summary
    if fmt == "json":
        out.print_json(json.dumps(status_dict(st), default=str))
        return
    out.print(f"[bold]{s.name}[/]  {finished_text(s)}  ({counts_text(s)})", highlight=False)
    out.print(f"study {s.phase}" + (f"; stop requested: {s.stop}" if s.stop else ""))
    _print_best(s)
    if s.running_trials:
        table = Table(title="running trials")
        for col in ("trial", "host", "gpu", "epoch", "started"):
            table.add_column(col)
        for r in s.running_trials:
            table.add_row(
                str(r.number),
                r.host or "-",
                r.gpu or "cpu",
                "-" if r.epoch is None else str(r.epoch),
                r.started.strftime("%H:%M:%S") if r.started else "-",
            )
        out.print(table)
    if st.workers:
        table = Table(title="workers")
        jobs = any(w.get("job") for w in st.workers)  # the scheduler's job, when one ran it
        cols = ("job",) * jobs + ("host", "pid", "slot", "gpu", "state", "trial")
        for col in (*cols, "last heartbeat (UTC)"):
            table.add_column(col)
        for w in st.workers:
            table.add_row(
                *(w.get("job") or "-",) * jobs,
                w["host"],
                str(w["pid"]),
                str(w["slot"]),
                w["gpu"] or "cpu",
                w["state"],
                "-" if w["trial_number"] is None else str(w["trial_number"]),
                w["heartbeat_at"].strftime("%Y-%m-%d %H:%M:%S"),
            )
        out.print(table)


def status_dict(st: Status) -> dict[str, Any]:
    s = st.summary
    return {
        **s.to_dict(),
        "best": [
            {"trial": t.number, "values": t.values, "params": t.params} for t in s.best_trials
        ],
        "running": [
            {"trial": r.number, "host": r.host, "gpu": r.gpu, "epoch": r.epoch}
            for r in s.running_trials
        ],
        "workers": [dict(w) for w in st.workers],
    }


def print_list(studies: Sequence[Mapping[str, Any]], fmt: str) -> None:
    if fmt == "json":
        out.print_json(json.dumps(list(studies)))
        return
    if not studies:
        out.print("no studies")
        return
    table = Table()
    for col in ("study", "directions", "trials", "created"):
        table.add_column(col)
    for s in studies:
        table.add_row(s["name"], ",".join(s["directions"]), str(s["trials"]), s["created"] or "-")
    out.print(table)


def dump(doc: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, default=str) + "\n"
    return yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False)


def export_text(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2) + "\n"
    params = sorted({k for r in rows for k in r["params"]})
    attrs = sorted({k for r in rows for k in r["user_attrs"]})
    n_values = max((len(r["values"] or ()) for r in rows), default=1)
    value_cols = ["value"] if n_values <= 1 else [f"value_{i}" for i in range(n_values)]
    header = [
        "number",
        "logical_trial",
        "outcome",
        "state",
        *value_cols,
        "datetime_start",
        "datetime_complete",
        "duration_s",
        "epochs_run",
        "retry_of",
        *[f"params_{k}" for k in params],
        *[f"user_attrs_{k}" for k in attrs],
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        values = list(r["values"] or [])
        values += [None] * (len(value_cols) - len(values))
        w.writerow(
            [
                r["number"],
                r["logical_trial"],
                r["outcome"],
                r["state"],
                *values,
                r["datetime_start"],
                r["datetime_complete"],
                r["duration_s"],
                r["epochs_run"],
                r["retry_of"],
                *[_cell(r["params"].get(k)) for k in params],
                *[_cell(r["user_attrs"].get(k)) for k in attrs],
            ]
        )
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v)
    return "" if v is None else v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# -- hpo status --watch -------------------------------------------------------------------


@contextlib.contextmanager
def watching() -> Iterator[Callable[[Snapshot], None]]:
    """A table redrawn in place on a terminal; a block of plain lines per refresh otherwise."""
    if out.is_terminal:
        from rich.live import Live

        with Live(console=out, auto_refresh=False, transient=False) as live:
            yield lambda snap: live.update(watch_table(snap), refresh=True)
        return

    def print_block(snap: Snapshot) -> None:
        out.print("\n".join(watch_lines(snap)) + "\n", markup=False)

    yield print_block


def watch_table(snap: Snapshot) -> Table:
    table = Table(title=f"{snap.name}  {snap.at:%H:%M:%S}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in _watch_rows(snap):
        table.add_row(key, value)
    if snap.running_trials:
        runs = Table("trial", "worker", "gpu", "epoch", "running for", box=None, pad_edge=False)
        for r in snap.running_trials:
            runs.add_row(*_running_cells(r))
        table.add_row("running", runs)
    return table


def watch_lines(snap: Snapshot) -> list[str]:
    """The same content as :func:`watch_table`, one line per row, for logs and pipes."""
    lines = [f"[{snap.at:%H:%M:%S}] {snap.name}"]
    lines += [f"  {key}: {value}" for key, value in _watch_rows(snap)]
    for r in snap.running_trials:
        number, worker, gpu, epoch, elapsed = _running_cells(r)
        lines.append(f"  running #{number} on {worker} ({gpu}): epoch {epoch}, {elapsed}")
    return lines


def _watch_rows(snap: Snapshot) -> list[tuple[str, str]]:
    rate = "-" if snap.rate_per_min is None else f"{snap.rate_per_min:.2f} trials/min"
    rows = [
        (
            "finished",
            f"{snap.finished}/{'unlimited' if snap.budget is None else snap.budget}"
            f"  ({counts_text(snap)})",
        ),
        ("best", _best_text(snap)),
        ("rate", rate),
        ("time to finish", _eta(snap)),
    ]
    if snap.stop:
        rows.append(("stop requested", snap.stop))
    return rows


def _running_cells(r: RunningTrial) -> tuple[str, str, str, str, str]:
    elapsed = "-" if r.elapsed_s is None else _seconds(r.elapsed_s)
    epoch = "-" if r.epoch is None else str(r.epoch)
    return str(r.number), r.worker, r.gpu or "cpu", epoch, elapsed


def _eta(snap: Snapshot) -> str:
    if snap.phase == "finished":
        return "finished"
    if snap.phase == "stopping":
        return f"stopping (hpo stop): {snap.running} trial(s) still running"
    if snap.phase == "stopped":
        left = f", {snap.waiting} waiting" if snap.waiting else ""
        return f"stopped by hpo stop ({snap.remaining} trial(s) left{left})"
    if snap.eta_s is None:
        return "-" if snap.budget is not None else "- (no trial budget)"
    return f"~{_seconds(snap.eta_s)} ({snap.remaining} trial(s) left)"


def _seconds(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
