"""One rule for which storage a command uses, and objectives found in the working directory.

Reproductions of issue 12 item 4: a study created from a spec whose `storage:` names a file
other than hpo.db was not found by `hpo worker/status/best` without repeating the URL; an
objective module in the working directory did not import unless PYTHONPATH was set.

The rule: --storage, then HPO_STORAGE, then the spec's `storage:` (a command given a spec,
or a spec path in place of a study name), then the URL `hpo create`/`hpo run` remembered in
./.hpo/storage (never one with a password), then sqlite:///hpo.db.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hpo_env, run_hpo, toy_spec, write_spec

SPEC = """\
name: here
objective: toy_objectives:quadratic
metric: loss
search_space:
  x: {type: float, low: -10, high: 10}
  y: {type: int, low: 0, high: 5}
sampler: {type: random, seed: 0}
budget: {n_trials: 2}
storage: sqlite:///elsewhere.db
"""


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_a_study_created_from_a_spec_is_found_without_repeating_its_storage(
    tmp_path: Path,
) -> None:
    write_spec(tmp_path / "spec.yaml", SPEC)
    _ok(run_hpo("create", "spec.yaml", cwd=tmp_path, timeout=60))
    assert (tmp_path / ".hpo" / "storage").read_text().strip() == "sqlite:///elsewhere.db"
    assert "here" in _ok(run_hpo("status", "here", cwd=tmp_path, timeout=60))
    _ok(run_hpo("worker", "here", "--processes", "1", cwd=tmp_path, timeout=120))
    assert "x:" in _ok(run_hpo("best", "here", cwd=tmp_path, timeout=60))
    assert not (tmp_path / "hpo.db").exists()  # the default was never used


def test_a_spec_path_stands_for_its_study_and_storage(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec.yaml", SPEC)
    _ok(run_hpo("run", "spec.yaml", cwd=tmp_path, timeout=120))
    (tmp_path / ".hpo" / "storage").unlink()  # only the spec says where the study is
    assert "x:" in _ok(run_hpo("best", "spec.yaml", cwd=tmp_path, timeout=60))
    # A relative SQLite path is relative to the working directory, as for `hpo run`.
    assert "here" in _ok(run_hpo("status", str(tmp_path / "spec.yaml"), cwd=tmp_path, timeout=60))
    res = run_hpo("status", "here", cwd=tmp_path, timeout=60)  # the default: no such study
    assert res.returncode == 2
    assert "no study named 'here' in sqlite:///hpo.db" in res.stderr
    assert "give --storage, HPO_STORAGE or the spec's path" in res.stderr


def test_the_flag_and_the_env_var_come_before_the_spec_and_the_directory(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec.yaml", SPEC)
    flag = f"sqlite:///{tmp_path / 'flag.db'}"
    _ok(run_hpo("create", "spec.yaml", "--storage", flag, cwd=tmp_path, timeout=60))
    assert (tmp_path / "flag.db").exists() and not (tmp_path / "elsewhere.db").exists()
    env = f"sqlite:///{tmp_path / 'env.db'}"
    _ok(run_hpo("create", "spec.yaml", cwd=tmp_path, timeout=60, HPO_STORAGE=env))
    assert (tmp_path / "env.db").exists() and not (tmp_path / "elsewhere.db").exists()


def test_an_unknown_study_name_gets_did_you_mean(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec.yaml", SPEC)
    _ok(run_hpo("create", "spec.yaml", cwd=tmp_path, timeout=60))
    res = run_hpo("status", "hree", cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "hpo: error: no study named 'hree' in sqlite:///elsewhere.db; did you mean 'here'?"
    )


@pytest.mark.postgres
def test_a_url_with_a_password_is_never_written_to_the_directory(
    tmp_path: Path, pg_url: str
) -> None:
    import sqlalchemy as sa

    secret = "s3cret-Pw-9"
    url = sa.engine.make_url(pg_url).set(password=secret).render_as_string(hide_password=False)
    write_spec(tmp_path / "spec.yaml", SPEC)
    (tmp_path / ".hpo").mkdir()
    (tmp_path / ".hpo" / "storage").write_text("sqlite:///stale.db\n")
    res = run_hpo("create", "spec.yaml", "--storage", url, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "set HPO_STORAGE" in res.stdout
    assert secret not in res.stdout + res.stderr
    assert not (tmp_path / ".hpo" / "storage").exists()  # the stale URL would have won
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_help_states_the_rule() -> None:
    out = _ok(run_hpo("status", "--help", timeout=60))
    text = " ".join(out.split())
    assert "--storage, env HPO_STORAGE, the spec's `storage:`" in text
    assert ".hpo/storage" in text and "sqlite:///hpo.db" in text


OBJECTIVE = """\
def objective(trial):
    return trial.suggest_float("x", -10, 10) ** 2 + trial.suggest_int("y", 0, 5)
"""


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_an_objective_in_the_working_directory_imports_without_pythonpath(
    tmp_path: Path, start_method: str
) -> None:
    """As the installed `hpo` script runs: its own directory on sys.path, not the cwd."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_cwd_objective.py").write_text(OBJECTIVE)
    write_spec(
        project / "spec.yaml",
        SPEC.replace("toy_objectives:quadratic", "my_cwd_objective:objective"),
    )
    script = tmp_path / "bin" / "hpo"
    script.parent.mkdir()
    script.write_text(  # what pip writes for the console script
        "import sys\nfrom hpo.cli import entry\nif __name__ == '__main__':\n    sys.exit(entry())\n"
    )
    env = hpo_env(HPO_START_METHOD=start_method)
    # Only the hpo under test on the path: not tests/, not the project.
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    for args in (("run", "spec.yaml"), ("worker", "here", "--processes", "1")):
        res = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert "failed 0" in res.stderr or "0 failed" in res.stderr, res.stderr


def test_run_says_which_storage_it_uses_and_when_hpo_storage_overrides_the_spec(
    tmp_path: Path,
) -> None:
    # Seen: an exported HPO_STORAGE sent a run to another database than the spec's storage:,
    # and nothing said so.
    spec_db, env_db = tmp_path / "spec.db", tmp_path / "env.db"
    text = toy_spec(2).replace("budget:", f"storage: sqlite:///{spec_db}\nbudget:")
    spec = write_spec(tmp_path / "spec.yaml", text)
    ran = run_hpo("run", str(spec), cwd=tmp_path, HPO_STORAGE=f"sqlite:///{env_db}")
    assert ran.returncode == 0, ran.stderr
    assert f"storage sqlite:///{env_db} (from HPO_STORAGE, not the spec's storage: " in ran.stderr
    ran = run_hpo("run", str(spec), cwd=tmp_path)
    assert f"storage sqlite:///{spec_db} (the spec's storage:)" in ran.stderr
