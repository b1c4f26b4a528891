"""Bad input through the real `hpo` command: malformed specs, bad flags, bad storages.

Every case runs the real CLI in a subprocess and must fail cleanly:

- **One line.** An error hpo detects (a spec, a storage, an unknown study, a bad ``--gpus``)
  is exactly one line on stderr, ``hpo: error: ...``. An error *click* detects while parsing
  the command line (a missing argument, an unknown option, ``--workers 0``, ``--format xml``,
  a directory where a file is expected) keeps click's standard usage format, which we accept
  on purpose: a ``Usage: ...`` line, a ``Try '... --help'`` line, a blank line, and exactly one
  ``Error: ...`` line. That block is what every click program prints, it points at ``--help``,
  and rewriting it would mean replacing click's parser for no gain in information.
- **The right exit code** (README): 2 for a usage or spec error, including a storage URL that
  cannot be parsed or names an unknown database; 1 for a run failure, including a storage
  that cannot be reached or used (nothing listening, a missing directory, a file that is not
  SQLite, a database driver that is not installed).
- **No traceback** on stdout or stderr, and nothing on stdout.
- **Nothing written**: the SQLite file named by ``--storage`` does not exist afterwards (or, for
  a file that was there, is unchanged), and on PostgreSQL no table and no study is created.

tests/test_spec.py checks the spec loader's messages one by one; this file checks the whole
command around them.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import TESTS, run_hpo, toy_spec, write_spec

GOOD = toy_spec(2, pruner=False)
# A search space line of GOOD, to swap for a bad one.
X_LINE = "  x: {type: float, low: -10, high: 10}\n"
SPACE_LINES = X_LINE + "  y: {type: int, low: 0, high: 5}\n"
MARKER = "{tmp}/pwned"
# A "billion laughs": 8**4 * 10 strings through aliases, from a few lines of YAML.
LAUGHS = """\
fixed:
  a: &a [x, x, x, x, x, x, x, x, x, x]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c]
  e: [*d, *d, *d, *d, *d, *d, *d, *d]
"""  # a file the YAML tags below would create if they were executed


def _x(text: str) -> str:
    """GOOD with the parameter x replaced by ``text`` (a YAML flow mapping)."""
    return GOOD.replace(X_LINE, f"  x: {text}\n")


def _sub(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


@dataclass(frozen=True)
class Case:
    """One bad invocation. ``{spec}``, ``{db}`` and ``{tmp}`` in ``args`` are filled in."""

    id: str
    spec: str | None = None  # written to {spec} when given
    args: tuple[str, ...] = ("run", "{spec}", "--storage", "sqlite:///{db}")
    code: int = 2
    match: str = ""  # expected in the error line
    usage: bool = False  # click's usage format instead of one `hpo: error:` line
    env: dict[str, str] = field(default_factory=dict)


MLP = """\
name: m
objective: mlp
metric: val_loss
search_space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
fixed: {epochs: 1}
budget: {n_trials: 2}
"""
WANDB = """\
program: train.py
method: bayes
metric: {name: val_loss, goal: minimize}
parameters:
  lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}
