"""Kubernetes manifests for a study: PostgreSQL, optuna-dashboard and the workers.

Plain dicts in, plain dicts out: no Kubernetes client, no cluster. What each object does and
why is said where it is built, so that `hpo k8s` output can be read like the Compose file.

The database password is never in what this renders unless the caller passes it: every
container reads it from the Secret ``hpo-db`` (key ``password``) and builds the storage URL
with Kubernetes' own ``$(VAR)`` expansion, so it is in no command line and in no file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from hpo.errors import UsageError

SECRET = "hpo-db"
SECRET_KEY = "password"
DB_SERVICE = "hpo-postgres"
DB_USER = "hpo"
DB_NAME = "hpo"
DB_PORT = 5432
DASHBOARD = "hpo-dashboard"
DASHBOARD_PORT = 8080
CHECKPOINTS_CLAIM = "hpo-checkpoints"
CHECKPOINT_MOUNT = "/checkpoints"
SPEC_MOUNT = "/etc/hpo/spec"
POSTGRES_IMAGE = "postgres:16"
# The password's variable, and the URL built from it by the kubelet when the container starts
# (dependent environment variables: `$(NAME)` of a variable defined earlier in the list).
PASSWORD_VAR = "POSTGRES_PASSWORD"
STORAGE_URL = f"postgresql+psycopg://{DB_USER}:$({PASSWORD_VAR})@{DB_SERVICE}:{DB_PORT}/{DB_NAME}"
# The image's entrypoint, spelled out so a custom image (FROM hpo) cannot drop it: hpo must
# not be PID 1, because a trial process takes a parent PID of 1 to mean its worker died.
HPO_COMMAND = ["/usr/bin/tini", "--", "hpo"]
PART_OF = {"app.kubernetes.io/part-of": "hpo"}

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class KubernetesOptions:
    """What `hpo k8s` renders. ``spec_text`` (with ``spec_file``, its file name) ships the
    spec in a ConfigMap, and each worker pod runs `hpo create` on it before joining."""

    study: str
    spec_text: str | None = None
    spec_file: str = "spec.yaml"
    image: str = "hpo:latest"
    namespace: str | None = None
    workers: int = 1
    gpus_per_worker: int = 1
    per_gpu: int = 1
    processes: int = 1
    cpu: str | None = None
    memory: str | None = None
    shm_size: str = "2Gi"
    db_size: str = "20Gi"
    db_storage_class: str | None = None
    checkpoint_claim: str | None = None
    checkpoint_size: str = "100Gi"
    checkpoint_storage_class: str | None = None
    grace: int = 120
    password: str | None = None

    def __post_init__(self) -> None:
        for key in ("cpu", "memory", "shm_size", "db_size", "checkpoint_size"):
            value = getattr(self, key)
            if value is not None and not _QUANTITY.match(value):
                flag = "--" + key.replace("_", "-")
                raise UsageError(
                    f"{flag}: not a Kubernetes quantity like 8, 500m or 32Gi: {value!r}"
                )
        for key in (
            "namespace",
            "checkpoint_claim",
            "db_storage_class",
            "checkpoint_storage_class",
        ):
            value = getattr(self, key)
            if value is not None and not (_NAME.match(value) and len(value) <= 63):
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"{flag}: not a Kubernetes name (a-z, 0-9, '-'): {value!r}")
        if self.password is not None and not _URL_SAFE.match(self.password):
            raise UsageError(
                "the password goes into the storage URL as is, so it may hold only letters, "
                "digits and . _ ~ - (try `openssl rand -hex 24`)"
            )
        if not self.study.strip():
            raise UsageError("the study name is empty")

    @property
    def slots(self) -> int:
        """Trial processes per worker pod."""
        return self.gpus_per_worker * self.per_gpu if self.gpus_per_worker else self.processes


def resource_name(study: str) -> str:
    """A DNS label for ``study``: lower case, '-' for anything else, a short hash of the real
    name when that changed it, so two studies never share a Job."""
    slug = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-")[:40].strip("-") or "study"
    if slug != study:
        slug += "-" + hashlib.sha256(study.encode()).hexdigest()[:6]
    return slug


def render_kubernetes(options: KubernetesOptions) -> list[dict[str, Any]]:
    """Every object for ``options``, in the order `kubectl apply` should create them."""
    objects: list[dict[str, Any]] = []
    if options.password is not None:
        objects.append(_secret(options.password))
    objects += [*_postgres(options), *_dashboard(options)]
    if options.checkpoint_claim is None:
        objects.append(_checkpoint_claim(options))
    if options.spec_text is not None:
        objects.append(_spec_config_map(options))
    objects.append(_worker_job(options))
    if options.namespace:
        for obj in objects:
            obj["metadata"]["namespace"] = options.namespace
    return objects


def _meta(name: str, component: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {**PART_OF, "app.kubernetes.io/component": component, **labels},
    }


def _secret(password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(SECRET, "database"),
        "type": "Opaque",
        "stringData": {SECRET_KEY: password},
    }


def _password_env() -> dict[str, Any]:
    ref = {"name": SECRET, "key": SECRET_KEY}
    return {"name": PASSWORD_VAR, "valueFrom": {"secretKeyRef": ref}}


def _storage_env() -> list[dict[str, Any]]:
    """The password from the Secret, then the URL built from it (order matters)."""
    return [_password_env(), {"name": "HPO_STORAGE", "value": STORAGE_URL}]


def _postgres(options: KubernetesOptions) -> list[dict[str, Any]]:
    selector = {"app.kubernetes.io/component": "database", **PART_OF}
    claim: dict[str, Any] = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": options.db_size}},
        },
    }
    if options.db_storage_class:
        claim["spec"]["storageClassName"] = options.db_storage_class
    ready = ["pg_isready", "-h", "127.0.0.1", "-U", DB_USER, "-d", DB_NAME]
    container = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        # Each worker holds two pooled connections: room for twice that, the dashboard and
        # commands run with `kubectl exec`.
        "args": ["-c", f"max_connections={max(100, 4 * options.workers + 50)}"],
        "env": [
            {"name": "POSTGRES_USER", "value": DB_USER},
            {"name": "POSTGRES_DB", "value": DB_NAME},
            _password_env(),
            # A subdirectory: the volume's root may hold lost+found, which initdb refuses.
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": DB_PORT}],
        "readinessProbe": {"exec": {"command": ready}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(DB_SERVICE, "database"),
        "spec": {
            "serviceName": DB_SERVICE,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [container]},
            },
            # The claim outlives the StatefulSet: deleting these manifests keeps the studies.
            "volumeClaimTemplates": [claim],
        },
    }
    service = _service(DB_SERVICE, "database", DB_PORT, selector)
    return [service, statefulset, _postgres_policy(selector)]


def _postgres_policy(selector: dict[str, str]) -> dict[str, Any]:
    """Only hpo's own pods may reach the database (where the network plugin enforces it)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(DB_SERVICE, "database"),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": dict(PART_OF)}}],
                    "ports": [{"protocol": "TCP", "port": DB_PORT}],
                }
            ],
        },
    }


