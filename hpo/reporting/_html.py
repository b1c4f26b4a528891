"""``hpo report``: one self-contained HTML page about a study, with its plots as PNG files.

``write_report`` renders each plot (``_plots``) into a PNG beside ``index.html`` and also
embeds it in the page as a ``data:`` URI, so the page can be mailed or attached to a ticket
on its own. Its counts are the study summary's (:func:`hpo.study.study_summary`), the same
words and numbers as ``hpo status``. Counts that a reader or a test may want to check are
in ``data-*`` attributes (``data-complete`` ... on the summary, ``data-bars`` on the
timeline, ...). Every string that comes from the user (study name, parameter names and
values, user attributes) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError
from hpo.reporting._plots import ReportData, Section, sections

if TYPE_CHECKING:
    from hpo.study import Study

REPORT_FILE = "index.html"
_TOP_TRIALS = 10  # rows of the "best trials" table; the CSV export has them all


class ReportError(HpoError):
    """The report cannot be written (the output directory is not writable, ...)."""


def write_report(study: Study, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` and one PNG per plot beside it; return the page's path."""
    from hpo.study import study_summary

    out = Path(out_dir)
    now = dt.datetime.now()
    data = ReportData(study, study_summary(study, now=now, window_s=None), now)
    parts = sections(data)
    page = _page(data, parts)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for s in parts:
            png = out / f"{s.key}.png"
            if s.png is not None:
                png.write_bytes(s.png)
            else:
                # a plot skipped now must not leave last report's PNG looking current
                png.unlink(missing_ok=True)
        path = out / REPORT_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise ReportError(f"cannot write the report to {str(out)!r}: {e.strerror or e}") from None
    return path


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
section{margin:2em 0}
img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-style:italic}
code{font-size:90%}
"""


def _page(d: ReportData, sections: Sequence[Section]) -> str:
    e = _esc
    name = d.study.name
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hpo report: {e(name)}</title><style>{_CSS}</style></head>",
        f'<body data-trials="{d.summary.logical}" data-attempts="{d.summary.attempts}">',
        f"<h1>Study <code>{e(name)}</code></h1>",
        f"<p>Generated {e(d.now.isoformat(timespec='seconds'))} from "
        f"<code>{e(d.study.masked_url)}</code>.</p>",
        _summary(d),
        _top_trials(d),
    ]
    for s in sections:
        attrs = "".join(f' data-{e(k)}="{int(v)}"' for k, v in s.data.items())
        parts.append(f'<section id="{e(s.key)}"{attrs}><h2>{e(s.title)}</h2>')
        if s.png is not None:
            uri = "data:image/png;base64," + base64.b64encode(s.png).decode("ascii")
            parts.append(f'<img src="{uri}" alt="{e(s.title)}">')
            parts.append(f'<p><a href="{e(s.key)}.png">{e(s.key)}.png</a></p>')
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _summary(d: ReportData) -> str:
    e = _esc
    spec, s = d.study.spec, d.summary
    objectives = ", ".join(f"{m} ({dr})" for m, dr in zip(d.metrics, d.directions, strict=True))
    budget = f"{s.budget} logical trials" if s.budget is not None else "unlimited"
    rows: list[tuple[str, str]] = [
        ("objective", f"<code>{e(spec.objective)}</code>"),
        ("metrics", e(objectives)),
        ("sampler / pruner", e(f"{spec.sampler.type} / {spec.pruner.type}")),
        ("budget", e(budget)),
        ("study", e(s.phase)),
        ("finished", e(f"{s.finished} logical trials")),
        ("logical trials", str(s.logical)),
        ("attempts", str(s.attempts)),
    ]
    rows += [(f"&nbsp;&nbsp;{e(o)}", str(n)) for o, n in s.counts.items()]
    if s.stop:
        rows.append(("stop requested", e(s.stop)))
    rows += _best_rows(d) + _time_rows(d)
    counts = {"trials": s.logical, "logical": s.logical, "attempts": s.attempts}
    counts.update(finished=s.finished, **s.counts)
    attrs = " ".join(f'data-{k}="{n}"' for k, n in counts.items())
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h2>Summary</h2><table id="summary" {attrs}>{body}</table>'


def _best_rows(d: ReportData) -> list[tuple[str, str]]:
    e = _esc
    best = d.best()
    if best is None:
        return []
    label = "best trial" if len(d.metrics) == 1 else f"Pareto trial best on {d.metrics[0]}"
    values = ", ".join(f"{m} = {_fmt(v)}" for m, v in zip(d.metrics, best.values, strict=True))
    rows = [(e(label), e(f"#{best.number}: {values}")), ("best params", _params_html(best.params))]
    if len(d.metrics) > 1:
        rows.append(("Pareto front", e(f"{len(d.summary.best_trials)} trials")))
    return rows


def _time_rows(d: ReportData) -> list[tuple[str, str]]:
    e = _esc
    starts = [t.datetime_start for t in d.trials if t.datetime_start]
    ends = [t.datetime_complete for t in d.trials if t.datetime_complete]
    busy = sum((t.duration.total_seconds() for t in d.trials if t.duration), 0.0)
    workers = {t.user_attrs["worker"] for t in d.trials if "worker" in t.user_attrs}
    rows = []
    if starts:
        last = d.now if d.summary.running or not ends else max(ends)
        span = (last - min(starts)).total_seconds()
        rows.append(("first start", e(min(starts).isoformat(timespec="seconds"))))
        rows.append(("wall time", e(_duration(span))))
        rows.append(("trial time (sum)", e(_duration(busy))))
    rows.append(("worker slots", str(len(workers))))
    return rows


def _top_trials(d: ReportData) -> str:
    e = _esc
    done = d.complete
    if not done:
        return ""
    top = sorted(done, key=d.summary.key)[:_TOP_TRIALS]
    head = "".join(f"<th>{e(m)}</th>" for m in d.metrics)
    rows = []
    for t in top:
        values = "".join(f"<td>{e(_fmt(v))}</td>" for v in t.values)
        epochs = t.user_attrs.get("epochs_run", len(t.intermediate_values) or "")
        secs = t.duration.total_seconds() if t.duration else None
        rows.append(
            f"<tr><td>{t.number}</td>{values}<td>{_params_html(t.params)}</td>"
            f"<td>{e(str(epochs))}</td><td>{e(_duration(secs) if secs is not None else '')}</td>"
            f"<td>{e(str(t.user_attrs.get('worker', '')))}</td></tr>"
        )
    return (
        f"<h2>Best {len(top)} trials</h2>"
        f'<table id="top-trials" data-rows="{len(top)}"><tr><th>trial</th>{head}'
        f"<th>params</th><th>epochs</th><th>duration</th><th>worker</th></tr>"
        f"{''.join(rows)}</table>"
    )


# -- helpers ----------------------------------------------------------------------------


def _params_html(params: Mapping[str, Any]) -> str:
    return "<br>".join(f"<code>{_esc(k)}</code> = {_esc(_fmt(v))}" for k, v in params.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)
