"""The report's figures: one function per plot, each from the study summary to a PNG.

Plots are drawn on bare ``Figure`` objects with the Agg canvas rather than through pyplot:
no global backend state is touched, so a report is safe to write from a notebook or a
server, and matplotlib is imported only when one is. A plot that does not apply (no
intermediate values, a plain objective without a training history, a single parameter)
becomes a one-line note instead of an error. Trials are coloured and counted by their
outcome (:data:`hpo.study.OUTCOMES`), the words and numbers ``hpo status`` uses.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from hpo.study import OUTCOMES
from hpo.study import sign as _sign

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from hpo.study import Study, StudySummary

#: Colours by outcome, shared by every plot so that "orange" means pruned everywhere.
OUTCOME_COLORS = {
    "complete": "#1f77b4",
    "pruned": "#ff7f0e",
    "failed": "#d62728",
    "preempted": "#8c564b",
    "retried": "#9467bd",
    "running": "#2ca02c",
    "waiting": "#7f7f7f",
}
_LOSS_KEYS = ("train_loss", "val_loss")


@dataclass(frozen=True)
class Section:
    """One plot of the report: its PNG, or a note saying why it was left out."""

    key: str  # HTML id and PNG file stem
    title: str
    png: bytes | None = None
    note: str = ""
    data: Mapping[str, int] = field(default_factory=dict)  # data-* attributes


@dataclass(frozen=True)
class ReportData:
    """What every plot reads: the study summary, read once per report."""

    study: Study
    summary: StudySummary
    now: dt.datetime

    @property
    def trials(self) -> Sequence[optuna.trial.FrozenTrial]:
        return self.summary.trials

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.study.spec.metrics

    @property
    def directions(self) -> tuple[str, ...]:
        return self.study.spec.directions

    @property
    def complete(self) -> list[optuna.trial.FrozenTrial]:
        return self.summary.complete_trials()

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The best trial; with several objectives, the Pareto trial best on the first one."""
        return self.summary.leader()

    def outcome(self, t: optuna.trial.FrozenTrial) -> str:
        return self.summary.outcomes[t.number]


def sections(d: ReportData) -> list[Section]:
    """Every plot of the report, in page order."""
    return [make(d) for make in _SECTIONS]


# -- plots ------------------------------------------------------------------------------


def _history(d: ReportData) -> Section:
    if len(d.directions) > 1:
        return _pareto(d)
    title = "Optimization history"
    done = sorted(d.complete, key=lambda t: t.number)
    if not done:
        return Section("history", title, note="No completed trial yet.")
    sign = _sign(d.directions[0])
    xs = [t.number for t in done]
    ys = [t.values[0] for t in done]
    best, best_so_far = math.inf, []
    for y in ys:
        best = min(best, sign * y)
        best_so_far.append(sign * best)
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 4)
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=18, color=OUTCOME_COLORS["complete"], label="complete trial")
    ax.step(xs, best_so_far, where="post", color="#d62728", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_label(f"{d.metrics[0]} ({d.directions[0]})"))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return Section("history", title, _png(fig), data={"points": len(done)})


def _pareto(d: ReportData) -> Section:
    title = "Pareto front"
    done = d.complete
    if not done:
        return Section("history", title, note="No completed trial yet.")
    front = {t.number for t in d.summary.best_trials}
    fig = _figure(7, 5)
    ax = fig.add_subplot()
    for on_front, color, label in ((False, "#9ecae1", "trial"), (True, "#d62728", "Pareto front")):
        pts = [t.values for t in done if (t.number in front) == on_front]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=color, label=label)
    ax.set_xlabel(_label(f"{d.metrics[0]} ({d.directions[0]})"))
    ax.set_ylabel(_label(f"{d.metrics[1]} ({d.directions[1]})"))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    note = ""
    if len(d.metrics) > 2:
        note = f"The first two of {len(d.metrics)} objectives; the front is over all of them."
    return Section("history", title, _png(fig), note, {"points": len(done), "front": len(front)})