def _service(name: str, component: str, port: int, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, component),
        # ClusterIP: reachable inside the cluster only; `kubectl port-forward` from outside.
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": component, "port": port, "targetPort": port}],
        },
    }


def _wait_for_postgres() -> dict[str, Any]:
    """An init container: the pod's hpo starts once the database answers."""
    ready = (
        f"until pg_isready -h {DB_SERVICE} -p {DB_PORT} -U {DB_USER} -d {DB_NAME}; do sleep 2; done"
    )
    return {"name": "wait-for-postgres", "image": POSTGRES_IMAGE, "command": ["sh", "-c", ready]}


def _hpo_container(name: str, image: str, args: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": list(HPO_COMMAND),
        "args": args,
        "env": _storage_env(),
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def _pod_security() -> dict[str, Any]:
    """The image's unprivileged user; fsGroup makes the checkpoint volume writable by it."""
    return {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}


def _dashboard(options: KubernetesOptions) -> list[dict[str, Any]]:
    selector = {"app.kubernetes.io/component": "dashboard", **PART_OF}
    # 0.0.0.0 inside the pod so the Service reaches it; the Service is cluster-internal and
    # optuna-dashboard has no authentication: reach it with `kubectl port-forward`.
    args = ["dashboard", "--host", "0.0.0.0", "--port", str(DASHBOARD_PORT)]
    container = _hpo_container("dashboard", options.image, args)
    container["ports"] = [{"name": "http", "containerPort": DASHBOARD_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": DASHBOARD_PORT}, "periodSeconds": 10}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(DASHBOARD, "dashboard"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "securityContext": _pod_security(),
                    "initContainers": [_wait_for_postgres()],
                    "containers": [container],
                },
            },
        },
    }
    return [_service(DASHBOARD, "dashboard", DASHBOARD_PORT, selector), deployment]


