"""The `hpo` command end to end: real subprocesses, real SQLite files, real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import run_hpo, toy_spec, write_spec

TOY = toy_spec(8)


def test_help_on_every_command() -> None:
    for cmd in [
        "",
        "run",
        "create",
        "worker",
        "status",
        "best",
        "list",
        "export",
        "delete",
        "stop",
        "retrain",
        "report",
        "dashboard",
    ]:
        res = run_hpo(*([cmd] if cmd else []), "--help")
        assert res.returncode == 0, res.stderr
        assert "Usage:" in res.stdout


def test_run_status_best_export_list_delete(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "toy.yaml", TOY)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    res = run_hpo("run", str(spec), "--workers", "2", "--storage", url)
    assert res.returncode == 0, res.stderr
    assert "best trial #" in res.stdout
    assert "8/8" in res.stderr  # progress lines reach the budget

    st = run_hpo("status", "toy", "--storage", url, "--format", "json")
    doc = json.loads(st.stdout)
    assert doc["finished"] == 8 and doc["budget"] == 8
    assert doc["counts"]["complete"] + doc["counts"]["pruned"] == 8

    best = run_hpo("best", "toy", "--storage", url)
    assert best.returncode == 0, best.stderr
    b = yaml.safe_load(best.stdout)
    assert set(b["params"]) == {"x", "y"} and b["study"] == "toy"

    exp = run_hpo("export", "toy", "--storage", url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exp.stdout)))
    assert len(rows) == 8 and {"params_x", "params_y", "state", "duration_s"} <= set(rows[0])
    expj = json.loads(run_hpo("export", "toy", "--storage", url, "--format", "json").stdout)
    assert len(expj) == 8 and all("intermediate_values" in r for r in expj)

    # HPO_STORAGE works like --storage
    ls = run_hpo("list", "--format", "json", HPO_STORAGE=url)
    assert [s["name"] for s in json.loads(ls.stdout)] == ["toy"]

    assert run_hpo("delete", "toy", "--storage", url).returncode == 2  # no --yes, no tty
    assert run_hpo("delete", "toy", "--yes", "--storage", url).returncode == 0
    assert json.loads(run_hpo("list", "--format", "json", "--storage", url).stdout) == []
    missing = run_hpo("status", "toy", "--storage", url)
    assert missing.returncode == 2 and "no study named 'toy'" in missing.stderr


def test_rerun_resumes_and_changed_spec_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "toy.yaml", TOY)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert run_hpo("run", str(spec), "--storage", url).returncode == 0
    again = run_hpo("run", str(spec), "--storage", url)
    assert again.returncode == 0 and "ran 0 trial" in again.stderr
    write_spec(spec, TOY.replace("high: 10}", "high: 20}"))
    changed = run_hpo("run", str(spec), "--storage", url)
    assert changed.returncode == 2
    assert re.search(r"search_space\.x\.high: 10(\.0)? -> 20", changed.stderr)
    assert "Traceback" not in changed.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: [unclosed\n", "YAML syntax error"),
        (TOY.replace("sampler: {type: tpe", "sampler: {type: tpx"), "sampler.type"),
        (TOY.replace("low: -10", "low: 50"), "search_space.x.low"),
        (TOY.replace("toy_objectives:quadratic", "no_such_module:f"), "cannot import"),
        (TOY + "bogus: 1\n", "bogus"),
    ],
)
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, text: str, fragment: str
) -> None:
    spec = write_spec(tmp_path / "bad.yaml", text)
    db = tmp_path / "h.db"
    for cmd in ("run", "create"):
        res = run_hpo(cmd, str(spec), "--storage", f"sqlite:///{db}")
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(spec) in lines[0] and fragment in lines[0]
        assert "Traceback" not in res.stderr
    assert not db.exists()


def test_password_never_printed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "toy.yaml", TOY)
    secret = "s3cr3t-Pa55"
    url = f"postgresql+psycopg://hpo:{secret}@127.0.0.1:1/nodb"  # nothing listens on port 1
    for args in (("run", str(spec), "--storage", url), ("list", "--storage", url)):
        res = run_hpo(*args)
        assert res.returncode == 1
        assert secret not in res.stdout + res.stderr
        assert "Traceback" not in res.stderr
    env_only = run_hpo("status", "toy", HPO_STORAGE=url)
    assert env_only.returncode == 1 and secret not in env_only.stdout + env_only.stderr


def test_run_called_in_process_returns_to_its_caller(tmp_path: Path) -> None:
    """The `hpo` command skips the interpreter's teardown on exit; `main` called from Python
    must still raise SystemExit like any click command, not end the caller's process."""
    import subprocess
    import sys

    from conftest import hpo_env

    spec = write_spec(tmp_path / "toy.yaml", toy_spec(3))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    code = (
        "from hpo.cli import main\n"
        f"try:\n    main(['run', {str(spec)!r}, '--storage', {url!r}])\n"
        "except SystemExit as e:\n    print('caller continues, code', e.code)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=hpo_env(), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "best trial #" in res.stdout and "caller continues, code 0" in res.stdout


@pytest.mark.parametrize("command", ["status", "slurm", "k8s"])
def test_a_missing_spec_path_is_said_to_be_missing(tmp_path: Path, command: str) -> None:
    """A mistyped spec path is an error naming the file, not a study name looked up."""
    args = [command, "no-such-spec.yaml"] + (["--dry-run"] if command == "slurm" else [])
    res = run_hpo(*args, cwd=tmp_path)
    assert res.returncode == 2 and "no-such-spec.yaml: no such file" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
