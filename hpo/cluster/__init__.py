"""Running a study's workers under a cluster's scheduler: what to submit, rendered for it."""

from hpo.cluster._k8s import (
    KubernetesOptions,
    dump_manifests,
    render_kubernetes,
    resource_name,
    worker_args,
)

__all__ = [
    "KubernetesOptions",
    "dump_manifests",
    "render_kubernetes",
    "resource_name",
    "worker_args",
]