def _checkpoint_claim(options: KubernetesOptions) -> dict[str, Any]:
    """One volume every worker pod mounts: a trial retried on another node (its pod evicted)
    resumes from the checkpoint its first attempt wrote. Needs a ReadWriteMany class."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": options.checkpoint_size}},
    }
    if options.checkpoint_storage_class:
        spec["storageClassName"] = options.checkpoint_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(CHECKPOINTS_CLAIM, "checkpoints"),
        "spec": spec,
    }


def _spec_name(options: KubernetesOptions) -> str:
    return f"hpo-spec-{resource_name(options.study)}"


def _spec_config_map(options: KubernetesOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(_spec_name(options), "spec", **_study_label(options)),
        "data": {options.spec_file: options.spec_text},
    }


def _study_label(options: KubernetesOptions) -> dict[str, str]:
    return {"hpo/study": resource_name(options.study)}


def worker_args(options: KubernetesOptions) -> list[str]:
    """The arguments after `hpo` of each worker pod."""
    args = ["worker", options.study, "--checkpoint-dir", CHECKPOINT_MOUNT]
    if options.gpus_per_worker:
        # The device plugin shows the pod only its own GPUs: "all" means those.
        args += ["--gpus", "all", "--per-gpu", str(options.per_gpu)]
    else:
        args += ["--gpus", "none", "--processes", str(options.processes)]
    if options.cpu is not None:
        # A container sees every core of its node: share the cores it asked for instead.
        cores = float(options.cpu[:-1]) / 1000 if options.cpu.endswith("m") else float(options.cpu)
        args += ["--threads", str(max(1, int(cores // options.slots)))]
    return args


def _worker_container(options: KubernetesOptions) -> dict[str, Any]:
    container = _hpo_container("worker", options.image, worker_args(options))
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if options.cpu is not None:
        requests["cpu"] = options.cpu
    if options.memory is not None:
        requests["memory"] = limits["memory"] = options.memory
    if options.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(options.gpus_per_worker)
    container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    container["volumeMounts"] = [
        {"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT},
        # PyTorch's data loaders share tensors through /dev/shm; a container gets 64 MB.
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return container


def _worker_pod(options: KubernetesOptions) -> dict[str, Any]:
    claim = options.checkpoint_claim or CHECKPOINTS_CLAIM
    volumes: list[dict[str, Any]] = [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}},
    ]
    init = [_wait_for_postgres()]
    if options.spec_text is not None:
        # `hpo create` creates the study, or checks that the stored spec is this one; every
        # pod runs it, so the first to start creates it and none can start on a stale spec.
        spec_path = f"{SPEC_MOUNT}/{options.spec_file}"
        create = _hpo_container("create", options.image, ["create", spec_path])
        create["volumeMounts"] = [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}]
        init.append(create)
        volumes.append({"name": "spec", "configMap": {"name": _spec_name(options)}})
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # SIGTERM lets running trials finish; a trial still running after this is killed
        # and retried elsewhere from its checkpoint.
        "terminationGracePeriodSeconds": options.grace,
        "securityContext": _pod_security(),
        "initContainers": init,
        "containers": [_worker_container(options)],
        "volumes": volumes,
    }
    if options.gpus_per_worker:
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        pod["tolerations"] = [toleration]
    return pod


def _worker_job(options: KubernetesOptions) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": "worker", **PART_OF, **_study_label(options)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(f"hpo-worker-{resource_name(options.study)}", "worker", **labels),
        "spec": {
            # One index per worker pod: each runs `hpo worker` until the study is done (exit
            # 0), so the Job completes when the study does.
            "completionMode": "Indexed",
            "completions": options.workers,
            "parallelism": options.workers,
            # A crashed worker (the database unreachable, say) is restarted up to 3 times per
            # index; its trials go back to the study either way.
            "backoffLimitPerIndex": 3,
            "podFailurePolicy": {
                "rules": [
                    # Exit 2 is a usage or spec error (of `hpo create` or `hpo worker`): every
                    # retry would fail the same way.
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [2]},
                    },
                    # Evicted or preempted: not the worker's fault, so not counted; the pod
                    # comes back and its killed trials are retried from their checkpoints.
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": _worker_pod(options)},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the spec in its ConfigMap reads as the file), and
    no anchors: each object spelled out, as `kubectl get -o yaml` shows it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_manifests(objects: list[dict[str, Any]], header: str = "") -> str:
    """A multi-document YAML of ``objects``, ``header`` as a comment on top."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    docs = [yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=100) for o in objects]
    return comment + "---\n" + "---\n".join(docs)