def _importances(d: ReportData) -> Section:
    import optuna

    title = "Parameter importances"
    done = d.complete
    if len(done) < 2:
        return Section("importances", title, note="Needs at least 2 completed trials.")
    # Importance is defined over the parameters every completed trial has and that vary.
    names = set.intersection(*(set(t.params) for t in done))
    names = {n for n in names if not done[0].distributions[n].single()}
    if len(names) < 2:
        return Section("importances", title, note="Needs at least 2 varying parameters.")
    results: list[dict[str, float]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" and degenerate-data warnings
            for i in range(len(d.metrics)):
                results.append(
                    optuna.importance.get_param_importances(
                        d.study.optuna, params=sorted(names), target=_value_of(i)
                    )
                )
    except (ValueError, RuntimeError, ZeroDivisionError, FloatingPointError) as e:
        return Section("importances", title, note=f"Could not compute: {_one_line(e)}")
    fig = _figure(8, 1 + 0.4 * len(names) * len(results))
    axes = fig.subplots(len(results), 1, squeeze=False)[:, 0]
    for ax, metric, imp in zip(axes, d.metrics, results, strict=True):
        order = sorted(imp, key=lambda k: imp[k])
        ax.barh([_label(k) for k in order], [imp[k] for k in order], color="#1f77b4")
        ax.set_xlabel(_label(f"importance for {metric}"))
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    return Section("importances", title, _png(fig), data={"params": len(names)})


def _parallel(d: ReportData) -> Section:
    title = "Parallel coordinates"
    done = d.complete
    names = _param_order(d, done)
    if not done or not names:
        return Section("parallel", title, note="Needs a completed trial with parameters.")
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    # Axis 0 is the objective, then one axis per parameter, each scaled to [0, 1]; one
    # LineCollection draws every trial in one call, however many there are.
    values = [t.values[0] for t in done]
    lo, hi = min(values), max(values)
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    # Darker is better whatever the direction, so the eye follows the dark lines.
    cmap = colormaps["viridis" if _sign(d.directions[0]) > 0 else "viridis_r"]
    # worst first, so the best lines are drawn on top
    ranked = sorted(zip(done, values, strict=True), key=lambda tv: -norm(tv[1]))
    lines = LineCollection(
        [list(enumerate([float(norm(v)), *(_scaled(t, n) for n in names)])) for t, v in ranked],
        array=[v for _, v in ranked],
        cmap=cmap,
        norm=norm,
        alpha=0.7,
        linewidths=1,
    )
    fig = _figure(max(6, 1.6 * (len(names) + 1)), 4.5)
    ax = fig.add_subplot()
    ax.add_collection(lines)
    labels = [d.metrics[0], *names]
    ax.set_xticks(range(len(labels)), [_label(n) for n in labels], rotation=20)
    ax.set_yticks([])
    for x, lohi in enumerate([(lo, hi), *(_range_text(done, n) for n in names)]):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, value, dy, va in ((0, lohi[0], -2, "top"), (1, lohi[1], 2, "bottom")):
            text = _label(_fmt(value))
            ax.annotate(text, (x, y), (3, dy), textcoords="offset points", fontsize=7, va=va)
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.1, len(labels) - 0.6)  # room for the last axis' range labels
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(lines, ax=ax, label=_label(d.metrics[0]))
    return Section("parallel", title, _png(fig), data={"lines": len(done)})


