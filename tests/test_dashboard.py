"""`hpo dashboard`: the real optuna-dashboard process, its HTTP API and its page in Chromium.

The page is a single-page app that renders from the API in the browser, so the only honest
check that the study is *seen* is a real headless browser. Without Chromium these tests skip,
except in CI (CI=true), where `make test` installs it and its absence is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import hpo_env, run_hpo, toy_spec, write_spec

TOY = toy_spec(12)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",  # let the app fetch the API and render before the dump
)


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required in CI (`apt-get install chromium`)")
        pytest.skip("chromium is not installed")
    return path


def test_dashboard_shows_a_real_run(tmp_path: Path, chromium: str) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    res = run_hpo(
        "run", str(write_spec(tmp_path / "toy.yaml", TOY)), "--workers", "2", "--storage", url
    )
    assert res.returncode == 0, res.stderr

    with dashboard(url, tmp_path) as base:
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["toy"]
        study_id = studies[0]["study_id"]
        assert "spec" in {a["key"] for a in studies[0]["user_attrs"]}

        detail = get_json(f"{base}/api/studies/{study_id}")
        trials = detail["trials"]
        assert sorted(t["number"] for t in trials) == list(range(12))
        states = {t["state"] for t in trials}
        assert states == {"Complete", "Pruned"}, states
        for t in trials:
            steps = [v["step"] for v in t["intermediate_values"]]
            assert steps and steps == list(range(len(steps)))  # one value per reported step
            if t["state"] == "Complete":
                assert len(steps) == 3 and len(t["values"]) == 1
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert {"host", "worker", "duration_s"} <= set(attrs), attrs
            assert {p["name"] for p in t["params"]} == {"x", "y"}
        assert detail["has_intermediate_values"] is True
        best = detail["best_trials"][0]["number"]

        # the study page: name and best trial, rendered by the app in a real browser
        page = render(chromium, f"{base}/dashboard/studies/{study_id}", tmp_path)
        assert f"toy (id={study_id})" in page
        assert f"Best Trial (number={best})" in page
        # the trial list: every trial, its state, its intermediate values and user attrs
        page = render(chromium, f"{base}/dashboard/studies/{study_id}/trials", tmp_path)
        assert "12 Trials" in page
        for n in range(12):
            assert f"Trial {n}" in page
        assert "Pruned" in page and "Intermediate Values" in page and "worker" in page


@pytest.mark.slow
def test_four_workers_and_the_dashboard_share_one_sqlite_file_without_locking(
    tmp_path: Path,
) -> None:
    """4 separate `hpo worker` processes x ~200 fast trials on one SQLite file, while the
    dashboard reads the same file: not one "database is locked", every trial complete."""
    n_trials = 800
    url = f"sqlite:///{tmp_path / 'h.db'}"
    spec = write_spec(
        tmp_path / "toy.yaml",
        TOY.replace("n_trials: 12", f"n_trials: {n_trials}")
        .replace("toy_objectives:quadratic", "toy_objectives:instant")
        .replace("pruner: {type: median, n_startup_trials: 3}", "pruner: none"),
    )
    assert run_hpo("create", str(spec), "--storage", url).returncode == 0
    with dashboard(url, tmp_path) as base:
        study_id = get_json(f"{base}/api/studies")["study_summaries"][0]["study_id"]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "hpo.cli", "worker", "toy", "--processes", "1"],
                env=hpo_env(HPO_STORAGE=url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        polls = 0
        try:
            while any(w.poll() is None for w in workers):
                get_json(f"{base}/api/studies/{study_id}")  # raises on any non-200 answer
                get_json(f"{base}/api/studies")
                polls += 1
            errs = [w.communicate(timeout=60)[1] for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.communicate()
        for w, err in zip(workers, errs, strict=True):
            assert w.returncode == 0, err
            assert "database is locked" not in err
            assert int(err.split("ran ")[1].split(" ")[0]) > 0  # each worker did its share
        assert polls >= 3, "the dashboard was not read while the workers wrote"
        # optuna-dashboard caches a study's trials for up to 10 s: wait out one refresh.
        deadline = time.monotonic() + 30
        while len(trials := get_json(f"{base}/api/studies/{study_id}")["trials"]) < n_trials:
            assert time.monotonic() < deadline, f"the dashboard shows {len(trials)} trials"
            time.sleep(0.5)
        assert len(trials) == n_trials and {t["state"] for t in trials} == {"Complete"}
    assert "database is locked" not in (tmp_path / "dashboard.log").read_text()


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def dashboard(url: str, tmp_path: Path) -> Iterator[str]:
    """`hpo dashboard` on a free port; yields its base URL and always terminates it."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    # The server logs every request: to a file, since an unread pipe would fill and block it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "dashboard", "--storage", url, "--port", str(port)],
        env=hpo_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited: {(tmp_path / 'dashboard.log').read_text()}")
            with contextlib.suppress(OSError):
                get_json(f"{base}/api/meta", timeout=2)
                break
            if time.monotonic() > deadline:
                pytest.fail("dashboard did not answer within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.status == 200
        return json.load(r)


def render(chromium: str, url: str, tmp_path: Path) -> str:
    """The page's DOM after the app rendered it, as text without tags."""
    from html.parser import HTMLParser

    res = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stderr[-2000:]

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.skip += tag in ("style", "script")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("style", "script")

        def handle_data(self, data: str) -> None:
            if not self.skip and data.strip():
                self.parts.append(data.strip())

    text = Text()
    text.feed(res.stdout)
    return " ".join(text.parts)
