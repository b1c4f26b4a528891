"""Running workers under the cluster schedulers users already have.

``_slurm``: the batch script ``hpo slurm`` writes (an array of ``hpo worker`` tasks, the
storage URL in the environment, Slurm's warning signal passed on to the worker) and
submitting it with ``sbatch``. ``_k8s``: the Kubernetes manifests ``hpo k8s`` renders
(PostgreSQL, the dashboard, an Indexed Job of workers), as plain dicts.
"""

from hpo.cluster._k8s import (
    KubernetesOptions,
    dump_manifests,
    render_kubernetes,
    resource_name,
    worker_args,
)
from hpo.cluster._slurm import (
    PREEMPTED_EXIT,
    SLURM_DIR,
    SlurmError,
    SlurmJob,
    find_sbatch,
    script_path,
    submit,
    time_limit_s,
)

__all__ = [
    "PREEMPTED_EXIT",
    "SLURM_DIR",
    "KubernetesOptions",
    "SlurmError",
    "SlurmJob",
    "dump_manifests",
    "find_sbatch",
    "render_kubernetes",
    "resource_name",
    "script_path",
    "submit",
    "time_limit_s",
    "worker_args",
]