def _intermediate(d: ReportData) -> Section:
    title = "Intermediate values (learning curves)"
    curves = [t for t in d.trials if t.intermediate_values]
    if not curves:
        return Section("intermediate", title, note="No trial reported intermediate values.")
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    # One collection per outcome; pruned trials go last and get an x where they were cut.
    for outcome in ("complete", "failed", "preempted", "retried", "running", "pruned"):
        mine = [t for t in curves if d.outcome(t) == outcome]
        if not mine:
            continue
        color = OUTCOME_COLORS[outcome]
        segments = [sorted(t.intermediate_values.items()) for t in mine]
        ax.add_collection(LineCollection(segments, colors=color, alpha=0.6, linewidths=1))
        if outcome == "pruned":
            ends = [seg[-1] for seg in segments]
            ax.scatter([e[0] for e in ends], [e[1] for e in ends], marker="x", color=color)
        else:  # a curve of one step is no line: show it as a dot, so every curve counted shows
            dots = [seg[0] for seg in segments if len(seg) == 1]
            ax.scatter([p[0] for p in dots], [p[1] for p in dots], s=12, color=color)
    ax.autoscale_view()
    drawn = Counter(d.outcome(t) for t in curves)
    ax.legend(handles=_legend(drawn, d.summary), loc="best")
    ax.set_xlabel("step (epoch)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_label(d.metrics[0]))
    ax.grid(alpha=0.3)
    data = {"curves": len(curves), **drawn}
    return Section("intermediate", title, _png(fig), data=data)


def _timeline(d: ReportData) -> Section:
    title = "Timeline by worker slot"
    started = [t for t in d.trials if t.datetime_start is not None]
    if not started:
        return Section("timeline", title, note="No trial has started yet.")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    rows = sorted({_slot(t) for t in started})
    t0 = min(t.datetime_start for t in started if t.datetime_start is not None)
    t1 = max(_end(t, d.now) for t in started)
    span = max((t1 - t0).total_seconds(), 1e-9)
    busy: dict[str, float] = {}
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for t in started:
        start, end = t.datetime_start, _end(t, d.now)
        assert start is not None
        busy[_slot(t)] = busy.get(_slot(t), 0.0) + (end - start).total_seconds()
        key = (rows.index(_slot(t)), d.outcome(t))
        bars.setdefault(key, []).append((date2num(start), date2num(end) - date2num(start)))
    fig = _figure(9, 1.2 + 0.35 * min(len(rows), 80))
    ax = fig.add_subplot()
    for (row, outcome), spans in bars.items():
        color = OUTCOME_COLORS[outcome]
        # one call per slot and outcome; the edge keeps sub-pixel trials visible as a hairline
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=color, edgecolors=color, linewidth=0.5)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(
        range(len(rows)), [_label(f"{r}  ({100 * busy[r] / span:.0f}% busy)") for r in rows]
    )
    ax.invert_yaxis()
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    # outside the axes: inside it would hide the bars of the first slots
    ax.legend(
        handles=_legend(Counter(d.outcome(t) for t in started), d.summary),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    return Section("timeline", title, _png(fig), data={"bars": len(started), "rows": len(rows)})


def _best_curves(d: ReportData) -> Section:
    title = "Best trial: training curves"
    best = d.best()
    if best is None:
        return Section("best_curves", title, note="No completed trial yet.")
    history = best.user_attrs.get("history")
    if (
        not isinstance(history, list)
        or not history
        or not all(isinstance(r, dict) for r in history)
    ):
        note = f"Trial #{best.number} recorded no per-epoch history (a plain objective)."
        return Section("best_curves", title, note=note)
    epochs = [r.get("epoch", i) for i, r in enumerate(history)]
    keys = {k for r in history for k in r}
    losses = [k for k in _LOSS_KEYS if k in keys]
    metrics = [m for m in d.metrics if m in keys and m not in losses]
    metrics = metrics or [k for k in ("val_accuracy", "val_f1") if k in keys]
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 4)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for ax, names in ((ax_loss, losses), (ax_metric, metrics)):
        for name in names:
            ax.plot(
                epochs,
                [_num(r.get(name)) for r in history],
                marker="o",
                markersize=3,
                label=_label(name),
            )
        if isinstance(best.user_attrs.get("best_epoch"), int):
            ax.axvline(
                best.user_attrs["best_epoch"], color="grey", linestyle="--", label="best epoch"
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if names:
            ax.legend(loc="best")
    ax_loss.set_title("loss")
    ax_metric.set_title(_label(", ".join(metrics) or "no metric recorded"))
    fig.suptitle(f"trial #{best.number}")
    return Section("best_curves", title, _png(fig), data={"epochs": len(history)})


def _confusion(d: ReportData) -> Section:
    title = "Best trial: confusion matrix"
    best = d.best()
    if best is None:
        return Section("confusion", title, note="No completed trial yet.")
    cm = best.user_attrs.get("confusion_matrix")
    if not _is_square_matrix(cm):
        note = f"Trial #{best.number} recorded no confusion matrix (a plain objective)."
        return Section("confusion", title, note=note)
    n = len(cm)
    side = 3 + 0.4 * min(n, 40)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues")
    if n <= 20:  # beyond that the numbers no longer fit in their cells
        peak = max(max(row) for row in cm) or 1
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    _fmt(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > peak / 2 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"trial #{best.number} (validation)")
    fig.colorbar(image, ax=ax)
    return Section("confusion", title, _png(fig), data={"classes": n})


_SECTIONS: tuple[Callable[[ReportData], Section], ...] = (
    _history,
    _importances,
    _parallel,
    _intermediate,
    _timeline,
    _best_curves,
    _confusion,
)


# -- helpers ----------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, min(height, 30)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _legend(drawn: Mapping[str, int], summary: StudySummary) -> list[Any]:
    """One entry per outcome drawn, with the study's count of it (the one `hpo status`
    shows), and how many of those the plot has when that is fewer: "retried (2 of 4)"."""
    from matplotlib.patches import Patch

    def label(o: str) -> str:
        n, total = drawn[o], summary.counts[o]
        return f"{o} ({n})" if n == total else f"{o} ({n} of {total})"

    return [Patch(color=OUTCOME_COLORS[o], label=label(o)) for o in OUTCOMES if drawn.get(o)]


def _value_of(i: int) -> Callable[[optuna.trial.FrozenTrial], float]:
    return lambda t: t.values[i]


def _param_order(d: ReportData, trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    """The spec's order first, then parameters sampled on demand (define-by-run)."""
    seen = {n for t in trials for n in t.params}
    ordered = [p.name for p in d.study.spec.search_space if p.name in seen]
    return ordered + sorted(seen - set(ordered))


def _scaled(t: optuna.trial.FrozenTrial, name: str) -> float:
    """The trial's value of ``name`` on [0, 1] of its distribution (NaN breaks the line)."""
    from optuna.distributions import CategoricalDistribution

    if name not in t.params:
        return math.nan
    dist = t.distributions[name]
    if isinstance(dist, CategoricalDistribution):
        n = len(dist.choices)
        return dist.to_internal_repr(t.params[name]) / (n - 1) if n > 1 else 0.5
    low, high, v = float(dist.low), float(dist.high), float(t.params[name])  # type: ignore[attr-defined]
    if getattr(dist, "log", False):
        low, high, v = math.log(low), math.log(high), math.log(v)
    return (v - low) / (high - low) if high > low else 0.5


def _range_text(trials: Sequence[optuna.trial.FrozenTrial], name: str) -> tuple[Any, Any]:
    from optuna.distributions import CategoricalDistribution

    dist = next(t.distributions[name] for t in trials if name in t.params)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0], dist.choices[-1]
    return dist.low, dist.high  # type: ignore[attr-defined]


def _slot(t: optuna.trial.FrozenTrial) -> str:
    return str(t.user_attrs.get("worker") or "unknown worker")


def _end(t: optuna.trial.FrozenTrial, now: dt.datetime) -> dt.datetime:
    return t.datetime_complete or now  # a running trial's bar reaches the present


def _is_square_matrix(cm: Any) -> TypeGuard[list[list[float]]]:
    return (
        isinstance(cm, list)
        and len(cm) > 0
        and all(isinstance(r, list) and len(r) == len(cm) for r in cm)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for r in cm for v in r)
    )


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _label(text: str) -> str:
    """Text for a matplotlib label: a '$' in a user's name must not start mathtext."""
    return text.replace("$", r"\$")


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]