"""

SPEC_CASES = [
    # What the built-in objective cannot read or report (every trial would fail or be wrong)
    Case(
        "builtin-unknown-metric",
        MLP.replace("metric: val_loss", "metric: val_acc"),
        match="metric: the mlp objective does not report it; did you mean 'val_accuracy'?",
    ),
    Case(
        "builtin-unread-param",
        MLP.replace("  lr: {", "  learning_rate: {"),
        match="search_space.learning_rate: the mlp objective does not read it; did you mean 'lr'",
    ),
    Case(
        "builtin-unread-fixed",
        MLP.replace("{epochs: 1}", "{epochs: 1, dropout_rate: 0.1}"),
        match="fixed.dropout_rate: the mlp objective does not read it; did you mean 'dropout'",
    ),
    Case(
        "builtin-unread-param-create",
        MLP.replace("  lr: {", "  learning_rate: {"),
        args=("create", "{spec}", "--storage", "sqlite:///{db}"),
        match="search_space.learning_rate",
    ),
    # A command spec: what the script needs must be there before anything is written
    Case(
        "command-not-found",
        GOOD.replace("objective: toy_objectives:quadratic", "command: [no-such-program-x1]"),
        match="command.0: is not on PATH nor a file",
    ),
    Case(
        "command-unknown-placeholder",
        GOOD.replace("objective: toy_objectives:quadratic", "command: sh run.sh {confg}"),
        match="unknown placeholder {confg}",
    ),
    Case(
        "command-config-missing",
        GOOD.replace(
            "objective: toy_objectives:quadratic",
            "command: [sh, -c, 'true', '{config}']\nconfig: configs/missing.yaml",
        ),
        match="config: no such file",
    ),
    # Words from W&B Sweeps, Ray Tune and Optuna
    Case("foreign-wandb-sweep", WANDB, match="program: unknown key; in hpo this is `command:"),
    Case("foreign-bayes", _sub("sampler: {type: tpe", "sampler: {type: bayes"), match="`tpe`"),
    Case("foreign-num-samples", GOOD + "num_samples: 9\n", match="`budget: {n_trials: N}`"),
    # Options outside their domain
    Case(
        "domain-reduction-factor",
        GOOD + "pruner: {type: hyperband, reduction_factor: 1}\n",
        match="pruner.reduction_factor: must be >= 2",
    ),
    Case(
        "domain-n-ei-candidates",
        _sub("sampler: {type: tpe, seed: 0}", "sampler: {type: tpe, n_ei_candidates: 0}"),
        match="sampler.n_ei_candidates: must be >= 1",
    ),
    # YAML syntax
    Case("yaml-unclosed-bracket", "name: [toy\n", match="YAML syntax error at line"),
    Case("yaml-bad-indent", GOOD.replace("  y: {", " y: {"), match="YAML syntax error"),
    Case("yaml-tab-indent", GOOD.replace("  y: {", "\ty: {"), match="YAML syntax error"),
    Case("yaml-mapping-in-scalar", "name: a: b\n", match="YAML syntax error"),
    Case("yaml-unclosed-quote", 'name: "toy\n', match="YAML syntax error"),
    Case("yaml-duplicate-key", GOOD + "name: again\n", match="name: duplicate key"),
    Case("yaml-not-utf8", "name: caf\xe9\n", match="cannot read"),  # written as latin-1
    # Not a mapping
    Case("doc-list", "- name\n- toy\n", match="a spec must be a YAML mapping"),
    Case("doc-scalar", "just a string\n", match="a spec must be a YAML mapping"),
    Case("doc-empty", "", match="a spec must be a YAML mapping"),
    Case("doc-only-comment", "# nothing here\n", match="a spec must be a YAML mapping"),
    Case("doc-two-documents", GOOD + "---\n" + GOOD, match="but found another document"),
    # Unknown keys
    Case("key-unknown-top", GOOD + "bogus: 1\n", match="bogus: unknown key"),
    Case(
        "key-typo-param",
        _x("{type: float, low: 1, high: 2, lgo: true}"),
        match="did you mean 'log'",
    ),
    Case("key-typo-budget", _sub("n_trials: 2", "ntrials: 2"), match="budget.ntrials"),
    Case(
        "key-missing-objective",
        _sub("objective: toy_objectives:quadratic\n", ""),
        match="objective: is required",
    ),
    # Wrong types
    Case("type-name-int", _sub("name: toy", "name: 123"), match="name: must be a non-empty string"),
    Case("type-n-trials-str", _sub("n_trials: 2", "n_trials: ten"), match="must be an integer"),
    Case(
        "type-budget-list",
        _sub("budget: {n_trials: 2}", "budget: [2]"),
        match="budget: must be a mapping",
    ),
    Case("type-space-list", _sub(SPACE_LINES, "  - x\n"), match="search_space"),
    Case("type-low-str", _x("{type: float, low: one, high: 2}"), match="must be a number"),
    Case("type-low-bool", _x("{type: float, low: true, high: 2}"), match="must be a number"),
    Case("type-param-unknown", _x("{type: complex, low: 0, high: 1}"), match="search_space.x.type"),
    Case("type-direction", _sub("direction: minimize", "direction: sideways"), match="direction"),
    # Bounds
    Case("bound-nan", _x("{type: float, low: .nan, high: 1}"), match="must be finite"),
    Case("bound-inf", _x("{type: float, low: 0, high: .inf}"), match="must be finite"),
    Case("bound-minus-inf", _x("{type: float, low: -.inf, high: 0}"), match="must be finite"),
    Case("bound-low-gt-high", _x("{type: float, low: 5, high: 1}"), match="must be <= high"),
    Case("bound-log-zero", _x("{type: float, low: 0, high: 1, log: true}"), match="> 0 on a log"),
    Case(
        "bound-log-negative", _x("{type: int, low: -4, high: 8, log: true}"), match="> 0 on a log"
    ),
    Case("bound-step-zero", _x("{type: float, low: 0, high: 1, step: 0}"), match="must be > 0"),
    Case("bound-int-huge", _x("{type: int, low: 0, high: 99999999999999999999}"), match="2**53"),
    Case("bound-missing-high", _x("{type: float, low: 0}"), match="x.high: is required"),
    # Choices
    Case("choices-empty", _x("{type: categorical, choices: []}"), match="non-empty list"),
    Case("choices-duplicate", _x("{type: categorical, choices: [a, b, a]}"), match="duplicate"),
    Case("choices-nested", _x("{type: categorical, choices: [[1, 2]]}"), match="choices must be"),
    # Grids
    Case(
        "grid-huge",
        _sub("type: tpe, seed: 0", "type: grid")
        .replace("low: -10, high: 10}", "low: -10, high: 10, step: 0.000001}")
        .replace("n_trials: 2", "n_trials: 1"),
        match="more than 100000 points",
    ),
    Case(
        "grid-continuous",
        _sub("type: tpe, seed: 0", "type: grid"),
        match="needs 'values' or 'step'",
    ),
    # Samplers and pruners
    Case("sampler-unknown", _sub("type: tpe, seed: 0", "type: tpx"), match="did you mean 'tpe'"),
    Case(
        "sampler-unknown-option",
        _sub("seed: 0}", "seed: 0, n_startup: 5}"),
        match="sampler.n_startup",
    ),
    Case(
        "sampler-option-type",
        _sub("seed: 0}", "seed: 0, n_startup_trials: ten}"),
        match="sampler.n_startup_trials",
    ),
    Case("sampler-seed-negative", _sub("seed: 0", "seed: -1"), match="sampler.seed"),
    Case("pruner-unknown", GOOD + "pruner: {type: medain}\n", match="did you mean 'median'"),
    Case(
        "pruner-unknown-option", GOOD + "pruner: {type: median, warmup: 3}\n", match="pruner.warmup"
    ),
    Case(
        "retry-grace-too-short",
        GOOD + "retry: {heartbeat_interval: 10, grace_period: 5}\n",
        match="must exceed",
    ),
    # YAML tags that would run code under an unsafe loader
    Case(
        "tag-apply-os-system",
        GOOD + f'fixed: {{x2: !!python/object/apply:os.system ["touch {MARKER}"]}}\n',
        match="python/object/apply:os.system",
    ),
    Case(
        "tag-apply-top-level",
        f'!!python/object/apply:os.system ["touch {MARKER}"]\n',
        match="python/object/apply:os.system",
    ),
    Case(
        "tag-new-subprocess",
        _sub(
            "name: toy", f'name: !!python/object/new:subprocess.check_call [["touch", "{MARKER}"]]'
        ),
        match="python/object/new:subprocess.check_call",
    ),
    Case("tag-name", _sub("name: toy", "name: !!python/name:os.system"), match="python/name"),
    Case(
        "yaml-billion-laughs",
        GOOD + LAUGHS,
        match="more than 10000 items",
    ),
    # Objectives
    Case(
        "objective-no-module",
        _sub("toy_objectives:quadratic", "no_such_module:f"),
        match="cannot import",
    ),
    Case(
        "objective-no-function",
        _sub("toy_objectives:quadratic", "toy_objectives:nope"),
        match="no callable 'nope'",
    ),
    Case(
        "objective-no-function-create",
        _sub("toy_objectives:quadratic", "toy_objectives:nope"),
        args=("create", "{spec}", "--storage", "sqlite:///{db}"),
        match="no callable 'nope'",
    ),
    Case(
        "objective-no-module-create",
        _sub("toy_objectives:quadratic", "no_such_module:f"),
        args=("create", "{spec}", "--storage", "sqlite:///{db}"),
        match="cannot import 'no_such_module'",
    ),
    Case(
        "objective-no-colon",
        _sub("toy_objectives:quadratic", "toy_objectives"),
        match="package.module:function",
    ),
    Case(
        "objective-raises-on-import",
        _sub("toy_objectives:quadratic", "boom_on_import:f"),
        match="RuntimeError: kaboom",
    ),
    Case(
        "objective-exits-on-import",
        _sub("toy_objectives:quadratic", "exit_on_import:f"),
        match="SystemExit",
    ),
    # `hpo create` goes through the same loader
    Case(
        "create-low-gt-high",
        _x("{type: int, low: 9, high: 1}"),
        args=("create", "{spec}", "--storage", "sqlite:///{db}"),
        match="must be <= high",
    ),
]

COMMAND_CASES = [
    # Flags click rejects while parsing: its usage block, exit 2
    Case(
        "flag-workers-zero",
        GOOD,
        args=("run", "{spec}", "--workers", "0", "--storage", "sqlite:///{db}"),
        usage=True,
        match="--workers",
    ),
    Case(
        "flag-workers-abc",
        GOOD,
        args=("run", "{spec}", "--workers", "abc", "--storage", "sqlite:///{db}"),
        usage=True,
        match="'abc' is not a valid integer",
    ),
    Case(
        "flag-workers-env",
        GOOD,
        args=("run", "{spec}", "--storage", "sqlite:///{db}"),
        env={"HPO_WORKERS": "-3"},
        usage=True,
        match="--workers",
    ),
    Case(
        "flag-timeout-negative",
        GOOD,
        args=("run", "{spec}", "--timeout", "-1", "--storage", "sqlite:///{db}"),
        usage=True,
        match="--timeout",
    ),
    Case(
        "flag-unknown-option",
        GOOD,
        args=("run", "{spec}", "--bogus", "--storage", "sqlite:///{db}"),
        usage=True,
        match="No such option '--bogus'",
    ),
    Case(
        "flag-format-xml-status",
        args=("status", "toy", "--format", "xml", "--storage", "sqlite:///{db}"),
        usage=True,
        match="'xml' is not one of",
    ),
    Case(
        "flag-format-xml-export",
        args=("export", "toy", "--format", "xml", "--storage", "sqlite:///{db}"),
        usage=True,
        match="'xml' is not one of",
    ),
    Case(
        "flag-per-gpu-zero",
        args=("worker", "toy", "--per-gpu", "0", "--storage", "sqlite:///{db}"),
        usage=True,
        match="--per-gpu",
    ),
    Case(
        "flag-trial-negative",
        args=("retrain", "toy", "--trial", "-1", "--storage", "sqlite:///{db}"),
        usage=True,
        match="--trial",
    ),
    Case(
        "flag-params-missing-file",
        args=("retrain", "toy", "--params", "{tmp}/none.yaml", "--storage", "sqlite:///{db}"),
        usage=True,
        match="does not exist",
    ),
    Case(
        "flag-port-zero",
        args=("dashboard", "--port", "0", "--storage", "sqlite:///{db}"),
        usage=True,
        match="--port",
    ),
    Case(
        "arg-spec-missing",
        args=("run", "--storage", "sqlite:///{db}"),
        usage=True,
        match="Missing argument 'SPEC'",
    ),
    Case(
        "arg-study-missing",
        args=("worker", "--storage", "sqlite:///{db}"),
        usage=True,
        match="Missing argument 'STUDY'",
    ),
    Case(
        "arg-spec-is-directory",
        args=("run", "{tmp}", "--storage", "sqlite:///{db}"),
        usage=True,
        match="is a directory",
    ),
    Case(
        "arg-unknown-command",
        args=("frobnicate",),
        usage=True,
        match="No such command 'frobnicate'",
    ),
    # Errors hpo detects: one line, exit 2
    Case(
        "arg-spec-nonexistent",
        args=("run", "{tmp}/nope.yaml", "--storage", "sqlite:///{db}"),
        match="nope.yaml: no such file",
    ),
    Case(
        "flag-gpus-letters",
        args=("worker", "toy", "--gpus", "x,y", "--storage", "sqlite:///{db}"),
        match="--gpus must be",
    ),
    Case(
        "flag-gpus-env",
        args=("worker", "toy", "--storage", "sqlite:///{db}"),
        env={"HPO_GPUS": "0,one"},
        match="--gpus must be",
    ),
    Case(
        "delete-without-yes",
        args=("delete", "toy", "--storage", "sqlite:///{db}"),
        match="refusing to delete without --yes",
    ),
    Case(
        "retrain-trial-and-params",
        args=(
            "retrain",
            "toy",
            "--trial",
            "0",
            "--params",
            "{spec}",
            "--storage",
            "sqlite:///{db}",
        ),
        spec="params: {x: 1}\n",
        usage=True,
        match="either --trial or --params",
    ),
    Case(
        "retrain-params-not-mapping",
        args=("retrain", "toy", "--params", "{spec}", "--storage", "sqlite:///{db}"),
        spec="- 1\n",
        match="expected a mapping with a 'params:'",
    ),
    Case(
        "retrain-params-unsafe-tag",
        args=("retrain", "toy", "--params", "{spec}", "--storage", "sqlite:///{db}"),
        spec=f'params: !!python/object/apply:os.system ["touch {MARKER}"]\n',
        match="cannot read params",
    ),
]

STORAGE_CASES = [
    # Not a storage URL at all, or an unknown database: a usage error
    Case(
        "storage-unknown-scheme",
        GOOD,
        args=("run", "{spec}", "--storage", "nosuchdb://x"),
        match="invalid storage URL 'nosuchdb://x'",
    ),
    Case(
        "storage-not-a-url",
        GOOD,
        args=("run", "{spec}", "--storage", "not a url"),
        match="invalid storage URL",
    ),
    Case(
        "storage-bad-port",
        args=("list", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:abc/x"),
        match="invalid storage URL",
    ),
    Case(
        "storage-env-unknown-scheme",
        args=("status", "toy"),
        env={"HPO_STORAGE": "nosuchdb://x"},
        match="invalid storage URL",
    ),
    # A storage that cannot be reached or used: a run failure, exit 1
    Case(
        "storage-refused",
        GOOD,
        args=("run", "{spec}", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"),
        code=1,
        match="Connection refused",
    ),
    Case(
        "storage-refused-status",
        args=("status", "toy", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"),
        code=1,
        match="cannot open storage",
    ),
    Case(
        "storage-missing-dir",
        GOOD,
        args=("run", "{spec}", "--storage", "sqlite:///{tmp}/nonexistent/dir/x.db"),
        code=1,
        match="does not exist",
    ),
    Case(
        "storage-missing-dir-worker",
        args=("worker", "toy", "-p", "1", "--storage", "sqlite:///{tmp}/nonexistent/dir/x.db"),
        code=2,  # joining reads the study: a missing file means no such study, not an outage
        match="no study named 'toy'",
    ),
    Case(
        "storage-not-sqlite",
        GOOD,
        args=("run", "{spec}", "--storage", "sqlite:///{tmp}/notes.txt"),
        code=1,
        match="file is not a database",
    ),
    Case(
        "storage-mysql-no-driver",
        GOOD,
        args=("run", "{spec}", "--storage", "mysql://u:pw@127.0.0.1/x"),
        code=1,
        match="no driver",
    ),
]


def _fill(text: str, tmp: Path) -> str:
    return text.format(spec=tmp / "spec.yaml", db=tmp / "study.db", tmp=tmp)


def _assert_clean_failure(res: subprocess.CompletedProcess[str], case: Case) -> None:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode == case.code, out
    assert res.stdout == "", res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if case.usage:
        assert lines[0].startswith("Usage: "), res.stderr
        assert [line for line in lines if line.startswith("Error: ")] == [lines[-1]], res.stderr
        assert len(lines) <= 3 and case.match in lines[-1], res.stderr
    else:
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("hpo: error: ") and case.match in lines[0], res.stderr


def _objective_modules(tmp: Path) -> None:
    (tmp / "boom_on_import.py").write_text('raise RuntimeError("kaboom")\n')
    (tmp / "exit_on_import.py").write_text("import sys\n\nsys.exit(3)\n")


def _run_case(case: Case, tmp: Path) -> subprocess.CompletedProcess[str]:
    _objective_modules(tmp)
    if case.spec is not None:
        path = tmp / "spec.yaml"
        text = case.spec.replace("{tmp}", str(tmp))  # MARKER's placeholder
        if case.id == "yaml-not-utf8":
            path.write_bytes(text.encode("latin-1"))
        else:
            write_spec(path, text)
    (tmp / "notes.txt").write_text("not a database\n")
    # tmp for the objective modules; the caller's PYTHONPATH still picks the hpo under test
    pythonpath = os.pathsep.join(filter(None, [str(tmp), str(TESTS), os.environ.get("PYTHONPATH")]))
    return run_hpo(
        *(_fill(a, tmp) for a in case.args), cwd=tmp, timeout=60, **case.env, PYTHONPATH=pythonpath
    )


@pytest.mark.parametrize("case", SPEC_CASES + COMMAND_CASES + STORAGE_CASES, ids=lambda c: c.id)
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path: Path, case: Case) -> None:
    res = _run_case(case, tmp_path)
    _assert_clean_failure(res, case)
    assert not (tmp_path / "study.db").exists()
    assert not (tmp_path / "hpo.db").exists()  # the default storage, in the working directory
    assert not (tmp_path / "nonexistent").exists()
    assert (tmp_path / "notes.txt").read_text() == "not a database\n"
    assert not list(tmp_path.glob("notes.txt-*"))  # no -wal / -shm beside it
    assert not (tmp_path / "pwned").exists()  # no YAML tag ran
    assert not (tmp_path / ".hpo").exists()  # no storage remembered for the next commands


def test_the_corpus_is_large() -> None:
    assert len(SPEC_CASES) + len(COMMAND_CASES) + len(STORAGE_CASES) >= 40


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding one study, `toy`, created once for the unknown-name cases."""
    tmp = tmp_path_factory.mktemp("toy")
    spec = write_spec(tmp / "toy.yaml", GOOD)
    res = run_hpo("create", str(spec), "--storage", f"sqlite:///{tmp / 'toy.db'}", cwd=tmp)
    assert res.returncode == 0, res.stderr
    return tmp / "toy.db"


