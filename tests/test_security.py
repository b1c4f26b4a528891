"""Security guarantees of the `hpo` command (docs/security.md says which test checks what).

- A storage password never appears in any output, log line, error message, exported file,
  retrain manifest, or anything hpo stores in the database (trial and study attributes, its
  own tables), whether the URL comes from ``--storage``, from ``HPO_STORAGE`` or from the
  spec's ``storage:`` key, and whether the storage works or not.
- ``hpo dashboard`` binds 127.0.0.1 unless told otherwise.
- Specs (and ``--params`` files) are read with a safe YAML loader: ``!!python/...`` tags are
  refused, never executed.
- A spec's objective *is* imported, i.e. run, by ``hpo create``: that is the documented trust
  boundary, pinned here so the docs stay true.

docker-compose.yml's password handling is checked in tests/test_compose.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_ADMIN_URL, TESTS, hpo_env, run_hpo, write_spec

TOY = """\
name: {name}
objective: toy_objectives:quadratic
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: -10, high: 10}}
  y: {{type: int, low: 0, high: 5}}
sampler: {{type: tpe, seed: 0}}
pruner: {{type: median, n_startup_trials: 2}}
budget: {{n_trials: {n}}}
"""


@dataclass(frozen=True)
class Secret:
    """A PostgreSQL role with a password, and the URL that carries it."""

    url: str
    password: str
    core: str  # the random part: found in any spelling of the password (quoted or not)

    def assert_absent(self, text: str, where: str) -> None:
        assert self.core not in text, f"the storage password leaked into {where}:\n{text}"


@pytest.fixture
def secret(pg_url: str) -> Iterator[Secret]:
    """A role ``hpo_sec_<random>`` with a random password, owner of the test database.

    The server trusts 127.0.0.1, so any password logs in; what matters is that the URL
    carries one. The database is dropped before the role (a role owning objects cannot be
    dropped); pg_url's own teardown then finds it gone.
    """
    core = secrets.token_hex(12)
    password = f"S3c-{core}"
    role = f"hpo_sec_{secrets.token_hex(4)}"
    url = sa.engine.make_url(pg_url)
    database = url.database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as con:
        con.exec_driver_sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        con.exec_driver_sql(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    try:
        yield Secret(
            url.set(username=role, password=password).render_as_string(hide_password=False),
            password,
            core,
        )
    finally:
        with admin.connect() as con:
            con.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            con.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


def _check(res: subprocess.CompletedProcess[str], secret: Secret, code: int = 0) -> str:
    out = res.stdout + res.stderr
    secret.assert_absent(out, f"the output of {res.args[3:]}")
    assert "Traceback" not in out, out
    assert res.returncode == code, out
    return out


def _database_text(url: str) -> str:
    """Every row of every table, as text: trial/study user and system attrs, hpo's tables."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            tables = sa.inspect(con).get_table_names()
            assert {"trial_user_attributes", "study_user_attributes", "hpo_workers"} <= set(tables)
            return "\n".join(
                repr(row) for t in tables for row in con.exec_driver_sql(f'SELECT * FROM "{t}"')
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_password_never_leaks_from_a_whole_session(tmp_path: Path, secret: Secret) -> None:
    """Every command, with the URL in --storage (study a), HPO_STORAGE (b) and the spec (c)."""
    write_spec(tmp_path / "a.yaml", TOY.format(name="a", n=4))
    write_spec(tmp_path / "b.yaml", TOY.format(name="b", n=2))
    write_spec(tmp_path / "c.yaml", TOY.format(name="c", n=1) + f"storage: {secret.url}\n")
    flag = ("--storage", secret.url)
    env = {"HPO_STORAGE": secret.url}

    def hpo(*args: str, code: int = 0, **extra: str) -> str:
        return _check(run_hpo(*args, cwd=tmp_path, timeout=120, **extra), secret, code)

    assert "ready in" in hpo("create", "c.yaml")  # the URL in the spec's storage: key
    # Study a: every command with --storage; study b: every command with HPO_STORAGE.
    assert "ran 4 trial" in hpo("-v", "run", "a.yaml", *flag)
    hpo("create", "a.yaml", *flag)
    hpo("status", "a", *flag)
    hpo("best", "a", "-o", "a-best.yaml", *flag)
    hpo("export", "a", "--format", "csv", "-o", "a.csv", *flag)
    hpo("list", *flag)
    assert "budget spent" in hpo("-v", "worker", "a", "-p", "1", *flag)
    assert "ran 2 trial" in hpo("-vv", "run", "b.yaml", **env)
    hpo("status", "b", "--format", "json", **env)
    hpo("best", "b", "--format", "json", **env)
    hpo("export", "b", "--format", "json", "-o", "b.json", **env)
    hpo("list", "--format", "json", **env)
    assert "budget spent" in hpo("-vv", "worker", **env, HPO_STUDY="b", HPO_PROCESSES="1")
    hpo("retrain", "a", *flag, "-o", "retrained")  # its manifest records the command line
    assert "***@" in (tmp_path / "retrained" / "manifest.json").read_text()

    secret.assert_absent(_database_text(secret.url), "the database")
    hpo("stop", "a", *flag)
    hpo("stop", "b", "--now", **env)
    hpo("delete", "a", "--yes", *flag)
    hpo("delete", "b", "--yes", **env)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "c.yaml":  # c.yaml holds the URL, by design
            secret.assert_absent(path.read_text(errors="replace"), str(path))


# Each storage fails differently; the password is in every URL.
BROKEN = [
    "postgresql+psycopg://hpo:{pw}@127.0.0.1:1/hpo",  # nothing listens
    "postgresql+psycopg://hpo_no_such_role:{pw}@127.0.0.1:5432/postgres",  # no such role
    "postgresql+psycopg://postgres:{pw}@127.0.0.1:5432/hpo_no_such_db",  # no such database
    "postgresql+psycopg://hpo:{pw}@127.0.0.1:abc/hpo",  # unparsable
    "nosuchdb://hpo:{pw}@127.0.0.1/hpo",  # unknown database
    "mysql://hpo:{pw}@127.0.0.1/hpo",  # driver not installed
]
COMMANDS = [
    ("run", "toy.yaml"),
    ("create", "toy.yaml"),
    ("worker", "toy", "-p", "1"),
    ("status", "toy"),
    ("best", "toy"),
    ("export", "toy"),
    ("list",),
    ("stop", "toy"),
    ("delete", "toy", "--yes"),
    ("retrain", "toy"),
    ("dashboard", "--port", "1"),
]


@pytest.mark.postgres
def test_errors_never_show_the_password(tmp_path: Path) -> None:
    core = secrets.token_hex(12)
    secret = Secret("", f"S3c-{core}", core)
    write_spec(tmp_path / "toy.yaml", TOY.format(name="toy", n=2))
    refused = BROKEN[0].format(pw=secret.password)
    for i, args in enumerate(COMMANDS):  # every command, alternating --storage and the env
        via = {"HPO_STORAGE": refused} if i % 2 else {}
        flag = () if i % 2 else ("--storage", refused)
        res = run_hpo(*args, *flag, cwd=tmp_path, timeout=60, **via)
        assert "storage" in _check(res, secret, code=1)
    for i, url in enumerate(BROKEN[1:]):
        url = url.format(pw=secret.password)
        res = (
            run_hpo("list", "--storage", url) if i % 2 else run_hpo("status", "x", HPO_STORAGE=url)
        )
        assert res.returncode in (1, 2) and "hpo: error: " in _check(res, secret, res.returncode)
    # A one-letter password is masked in the URL without masking every "e" in the message.
    short = run_hpo("list", HPO_STORAGE="postgresql+psycopg://hpo:e@127.0.0.1:1/hpo")
    assert short.returncode == 1 and ":e@" not in short.stderr
    assert "hpo: error: cannot open storage" in short.stderr and "refused" in short.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@pytest.mark.postgres
def test_dashboard_binds_loopback_only_by_default(tmp_path: Path, secret: Secret) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "dashboard", "--port", str(port)],
        env=hpo_env(HPO_STORAGE=secret.url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start in 30 s"
                time.sleep(0.2)
        ss = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        if ss.returncode == 0:
            local = {line.split()[3] for line in ss.stdout.splitlines() if line.strip()}
            assert local == {f"127.0.0.1:{port}"}, ss.stdout
        ip = _non_loopback_ipv4()
        if ip is not None:
            with pytest.raises(OSError):
                socket.create_connection((ip, port), timeout=2).close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert f"on http://127.0.0.1:{port}/" in err
    secret.assert_absent(out + err, "the dashboard's output")


UNSAFE_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/new:subprocess.check_call [["touch", "{marker}"]]',
    "!!python/object/apply:subprocess.Popen [[touch, {marker}]]",
    '!!python/object/apply:builtins.exec ["open(\\"{marker}\\", \\"w\\")"]',
]


