"""The deployment files, checked by parsing: no Docker engine, no network.

docker-compose.yml is loaded with yaml.safe_load and Compose's variable interpolation is
reproduced here, so each check sees what `docker compose` would run. Every `hpo` command
the file runs is resolved by the real click CLI (parsed and validated, never invoked), with
the container's environment applied, so a renamed option or env var breaks this test
rather than a deployment.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from hpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

PASSWORD_VAR = "POSTGRES_PASSWORD"
WORKERS = ("worker", "worker-cpu")
# Services whose command is an `hpo` invocation; the check fails if one stops being one.
HPO_SERVICES = {"worker", "worker-cpu", "create"}
# A spec's checkpoint_dir when it names none, relative to the working directory.
DEFAULT_CHECKPOINT_DIR = "checkpoints"
INIT_PROGRAMS = {"tini", "tini-static", "docker-init", "dumb-init"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)
_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")
# The only acceptable source of the password: the variable, required, with no default.
_PASSWORD_REF = re.compile(r"^\$\{" + PASSWORD_VAR + r"(?::?\?[^}]*)?\}$")


# ---------------------------------------------------------------------------------------
# Compose, reproduced


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution of ``text``; a required variable that is unset gets a dummy."""

    def substitute(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"] or "", m["arg"] or ""
        value = env.get(name)
        if op.startswith(":") and not value:  # with ':', empty counts as unset
            value = None
        if op.endswith("-"):
            return arg if value is None else value
        if op.endswith("+"):
            return "" if value is None else arg
        if value is None:
            return f"dummy-{name.lower().replace('_', '-')}" if op.endswith("?") else ""
        return value

    return "$".join(_INTERPOLATION.sub(substitute, part) for part in text.split("$$"))


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment``, in either of Compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def split_volume(entry: str | Mapping[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read_only) of a volume entry, short or long syntax."""
    if isinstance(entry, Mapping):
        return str(entry.get("source", "")), str(entry["target"]), bool(entry.get("read_only"))
    parts = entry.split(":")
    if len(parts) == 1:
        return "", parts[0], False
    mode = parts[2] if len(parts) > 2 else ""
    return parts[0], parts[1], "ro" in mode.split(",")


def is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith(("/", ".", "~")) and "/" not in source


def host_binding(entry: str | int | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(host address, host port) a port entry publishes on; (None, None) for none."""
    if isinstance(entry, Mapping):
        published = entry.get("published")
        return entry.get("host_ip"), None if published is None else str(published)
    parts = str(entry).split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return None, parts[0]
    return None, None


def depends_on_healthy(service: Mapping[str, Any], name: str) -> bool:
    deps = service.get("depends_on") or {}
    return isinstance(deps, Mapping) and deps.get(name, {}).get("condition") == "service_healthy"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    result = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def dockerfile_last(instruction: str) -> str | None:
    found = [args for word, args in dockerfile_instructions() if word == instruction]
    return found[-1] if found else None


def exec_form(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    value = value.strip()
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def builds_our_image(service: Mapping[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve()


def argv(service: Mapping[str, Any]) -> list[str]:
    """What the container runs: entrypoint + command, the Dockerfile's where not overridden."""
    ours = builds_our_image(service)
    if "entrypoint" in service:
        entrypoint = exec_form(service["entrypoint"])
        default_cmd: list[str] = []  # overriding the entrypoint drops the image's CMD
    else:
        entrypoint = exec_form(dockerfile_last("ENTRYPOINT")) if ours else []
        default_cmd = exec_form(dockerfile_last("CMD")) if ours else []
    command = exec_form(service["command"]) if "command" in service else default_cmd
    return entrypoint + command


def without_init(args: list[str]) -> list[str]:
    if args and PurePosixPath(args[0]).name in INIT_PROGRAMS:
        return args[args.index("--") + 1 :] if "--" in args else args[1:]
    return args


def hpo_args(service: Mapping[str, Any]) -> list[str] | None:
    """The arguments after `hpo`, or None where the service does not run hpo."""
    args = without_init(argv(service))
    return args[1:] if args and PurePosixPath(args[0]).name == "hpo" else None


def storage_url(service: Mapping[str, Any], name: str) -> URL:
    url = environment(service).get("HPO_STORAGE")
    assert url, f"{name} sets no HPO_STORAGE"
    return make_url(url)


def cli_envvars() -> set[str]:
    """Every environment variable an option of the hpo CLI reads."""
    names = {"HPO_STORAGE"}
    for command in [main, *main.commands.values()]:
        for param in command.params:
            if isinstance(param.envvar, str):
                names.add(param.envvar)
            elif param.envvar:
                names.update(param.envvar)
    return names


def resolve_cli(args: list[str]) -> click.Context:
    """Parse ``hpo ARGS`` exactly as the CLI would, down to the subcommand, without running it."""
    ctx = main.make_context("hpo", list(args))
    # The group stops parsing at the subcommand's name and keeps what follows it in ctx.args.
    assert len(args) > len(ctx.args), f"no subcommand in hpo {shlex.join(args)}"
    tokens = args[len(args) - len(ctx.args) - 1 :]
    name, command, rest = main.resolve_command(ctx, tokens)
    assert name is not None and command is not None
    return command.make_context(name, rest, parent=ctx)


# ---------------------------------------------------------------------------------------
# Fixtures

ENV_EXAMPLE_VALUES = read_env_file(ENV_EXAMPLE) if ENV_EXAMPLE.exists() else {}
# The two ways people run it: no .env at all (defaults; required ones get dummies) and
# the .env.example values. A secret stand-in replaces the placeholder password.
SECRET = "s3cret-stand-in"
ENVIRONMENTS = {
    "defaults": {},
    "env.example": {**ENV_EXAMPLE_VALUES, PASSWORD_VAR: SECRET},
}


@pytest.fixture(scope="module")
def text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def raw(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(params=sorted(ENVIRONMENTS))
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return ENVIRONMENTS[request.param]


@pytest.fixture
def compose(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it after interpolation."""
    return interpolate_tree(raw, env)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate of HPO_* variables, so the developer's own do not leak into a check."""
    for name in cli_envvars():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------
# The file as a whole


def test_services_exist_and_there_is_no_version_key(raw: dict[str, Any]) -> None:
    assert "version" not in raw, "the Compose spec has no `version:`; Compose warns on it"
    assert {"postgres", "dashboard", "worker", "create"} <= set(raw["services"])


def test_every_variable_has_a_default_or_an_error_message(text: str) -> None:
    """A bare ${VAR} that is unset becomes an empty string with only a warning."""
    bare = [m[0] for m in _INTERPOLATION.finditer(text) if not m["op"]]
    assert not bare, f"give these a default (:-) or an error (:?): {bare}"


def test_every_variable_is_in_env_example(text: str) -> None:
    used = {m["name"] for m in _INTERPOLATION.finditer(text)}
    missing = used - set(ENV_EXAMPLE_VALUES)
    assert not missing, f".env.example does not mention {sorted(missing)}"


def test_env_example_has_a_placeholder_password(text: str) -> None:
    placeholder = ENV_EXAMPLE_VALUES.get(PASSWORD_VAR)
    assert placeholder, f".env.example must set {PASSWORD_VAR}=<placeholder>"
    assert placeholder not in text
    assert placeholder not in DOCKERFILE.read_text()


# ---------------------------------------------------------------------------------------
# The password


def test_postgres_password_comes_from_the_environment(raw: dict[str, Any]) -> None:
    value = environment(raw["services"]["postgres"]).get(PASSWORD_VAR)
    assert value is not None and _PASSWORD_REF.match(value), (
        f"{PASSWORD_VAR} must be ${{{PASSWORD_VAR}:?...}} with no default, got {value!r}"
    )


def test_no_literal_password_anywhere(text: str) -> None:
    # every mention of the variable is a required interpolation, never one with a default
    for m in _INTERPOLATION.finditer(text):
        if m["name"] == PASSWORD_VAR:
            assert _PASSWORD_REF.match(m[0]), f"the password must have no default: {m[0]}"
    # no `SOMETHING_PASSWORD: value` / `...PASSWORD=value` with a literal value
    assignment = re.compile(r"""^\s*-?\s*["']?(\w*PASSWORD\w*)["']?\s*[:=]\s*["']?(.*)$""")
    for line in text.splitlines():
        m = assignment.match(line)
        if m and not line.lstrip().startswith("#"):
            assert m[2].startswith(("${", "*")), f"a literal password: {line.strip()}"


def test_the_password_reaches_containers_only_through_their_environment(
    raw: dict[str, Any],
) -> None:
    """With a known password: every URL carries exactly it, and no command line shows it."""
    compose = interpolate_tree(raw, {PASSWORD_VAR: SECRET})
    urls = [url for s in strings(compose) for url in _URL.findall(s) if "@" in url]
    assert urls
    for url in urls:
        assert make_url(url).password == SECRET, f"a URL with another password: {url}"
    for name, service in compose["services"].items():
        for arg in argv(service):
            assert SECRET not in arg, f"{name}'s command line shows the password (ps)"


# ---------------------------------------------------------------------------------------
# postgres and dashboard


def test_postgres_has_a_healthcheck_and_a_named_volume(raw: dict[str, Any]) -> None:
    postgres = raw["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    sources = [split_volume(v)[0] for v in postgres["volumes"]]
    named = [s for s in sources if is_named_volume(s)]
    assert named, "PostgreSQL's data must be on a named volume"
    assert set(named) <= set(raw.get("volumes") or {}), "declare it under top-level volumes"


@pytest.mark.parametrize("name", ["postgres", "dashboard"])
def test_published_on_loopback_by_default(raw: dict[str, Any], name: str) -> None:
    compose = interpolate_tree(raw, {})
    ports = compose["services"][name].get("ports") or []
    assert ports
    for entry in ports:
        assert host_binding(entry)[0] == "127.0.0.1", f"{name} publishes {entry!r}"


def test_dashboard_waits_for_postgres_and_takes_the_url_from_its_environment(
    raw: dict[str, Any],
) -> None:
    dashboard = raw["services"]["dashboard"]
    assert depends_on_healthy(dashboard, "postgres")
    assert environment(dashboard).get("HPO_STORAGE")
    assert "HPO_STORAGE" in " ".join(argv(dashboard))
    assert not any("://" in arg for arg in argv(dashboard))


def test_dashboard_and_workers_share_one_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = environment(services["postgres"])
    urls = {name: storage_url(services[name], name) for name in ("dashboard", "create", *WORKERS)}
    where = {
        name: (u.drivername, u.host, u.port, u.database, u.username) for name, u in urls.items()
    }
    assert len(set(where.values())) == 1, where
    url = urls["dashboard"]
    assert url.drivername == "postgresql+psycopg"
    assert url.username == postgres["POSTGRES_USER"]
    assert url.database == postgres["POSTGRES_DB"]


def test_by_default_the_storage_is_the_postgres_service(raw: dict[str, Any]) -> None:
    compose = interpolate_tree(raw, {})
    for name in ("dashboard", "create", *WORKERS):
        url = storage_url(compose["services"][name], name)
        assert (url.host, url.port) == ("postgres", 5432), f"{name}: {url!r}"


# ---------------------------------------------------------------------------------------
# Workers


@pytest.mark.parametrize("name", WORKERS)
def test_worker_builds_from_the_repo_dockerfile(raw: dict[str, Any], name: str) -> None:
    worker = raw["services"][name]
    assert "build" in worker
    assert builds_our_image(worker), f"{name} must build from {DOCKERFILE.name}"
    assert DOCKERFILE.is_file()


def test_worker_reserves_gpus(raw: dict[str, Any]) -> None:
    devices = raw["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


@pytest.mark.parametrize("name", WORKERS)
def test_worker_can_scale(raw: dict[str, Any], name: str) -> None:
    """`docker compose up --scale worker=N`: no fixed name, no fixed host port."""
    worker = raw["services"][name]
    assert "container_name" not in worker
    for entry in worker.get("ports") or []:
        assert host_binding(entry)[1] is None, f"{name} publishes a fixed host port: {entry!r}"
    assert str(worker["restart"]).startswith("on-failure")
    assert depends_on_healthy(worker, "postgres")


@pytest.mark.parametrize("name", WORKERS)
def test_worker_checkpoints_outlive_the_container(raw: dict[str, Any], name: str) -> None:
    workdir = PurePosixPath(dockerfile_last("WORKDIR") or "/")
    target = str(workdir / DEFAULT_CHECKPOINT_DIR)
    compose = interpolate_tree(raw, {})
    mounts = {split_volume(v)[1]: split_volume(v)[0] for v in compose["services"][name]["volumes"]}
    assert target in mounts, f"{name} must mount a volume on {target}"
    assert mounts[target] in (compose.get("volumes") or {})


def test_hpo_never_runs_as_pid_1(raw: dict[str, Any]) -> None:
    """A trial process reads a parent PID of 1 as "my worker died" and exits at once."""
    for name in HPO_SERVICES:
        service = raw["services"][name]
        args = argv(service)
        has_init = service.get("init") is True or PurePosixPath(args[0]).name in INIT_PROGRAMS
        assert has_init, f"{name} runs hpo as PID 1: add `init: true` or tini"


# ---------------------------------------------------------------------------------------
# The commands and variables against the real CLI


def test_every_hpo_command_is_a_valid_invocation(
    compose: dict[str, Any], cli_env: pytest.MonkeyPatch
) -> None:
    found = set()
    for name, service in compose["services"].items():
        args = hpo_args(service)
        if args is None:
            continue
        found.add(name)
        with cli_env.context() as mp:
            for key, value in environment(service).items():
                if value is not None:
                    mp.setenv(key, value)
            try:
                ctx = resolve_cli(args)
            except click.ClickException as e:
                pytest.fail(f"{name}: hpo {shlex.join(args)}: {e.format_message()}")
            url = environment(service).get("HPO_STORAGE")
            assert ctx.params["storage"] == url, f"{name} does not get its storage URL"
    assert found >= HPO_SERVICES, f"these no longer run hpo: {HPO_SERVICES - found}"


def test_every_hpo_variable_set_is_read_by_the_cli(raw: dict[str, Any]) -> None:
    known = cli_envvars()
    for name, service in raw["services"].items():
        unknown = {k for k in environment(service) if k.startswith("HPO_")} - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which hpo does not read"


def test_create_is_a_one_shot_setup_step(raw: dict[str, Any]) -> None:
    create = raw["services"]["create"]
    assert create["profiles"] == ["setup"]
    args = hpo_args(create)
    assert args is not None and args[0] == "create" and args[1].startswith("/studies/")
    mounts = [split_volume(v) for v in create["volumes"]]
    assert any(target == "/studies" and read_only for _, target, read_only in mounts)
    assert depends_on_healthy(create, "postgres")


# ---------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_runs_as_an_unprivileged_user_with_no_secrets() -> None:
    user = dockerfile_last("USER")
    assert user is not None, "the Dockerfile needs a USER line"
    assert user.split(":")[0] not in ("root", "0")
    assert "password" not in DOCKERFILE.read_text().lower()


def test_dockerfile_copies_only_what_exists() -> None:
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from" not in args:
            *sources, _ = exec_form(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repo"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "*.db", "checkpoints"} <= patterns