UNKNOWN_STUDY = [
    ("status", "nosuch"),
    ("best", "nosuch"),
    ("export", "nosuch", "--format", "json"),
    ("delete", "nosuch", "--yes"),
    ("stop", "nosuch"),
    ("worker", "nosuch", "--processes", "1"),
    ("retrain", "nosuch"),
]


def _studies(url: str) -> list[str]:
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        return [s.study_name for s in optuna.get_all_study_summaries(storage)]
    finally:
        storage.engine.dispose()


@pytest.mark.parametrize("args", UNKNOWN_STUDY, ids=lambda a: a[0])
def test_unknown_study_is_one_line_exit_2_and_changes_nothing(
    toy_db: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"sqlite:///{toy_db}"
    res = run_hpo(*args, "--storage", url, cwd=tmp_path, timeout=60)
    _assert_clean_failure(res, Case(args[0], code=2, match="no study named 'nosuch'"))
    assert _studies(url) == ["toy"]
    assert not (tmp_path / "runs").exists()  # retrain wrote no output directory


def test_a_read_only_command_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    res = run_hpo("status", "toy", "--storage", f"sqlite:///{db}", timeout=60)
    assert res.returncode == 2 and "no study named 'toy'" in res.stderr
    assert not db.exists()


@pytest.mark.postgres
def test_on_postgresql_bad_input_creates_no_table_and_no_study(tmp_path: Path, pg_url: str) -> None:
    """A bad spec, bad flags and unknown names against a fresh PostgreSQL database."""
    spec_cases = [c for c in SPEC_CASES if c.id in {"yaml-unclosed-bracket", "bound-log-zero"}]
    for case in spec_cases:
        res = _run_case(Case(case.id, case.spec, ("run", "{spec}", "--storage", pg_url)), tmp_path)
        _assert_clean_failure(res, case)
    write_spec(tmp_path / "spec.yaml", GOOD)
    flags = Case(
        "workers",
        args=("run", "{spec}", "-w", "0", "--storage", pg_url),
        usage=True,
        match="--workers",
    )
    _assert_clean_failure(_run_case(flags, tmp_path), flags)
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    # Unknown study names: opening the storage creates Optuna's (empty) schema, no study.
    for args in [a for a in UNKNOWN_STUDY if a[0] in ("status", "worker", "delete")]:
        res = run_hpo(*args, cwd=tmp_path, timeout=60, HPO_STORAGE=pg_url)
        _assert_clean_failure(res, Case(args[0], match="no study named 'nosuch'"))
    assert _studies(pg_url) == []
    ls = run_hpo("list", "--format", "json", HPO_STORAGE=pg_url)
    assert ls.returncode == 0 and json.loads(ls.stdout) == []