@pytest.mark.parametrize("tag", UNSAFE_TAGS)
def test_python_yaml_tags_are_refused_and_never_run(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    value = tag.format(marker=marker)
    spec = write_spec(
        tmp_path / "evil.yaml", TOY.format(name="evil", n=1) + f"fixed: {{a: {value}}}\n"
    )
    params = write_spec(tmp_path / "params.yaml", f"params: {value}\n")
    db = tmp_path / "h.db"
    for args in (("create", str(spec)), ("retrain", "evil", "--params", str(params))):
        res = run_hpo(*args, "--storage", f"sqlite:///{db}", timeout=60)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("hpo: error: ") and "python/" in res.stderr
    assert not marker.exists()
    assert not db.exists()


def test_a_specs_objective_runs_code_when_the_spec_is_loaded(tmp_path: Path) -> None:
    """The trust boundary of docs/security.md: whoever writes a spec runs code."""
    marker = tmp_path / "imported"
    (tmp_path / "side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\n\ndef f(trial):\n    return 0.0\n"
    )
    spec = write_spec(
        tmp_path / "s.yaml",
        TOY.format(name="s", n=1).replace("toy_objectives:quadratic", "side_effect:f"),
    )
    res = run_hpo(
        "create",
        str(spec),
        "--storage",
        f"sqlite:///{tmp_path / 'h.db'}",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(TESTS)]),
    )
    assert res.returncode == 0, res.stderr
    assert marker.exists()
