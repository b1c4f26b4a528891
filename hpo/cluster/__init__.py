"""Running workers under the cluster schedulers users already have.

``_slurm``: the batch script ``hpo slurm`` writes (an array of ``hpo worker`` tasks, the
storage URL in the environment, Slurm's warning signal passed on to the worker) and
submitting it with ``sbatch``.
"""

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
    "SlurmError",
    "SlurmJob",
    "find_sbatch",
    "script_path",
    "submit",
    "time_limit_s",
]
