"""`hpo report` and `hpo status --watch`: on a real run, and on studies built trial by trial."""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import hpo_env, run_hpo, toy_spec, write_spec
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo.reporting import snapshot, write_report
from hpo.spec import parse_spec
from hpo.study import Study, create_study, load_study

TOY = toy_spec(12)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALWAYS = ("history", "importances", "parallel", "intermediate", "timeline")
TRAINING_ONLY = ("best_curves", "confusion")


class Page(HTMLParser):
    """Collects what the tests look at: element attributes by id, images, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.body: dict[str, str | None] = {}
        self.images: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if a.get("id"):
            self.by_id[str(a["id"])] = a
        if tag == "img":
            self.images.append(str(a["src"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """A real `hpo run` of a plain Optuna objective: 12 trials, 2 slots, some pruned."""
    tmp = tmp_path_factory.mktemp("toy")
    url = f"sqlite:///{tmp / 'h.db'}"
    res = run_hpo("run", str(write_spec(tmp / "toy.yaml", TOY)), "--workers", "2", "--storage", url)
    assert res.returncode == 0, res.stderr
    rows = json.loads(run_hpo("export", "toy", "--storage", url, "--format", "json").stdout)
    return url, rows


def test_report_of_a_real_run(toy_run: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    url, rows = toy_run
    out = tmp_path / "report"
    res = run_hpo("report", "toy", "--storage", url, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out / 'index.html'}"

    for key in ALWAYS:
        png = (out / f"{key}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE), key
        import matplotlib.image

        assert matplotlib.image.imread(out / f"{key}.png").ndim == 3  # decodes as an image
    for key in TRAINING_ONLY:  # a plain objective records no history: a note, no PNG
        assert not (out / f"{key}.png").exists()

    page = Page((out / "index.html").read_text())
    # self-contained: every plot is embedded, byte for byte the PNG beside the page
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in page.images}
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert embedded == {(out / f"{k}.png").read_bytes() for k in ALWAYS}
    # the counts agree with the export
    n_pruned = sum(r["state"] == "PRUNED" for r in rows)
    assert 0 < n_pruned < 12, "the median pruner should have pruned some trials"
    assert page.body["data-trials"] == "12"
    assert page.by_id["summary"]["data-trials"] == "12"
    assert page.by_id["summary"]["data-pruned"] == str(n_pruned)
    assert page.by_id["summary"]["data-complete"] == str(12 - n_pruned)
    assert page.by_id["timeline"]["data-bars"] == "12"
    workers = {r["user_attrs"]["worker"] for r in rows}
    assert page.by_id["timeline"]["data-rows"] == str(len(workers)) and len(workers) == 2
    assert page.by_id["intermediate"]["data-curves"] == "12"
    assert page.by_id["intermediate"]["data-pruned"] == str(n_pruned)
    assert page.by_id["history"]["data-points"] == str(12 - n_pruned)
    text = " ".join(page.text)
    assert "12 logical trials" in text and "recorded no per-epoch history" in text
    best = min((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["values"][0])
    assert f"#{best['number']}:" in text


def test_report_escapes_user_strings_and_survives_odd_names(tmp_path: Path) -> None:
    study = _study(tmp_path, "odd")
    evil = "<script>alert('x')</script> $\\frac{"  # HTML and a broken mathtext formula
    choice = CategoricalDistribution(["<b>a</b>", "$b"])
    for i, c in enumerate(["<b>a</b>", "$b", "<b>a</b>"]):
        study.optuna.add_trial(
            _trial(
                i,
                float(i),
                params={"lr": 0.01 * (i + 1), evil: c},
                distributions={"lr": FloatDistribution(1e-3, 1.0, log=True), evil: choice},
                user_attrs={"worker": evil, "history": "not a list"},
            )
        )
    html_text = write_report(study, tmp_path / "r").read_text()
    assert "<script>" not in html_text and "<b>a</b>" not in html_text
    assert "&lt;script&gt;" in html_text and "&lt;b&gt;a&lt;/b&gt;" in html_text
    page = Page(html_text)
    assert page.by_id["timeline"]["data-rows"] == "1"
    assert "recorded no per-epoch history" in " ".join(page.text)


def test_report_of_a_training_study_has_curves_and_confusion_matrix(tmp_path: Path) -> None:
    study = _study(tmp_path, "trained")
    for i, acc in enumerate([0.7, 0.9, 0.8]):
        history = [
            {"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_accuracy": acc}
            for e in range(4)
        ]
        study.optuna.add_trial(
            _trial(
                i,
                acc,
                params={"lr": 0.01 * (i + 1)},
                distributions={"lr": FloatDistribution(1e-3, 1.0, log=True)},
                user_attrs={
                    "history": history,
                    "best_epoch": 3,
                    "confusion_matrix": [[5, 1], [i, 4]],
                    "worker": f"h:1/{i % 2}",
                },
                intermediate={e: acc for e in range(4)},
            )
        )
    out = tmp_path / "r"
    page = Page(write_report(study, out).read_text())
    for key in TRAINING_ONLY:
        assert (out / f"{key}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert page.by_id["best_curves"]["data-epochs"] == "4"
    assert page.by_id["confusion"]["data-classes"] == "2"
    text = " ".join(page.text)
    assert "#1: val_accuracy = 0.9" in text  # maximize: the best is trial 1
    assert "Needs at least 2 varying parameters" in text  # importances with one parameter
    assert not (out / "importances.png").exists()


def test_report_multi_objective_plots_the_pareto_front(tmp_path: Path) -> None:
    spec = parse_spec(
        "name: pareto\nobjective: toy_objectives:quadratic\n"
        "metrics: [val_accuracy, n_params]\ndirections: [maximize, minimize]\n"
        "search_space:\n  x: {type: float, low: 0, high: 1}\n"
        "  y: {type: float, low: 0, high: 1}\n",
        source="pareto.yaml",
    )
    study = create_study(spec, f"sqlite:///{tmp_path / 'h.db'}")
    points = [(0.9, 100.0), (0.8, 10.0), (0.7, 50.0), (0.95, 1000.0)]  # (0.7, 50) is dominated
    for i, values in enumerate(points):
        study.optuna.add_trial(
            _trial(
                i,
                values,
                params={"x": i / 4, "y": 1 - i / 4},
                distributions={"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)},
            )
        )
    page = Page(write_report(study, tmp_path / "r").read_text())
    assert page.by_id["history"]["data-front"] == "3"
    assert "Pareto front" in " ".join(page.text)


def test_report_of_an_empty_study_and_unwritable_output(tmp_path: Path) -> None:
    study = _study(tmp_path, "empty")
    out = tmp_path / "r"
    page = Page(write_report(study, out).read_text())
    assert page.body["data-trials"] == "0" and page.images == []
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]

    blocker = tmp_path / "file"
    blocker.write_text("")
    res = run_hpo("report", "empty", "--storage", study.url, "--out", str(blocker / "sub"))
    assert res.returncode == 1
    assert res.stderr.startswith("hpo: error: cannot write the report") and "Traceback" not in (
        res.stderr
    )
    assert len(res.stderr.strip().splitlines()) == 1


def test_help_does_not_import_matplotlib() -> None:
    code = (
        "import sys\nfrom hpo.cli import main\n"
        "for args in (['--help'], ['report', '--help'], ['status', '--help']):\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=hpo_env(), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert "--watch" in res.stdout and "--out" in res.stdout


# -- hpo status --watch ----------------------------------------------------------------


def test_watch_snapshot_counts_rate_and_eta(tmp_path: Path) -> None:
    study = _study(tmp_path, "paced", n_trials=20, direction="minimize")
    now = dt.datetime.now()
    # 10 trials finished one every 6 s over the last minute (one slot), one still running
    for i in range(10):
        end = now - dt.timedelta(seconds=6 * (9 - i))
        study.optuna.add_trial(
            _trial(
                i,
                float(i),
                params={"lr": 0.01},
                distributions={"lr": FloatDistribution(1e-3, 1.0)},
                start=end - dt.timedelta(seconds=6),
                end=end,
            )
        )
    trial = study.optuna.ask()
    trial.report(0.5, 0)
    trial.report(0.4, 3)
    snap = snapshot(study, now=now)
    assert snap.finished == 10 and (snap.complete, snap.running, snap.attempts) == (10, 1, 11)
    assert snap.best is not None and snap.best.values == [0.0] and snap.best.number == 0
    assert snap.rate_per_min == pytest.approx(10.0, rel=0.05)
    assert snap.remaining == 10 and snap.eta_s == pytest.approx(60.0, rel=0.05)
    assert [(r.number, r.epoch) for r in snap.running_trials] == [(10, 3)]
    assert snap.phase == "in progress" and not snap.over
    study.optuna.tell(trial, 0.1)
    assert not snapshot(study).over  # 11 of 20: nothing runs, but budget is left


def test_watch_follows_a_live_run_until_it_finishes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    spec = write_spec(tmp_path / "toy.yaml", TOY.replace("n_trials: 12", "n_trials: 8"))
    assert run_hpo("create", str(spec), "--storage", url).returncode == 0
    with _Background("status", "toy", "--watch", "--interval", "0.3", HPO_STORAGE=url) as watcher:
        run = run_hpo("run", str(spec), "--workers", "2", HPO_STORAGE=url, TOY_SLEEP="0.4")
        assert run.returncode == 0, run.stderr
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) >= 3
    assert "finished: 0/8" in blocks[0]
    assert "finished: 8/8" in blocks[-1] and "time to finish: finished" in blocks[-1]
    assert "running #" in out and "epoch" in out  # running trials were seen, with their step
    assert "trials/min" in out


def test_watch_stops_quietly_on_ctrl_c(tmp_path: Path) -> None:
    study = _study(tmp_path, "idle", n_trials=5)  # nothing will ever run: watch waits
    with _Background("status", "idle", "--watch", "--interval", "0.2", HPO_STORAGE=study.url) as w:
        assert w.stdout is not None
        assert "finished: 0/5" in "".join(w.stdout.readline() for _ in range(3))
        w.send_signal(signal.SIGINT)
        _, err = w.communicate(timeout=30)
    assert w.returncode == 0, err
    assert "Traceback" not in err


# -- helpers ---------------------------------------------------------------------------


def _study(
    tmp_path: Path, name: str, *, n_trials: int | None = None, direction: str = "maximize"
) -> Study:
    budget = f"budget: {{n_trials: {n_trials}}}\n" if n_trials else ""
    spec = parse_spec(
        f"name: {name}\nobjective: toy_objectives:quadratic\n"
        # a metric whose sense matches the direction, as the spec requires
        f"metric: {'val_accuracy' if direction == 'maximize' else 'val_loss'}\n"
        f"direction: {direction}\n"
        "search_space:\n  lr: {type: float, low: 1.0e-3, high: 1.0, log: true}\n" + budget,
        source=f"{name}.yaml",
    )
    create_study(spec, f"sqlite:///{tmp_path / 'h.db'}")
    return load_study(name, f"sqlite:///{tmp_path / 'h.db'}")


def _trial(
    number: int,
    value: float | tuple[float, ...],
    *,
    params: dict[str, Any],
    distributions: dict[str, Any],
    user_attrs: dict[str, Any] | None = None,
    intermediate: dict[int, float] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> optuna.trial.FrozenTrial:
    end = end or dt.datetime.now()
    # a FrozenTrial rather than create_trial(), which cannot set the start and end times
    return optuna.trial.FrozenTrial(
        number=number,
        state=TrialState.COMPLETE,
        value=None,
        values=list(value) if isinstance(value, tuple) else [value],
        datetime_start=start or end - dt.timedelta(seconds=1 + number),
        datetime_complete=end,
        params=params,
        distributions=distributions,
        user_attrs={"worker": "h:1/0", **(user_attrs or {})},
        system_attrs={},
        intermediate_values=intermediate or {},
        trial_id=number,
    )


class _Background:
    """`hpo ARGS` in the background (stdout piped, as in a log), killed if a test fails."""

    def __init__(self, *args: str, **env: str) -> None:
        self.args, self.env = args, env

    def __enter__(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", *self.args],
            env=hpo_env(**self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
