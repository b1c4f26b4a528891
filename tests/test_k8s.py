"""`hpo k8s` and its manifests, checked without a cluster.

Every rendered object is validated against Kubernetes' own JSON schemas (the strict ones,
which refuse an unknown field) from the kubernetes-validate package, offline. Every `hpo`
command a container runs is resolved by the real click CLI with the container's environment
applied, Kubernetes' `$(VAR)` expansion reproduced, as tests/test_compose.py does for the
Compose file; and the commands of a worker pod are run for real against PostgreSQL, with the
pod's mounts mapped to directories.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from conftest import hpo_env, toy_spec
from sqlalchemy.engine import make_url
from test_compose import INIT_PROGRAMS, cli_envvars, dockerfile_last, exec_form, resolve_cli

from hpo.cli import main
from hpo.cluster import KubernetesOptions, dump_manifests, render_kubernetes, resource_name

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "k8s" / "quickstart.yaml"
# What deploy/k8s/quickstart.yaml is rendered with, from the repository's root.
SHIPPED_ARGS = [
    "k8s",
    "studies/quickstart.yaml",
    "--workers",
    "2",
    "--cpu",
    "8",
    "--memory",
    "32Gi",
]
# The oldest release whose schema has every field rendered (podFailurePolicy is GA in 1.31),
# and the newest the package knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
PASSWORD = "s3cret-Test-Pw-0123456789"
HPO_CONTAINERS = {"dashboard", "create", "worker"}

VARIANTS = {
    "spec-gpu": ["--workers", "3", "--gpus-per-worker", "2", "--per-gpu", "2", "--cpu", "16",
                 "--memory", "64Gi"],
    "study-cpu": ["--gpus-per-worker", "0", "-p", "4", "-n", "research",
                  "--checkpoint-claim", "shared-ckpt", "--db-storage-class", "fast"],
    "spec-secret": ["--password-from-env", "K8S_TEST_PASSWORD", "--cpu", "500m"],
}  # fmt: skip


def hpo_k8s(*args: str, **env: str) -> click.testing.Result:
    """The real `hpo k8s`, in-process."""
    return CliRunner().invoke(main, ["k8s", *args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "toy.yaml"
    path.write_text("# a comment that ships too\n" + toy_spec(3, pruner=False))
    return path


def render(variant: str, spec_file: Path) -> list[dict[str, Any]]:
    target = "toy-study" if variant.startswith("study") else str(spec_file)
    result = hpo_k8s(target, *VARIANTS[variant], K8S_TEST_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def objects(request: pytest.FixtureRequest, spec_file: Path) -> list[dict[str, Any]]:
    return render(request.param, spec_file)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def containers(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for _, pod in pod_specs(objects):
        yield from pod.get("initContainers", [])
        yield from pod["containers"]


def expand(env: list[dict[str, Any]], secret: str = PASSWORD) -> dict[str, str]:
    """A container's environment as the kubelet sets it: `$(NAME)` of a variable defined
    earlier in the list is replaced by its value, `$$` escapes, anything else stays."""
    values: dict[str, str] = {}
    for item in env:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("hpo-db", "password"), item
            values[item["name"]] = secret
            continue

        def sub(m: re.Match[str]) -> str:
            if m.group(0).startswith("$$"):
                return m.group(0)[1:]
            return values.get(m["name"], m.group(0))

        values[item["name"]] = re.sub(
            r"\$\$|\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)", sub, item["value"]
        )
    return values


def hpo_args(container: dict[str, Any]) -> list[str] | None:
    args = [*container.get("command", []), *container.get("args", [])]
    if args and PurePosixPath(args[0]).name in INIT_PROGRAMS:
        args = args[args.index("--") + 1 :]
    return args[1:] if args and PurePosixPath(args[0]).name == "hpo" else None


# ---------------------------------------------------------------------------------------
# Kubernetes' schemas


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_for_kubernetes(objects: list[dict[str, Any]], version: str) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_can_fail(spec_file: Path) -> None:
    job = one(render("spec-gpu", spec_file), "Job")
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)


# ---------------------------------------------------------------------------------------
# The commands and variables against the real CLI


def test_every_hpo_command_is_a_valid_invocation(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = set()
    for container in containers(objects):
        args = hpo_args(container)
        if args is None:
            continue
        found.add(container["name"])
        env = expand(container["env"])
        with monkeypatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("HPO_")]:
                mp.delenv(key)
            for key, value in env.items():
                mp.setenv(key, value)
            try:
                ctx = resolve_cli(args)
            except click.ClickException as e:
                pytest.fail(f"{container['name']}: hpo {shlex.join(args)}: {e.format_message()}")
        url = make_url(ctx.params["storage"])
        assert (url.host, url.port, url.database, url.username) == (
            "hpo-postgres",
            5432,
            "hpo",
            "hpo",
        )
        assert url.password == PASSWORD, f"{container['name']} does not get the password"
    postgres = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert expand(postgres["env"])["POSTGRES_USER"] == "hpo"
    with_spec = any(o["kind"] == "ConfigMap" for o in objects)
    assert found == (HPO_CONTAINERS if with_spec else HPO_CONTAINERS - {"create"})


def test_every_hpo_variable_set_is_read_by_the_cli(objects: list[dict[str, Any]]) -> None:
    known = cli_envvars()
    for container in containers(objects):
        names = {item["name"] for item in container.get("env", [])}
        unknown = {n for n in names if n.startswith("HPO_")} - known
        assert not unknown, f"{container['name']} sets {sorted(unknown)}, which hpo does not read"


def test_hpo_never_runs_as_pid_1(objects: list[dict[str, Any]]) -> None:
    """A trial process reads a parent PID of 1 as "my worker died" and exits at once."""
    entrypoint = exec_form(dockerfile_last("ENTRYPOINT"))
    for container in containers(objects):
        if hpo_args(container) is not None:
            assert container["command"] == entrypoint, container["name"]
            assert PurePosixPath(container["command"][0]).name in INIT_PROGRAMS


# ---------------------------------------------------------------------------------------
# The password


def test_without_asking_no_output_holds_the_password(spec_file: Path, tmp_path: Path) -> None:
    result = hpo_k8s(str(spec_file), "-o", f"{tmp_path}/out/", K8S_TEST_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "out").iterdir())
    text = "".join(f.read_text() for f in files)
    assert PASSWORD not in text + result.output
    objects = [d for d in yaml.safe_load_all(text) if d]
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert "kubectl create secret generic hpo-db" in files[0].read_text()  # says how
    for container in containers(objects):
        for item in container.get("env", []):
            if "PASSWORD" in item["name"]:
                assert "secretKeyRef" in item["valueFrom"], container["name"]
        # no command line holds a URL, with a password or without
        line = " ".join([*container.get("command", []), *container.get("args", [])])
        assert "://" not in line, f"{container['name']}: {line}"


def test_asked_for_the_secret_holds_it_readable_only_by_its_owner(
    spec_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "all.yaml"
    result = hpo_k8s(str(spec_file), *VARIANTS["spec-secret"], "-o", str(out),
                     K8S_TEST_PASSWORD=PASSWORD)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert PASSWORD not in result.output
    assert out.read_text().count(PASSWORD) == 1
    secret = one([d for d in yaml.safe_load_all(out.read_text()) if d], "Secret")
    assert secret["stringData"] == {"password": PASSWORD}
    result = hpo_k8s(str(spec_file), *VARIANTS["spec-secret"], "-o", f"{tmp_path}/dir/",
                     K8S_TEST_PASSWORD=PASSWORD)  # fmt: skip
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "dir").iterdir()}
    assert modes.pop("00-secret-hpo-db.yaml") == 0o600
    assert all(PASSWORD not in (tmp_path / "dir" / f).read_text() for f in modes)


# ---------------------------------------------------------------------------------------
# Workers, checkpoints, preemption


def test_workers_get_their_gpus_and_slots(spec_file: Path) -> None:
    job = one(render("spec-gpu", spec_file), "Job")
    pod = job["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert worker["resources"]["requests"] == {"cpu": "16", "memory": "64Gi"}
    ctx = resolve_cli(hpo_args(worker) or [])
    assert (ctx.params["gpus"], ctx.params["per_gpu"], ctx.params["threads"]) == ("all", 2, 4)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    cpu = one(render("study-cpu", spec_file), "Job")["spec"]["template"]["spec"]
    ctx = resolve_cli(hpo_args(cpu["containers"][0]) or [])
    assert (ctx.params["gpus"], ctx.params["processes"], ctx.params["study"]) == (
        "none",
        4,
        "toy-study",
    )
    assert "nvidia.com/gpu" not in str(cpu)


def test_checkpoints_are_on_one_volume_every_worker_shares(objects: list[dict[str, Any]]) -> None:
    pod = one(objects, "Job")["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    ckpt = resolve_cli(hpo_args(worker) or []).params["checkpoint_dir"]
    mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == ckpt)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    if claim == "shared-ckpt":  # --checkpoint-claim: the user's own, not rendered
        assert not claims
    else:
        assert one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == [
            "ReadWriteMany"
        ]


def test_a_preempted_pod_is_not_a_failure_and_a_spec_error_is_final(
    objects: list[dict[str, Any]],
) -> None:
    spec = one(objects, "Job")["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    } in rules
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}} in rules


def test_nothing_is_published_outside_the_cluster(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        if o["kind"] == "Service":
            assert o["spec"]["type"] == "ClusterIP", o["metadata"]["name"]
    for name, pod in pod_specs(objects):
        assert not pod.get("hostNetwork"), name
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            assert all("hostPort" not in p for p in c.get("ports", [])), name
    policy = one(objects, "NetworkPolicy", "hpo-postgres")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "hpo"}}}
    ]


def test_the_spec_ships_whole_and_the_pods_create_the_study_from_it(
    spec_file: Path,
) -> None:
    objects = render("spec-gpu", spec_file)
    config = one(objects, "ConfigMap")
    assert config["data"] == {"toy.yaml": spec_file.read_text()}
    pod = one(objects, "Job")["spec"]["template"]["spec"]
    create = next(c for c in pod["initContainers"] if c["name"] == "create")
    path = PurePosixPath(resolve_cli(hpo_args(create) or []).params["spec"])
    mount = next(m for m in create["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    assert path.name in config["data"]
    assert resolve_cli(hpo_args(pod["containers"][0]) or []).params["study"] == "toy"


@pytest.mark.postgres
def test_a_worker_pods_commands_run_the_study(spec_file: Path, pg_url: str, tmp_path: Path) -> None:
    """Two pods' `create` at once on a fresh database, then one pod's `hpo worker`, exactly as
    rendered, with the pod's mounts as directories and the Service's URL as the test's."""
    objects = render("spec-gpu", spec_file)
    pod = one(objects, "Job")["spec"]["template"]["spec"]
    config = one(objects, "ConfigMap")
    mounts: dict[str, str] = {}
    for volume in pod["volumes"]:
        where = tmp_path / volume["name"]
        where.mkdir()
        if "configMap" in volume:
            for key, text in config["data"].items():
                (where / key).write_text(text)
        mounts[volume["name"]] = str(where)

    def run(container: dict[str, Any]) -> subprocess.Popen[str]:
        args = hpo_args(container) or []
        for m in container.get("volumeMounts", []):
            args = [a.replace(m["mountPath"], mounts[m["name"]]) for a in args]
        env = expand(container["env"])
        env["HPO_STORAGE"] = pg_url  # in the cluster, the Service; here, the test database
        return subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", *args],
            cwd=tmp_path,  # `hpo create` remembers its storage in ./.hpo: not in the repo
            env=hpo_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    create = next(c for c in pod["initContainers"] if c["name"] == "create")
    pods = [run(create), run(create)]
    for p in pods:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    worker = run(pod["containers"][0])
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    import optuna

    trials = optuna.load_study(study_name="toy", storage=pg_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3


# ---------------------------------------------------------------------------------------
# Bad input, names, the shipped file


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--cpu", "8 cores"], {}, "--cpu: not a Kubernetes quantity"),
        (["--checkpoint-claim", "My_Claim"], {}, "--checkpoint-claim: not a Kubernetes name"),
        (["--password-from-env", "K8S_NOT_SET"], {}, "K8S_NOT_SET is not set"),
        (["--password-from-env", "K8S_PW"], {"K8S_PW": "p@ss/word"}, "only letters, digits"),
    ],
)
def test_bad_options_fail_with_one_line_and_write_nothing(
    spec_file: Path, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    out = tmp_path / "out.yaml"
    result = hpo_k8s(str(spec_file), *args, "-o", str(out), **env)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "p@ss/word" not in result.output
    assert not out.exists()


def test_a_mistyped_spec_path_is_not_taken_for_a_study_name(tmp_path: Path) -> None:
    result = hpo_k8s("studies/no-such-spec.yaml", "-o", str(tmp_path / "out.yaml"))
    assert result.exit_code == 2 and "no such file" in result.output
    assert not (tmp_path / "out.yaml").exists()


def test_a_spec_whose_storage_holds_a_password_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "leaky.yaml"
    spec.write_text(toy_spec(3) + f"storage: postgresql+psycopg://u:{PASSWORD}@db/hpo\n")
    result = hpo_k8s(str(spec))
    assert result.exit_code == 2
    assert "storage: holds a password" in result.output and PASSWORD not in result.output


def test_any_study_name_becomes_a_distinct_kubernetes_name() -> None:
    names = ["toy", "My Study_v2", "my-study-v2", "é" * 80, "---"]
    slugs = [resource_name(n) for n in names]
    assert slugs[0] == "toy" and len(set(slugs)) == len(slugs)
    for slug in slugs:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", slug) and len(slug) <= 52, slug
    job = render_kubernetes(KubernetesOptions(study="My Study_v2"))[-1]
    kubernetes_validate.validate(job, VERSIONS[0], strict=True)


def test_the_shipped_manifests_are_what_hpo_k8s_renders() -> None:
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        result = CliRunner().invoke(main, SHIPPED_ARGS, catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    regenerate = f"hpo {shlex.join(SHIPPED_ARGS)} -o {SHIPPED.relative_to(ROOT)}"
    assert SHIPPED.exists() and SHIPPED.read_text() == result.stdout, f"run: {regenerate}"
    assert dump_manifests([{"a": "x\ny"}]) == "---\na: |-\n  x\n  y\n"


def test_the_readmes_hpo_k8s_commands_are_valid() -> None:
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("hpo k8s ")]
    assert commands, "the README's 'Run on Kubernetes' shows no `hpo k8s` command"
    for line in commands:
        args = shlex.split(line.split("`")[0])[1:]
        args = [a for a in args if a not in ("-o", "k8s/")]  # the output, not written here
        try:
            resolve_cli(args)
        except click.ClickException as e:
            pytest.fail(f"README: {line}: {e.format_message()}")
