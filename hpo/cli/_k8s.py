"""`hpo k8s`: render the Kubernetes manifests of a study (the library is hpo.cluster)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpo.cli._app import handle_errors, main

if TYPE_CHECKING:
    from hpo.cluster import KubernetesOptions


@main.command("k8s")
@click.argument("spec_or_study")
@click.option(
    "--image",
    default="hpo:latest",
    show_default=True,
    envvar="HPO_IMAGE",
    help="The hpo image (built from this repository's Dockerfile, or FROM it with your "
    "objectives installed), in a registry the cluster pulls from (env HPO_IMAGE).",
)
@click.option("-n", "--namespace", help="Put every object in this namespace (create it first).")
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="Worker pods, all running at once (the Job's parallelism).",
)
@click.option(
    "--gpus-per-worker",
    type=click.IntRange(0, 64),
    default=1,
    show_default=True,
    help="nvidia.com/gpu limit of each worker pod; 0 for CPU workers.",
)
@click.option(
    "--per-gpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Trial processes packed onto each GPU.",
)
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Trial processes of a CPU worker (--gpus-per-worker 0).",
)
@click.option("--cpu", metavar="CORES", help="CPU request of each worker pod (8, 500m, ...).")
@click.option("--memory", metavar="SIZE", help="Memory request and limit of each worker pod.")
@click.option("--shm-size", default="2Gi", show_default=True, metavar="SIZE", help="/dev/shm.")
@click.option("--db-size", default="20Gi", show_default=True, metavar="SIZE")
@click.option("--db-storage-class", metavar="CLASS", help="[default: the cluster's default]")
@click.option(
    "--checkpoint-claim",
    metavar="NAME",
    help="An existing ReadWriteMany claim for checkpoints, instead of a new one.",
)
@click.option("--checkpoint-size", default="100Gi", show_default=True, metavar="SIZE")
@click.option(
    "--checkpoint-storage-class",
    metavar="CLASS",
    help="A class that offers ReadWriteMany (NFS, CephFS, EFS, Filestore...).",
)
@click.option(
    "--grace",
    type=click.IntRange(0, 86_400),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long a worker pod told to stop may let its running trials finish.",
)
@click.option(
    "--password-from-env",
    metavar="VAR",
    help="Also render the Secret hpo-db, with the password in env VAR. Without it, nothing "
    "written holds the password: create the Secret with kubectl (see the output's header).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),  # a str: a trailing "/" (a directory) must survive
    help="Write to this file, or one file per object into this directory (an existing one, "
    "or a path ending in /), instead of stdout.",
)
@handle_errors
def k8s(spec_or_study: str, password_from_env: str | None, output: str | None, **opts: Any) -> None:
    """Render Kubernetes manifests for SPEC_OR_STUDY: PostgreSQL, the dashboard, the workers.

    Given a spec, it ships in a ConfigMap and each worker pod creates the study from it (or
    checks it matches) before joining; given a study name, the workers join that study.
    Apply the output with `kubectl apply -f`; the README's "Run on Kubernetes" walks through it.
    """
    from hpo.cluster import KubernetesOptions, dump_manifests, render_kubernetes

    study, spec_text, spec_file = _study_and_spec(spec_or_study)
    password = _password(password_from_env)
    options = KubernetesOptions(
        study=study, spec_text=spec_text, spec_file=spec_file, password=password, **opts
    )
    objects = render_kubernetes(options)
    header = _header(options, spec_or_study if spec_text is not None else None)
    if output is not None and (Path(output).is_dir() or output.endswith(("/", os.sep))):
        _write_dir(objects, Path(output), header, secret=password is not None)
        return
    text = dump_manifests(objects, header)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    _write(Path(output), text, secret=password is not None)
    click.echo(f"wrote {output} ({len(objects)} objects)", err=True)


def _study_and_spec(spec_or_study: str) -> tuple[str, str | None, str]:
    """(study name, spec text or None, the spec's file name in its ConfigMap)."""
    from hpo.errors import UsageError
    from hpo.spec import load_spec
    from hpo.storage import has_secret

    path = Path(spec_or_study)
    # Unlike the commands that read a study, nothing here would notice a mistyped spec path
    # taken for a study name until the pods failed: a spec's suffix means a spec file.
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return spec_or_study, None, "spec.yaml"
    # The objective need not import here: it runs in the image, not on this machine.
    loaded = load_spec(path, check_objective=False)
    if loaded.storage is not None and has_secret(loaded.storage):
        raise UsageError(
            f"{path}: storage: holds a password, and the spec would ship in a ConfigMap in "
            "clear; remove the key (in the cluster HPO_STORAGE, from the Secret, overrides it)"
        )
    name = path.name if re.fullmatch(r"[-._a-zA-Z0-9]+", path.name) else "spec.yaml"
    return loaded.name, path.read_text(encoding="utf-8"), name


def _password(var: str | None) -> str | None:
    from hpo.errors import UsageError

    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise UsageError(f"--password-from-env: the environment variable {var} is not set")
    return value


def _header(options: KubernetesOptions, spec: str | None) -> str:
    from hpo.cluster import resource_name

    ns = f" -n {options.namespace}" if options.namespace else ""
    slots = (
        f"{options.gpus_per_worker} GPU(s) x {options.per_gpu} trial(s) per GPU"
        if options.gpus_per_worker
        else f"{options.processes} CPU trial process(es)"
    )
    lines = [
        f"hpo on Kubernetes: study {options.study!r}, {options.workers} worker pod(s) of {slots}.",
        f"Rendered by `hpo k8s {shlex.quote(spec or options.study)}`; see the README's "
        "'Run on Kubernetes'.",
        "",
    ]
    if options.password is None:
        lines += [
            "No object here holds the database password. Create its Secret once, first:",
            f"  kubectl{ns} create secret generic hpo-db "
            '--from-literal=password="$(openssl rand -hex 24)"',
        ]
    else:
        lines += ["This holds the database password (the Secret hpo-db): keep it out of git."]
    job = f"hpo-worker-{resource_name(options.study)}"
    lines += [
        f"Then: kubectl{ns} apply -f THIS; watch: kubectl{ns} port-forward svc/hpo-dashboard "
        "8080:8080",
        f"Stop: kubectl{ns} exec deploy/hpo-dashboard -- hpo stop {shlex.quote(options.study)} "
        f"(or kubectl{ns} delete job {job})",
    ]
    return "\n".join(lines)


def _write(path: Path, text: str, *, secret: bool) -> None:
    if secret:  # only its owner may read a file that holds the password
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        path.write_text(text)


def _write_dir(objects: list[dict[str, Any]], out: Path, header: str, *, secret: bool) -> None:
    from hpo.cluster import dump_manifests

    out.mkdir(parents=True, exist_ok=True)
    for i, obj in enumerate(objects):
        name = f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        holds = secret and obj["kind"] == "Secret"
        _write(out / name, dump_manifests([obj], header if i == 0 else ""), secret=holds)
    click.echo(f"wrote {len(objects)} files to {out}", err=True)
