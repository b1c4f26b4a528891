"""Running a study: locally with N processes (``hpo run``), or joining one (``hpo worker``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from hpo.spec import StudySpec, load_spec
from hpo.storage import peek_user_attr, resolve_url
from hpo.study import SPEC_ATTR, Study, create_study, load_study
from hpo.worker._loop import Worker
from hpo.worker._slots import default_slots, spread_slots, start_trial_server
from hpo.worker._state import Progress, Summary


def run(
    spec: StudySpec | str | Path,
    *,
    storage: str | None = None,
    workers: int = 1,
    gpus: Sequence[str] = (),
    gpus_per_trial: int = 1,
    force: bool = False,
    timeout: float | None = None,
    checkpoint_dir: str | None = None,
    threads: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[Study, Summary]:
    """Create or resume the study and run it with ``workers`` local processes until done.

    With ``gpus``, the processes are dealt round-robin over them, in groups of
    ``gpus_per_trial``; without, they share the CPU, each with ``gpus_per_trial`` ranks.
    ``threads`` per trial process: by default the user's OMP_NUM_THREADS / MKL_NUM_THREADS
    when set, else an equal share of the host's cores among every worker slot on it.
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    slots = spread_slots(
        workers, gpus, gpus_per_trial=gpus_per_trial
    )  # bad values: nothing written
    start_trial_server(spec.objective)  # its imports overlap with opening the study
    study = create_study(spec, storage, force=force)
    summary = Worker(
        study,
        slots,
        timeout=timeout if timeout is not None else spec.budget.timeout,
        checkpoint_dir=checkpoint_dir,
        threads=threads,
        on_progress=on_progress,
    ).work()
    return study, summary


def join(
    name: str,
    *,
    storage: str | None = None,
    processes: int = 1,
    gpus: Sequence[str] = (),
    per_gpu: int = 1,
    gpus_per_trial: int = 1,
    timeout: float | None = None,
    checkpoint_dir: str | None = None,
    threads: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_sigterm: str | None = None,
) -> tuple[Study, Summary]:
    """Join an existing study from this machine and work on it until it is done.

    Slots: ``per_gpu`` on each group of ``gpus_per_trial`` GPUs, or ``processes`` on the CPU
    with ``gpus_per_trial`` ranks each.

    ``on_sigterm``: "drain" or "preempt" (see ``hpo.worker.SIGTERM_ACTIONS``); None: preempt
    inside a Slurm job or a Kubernetes pod, drain elsewhere.
    """
    slots = default_slots(processes, gpus, per_gpu, gpus_per_trial=gpus_per_trial)
    # The objective, read ahead in one query, lets the trial processes' server import it
    # while the study is opened (a failed read only means it starts later).
    stored = peek_user_attr(resolve_url(storage), name, SPEC_ATTR)
    if isinstance(stored, dict) and isinstance(stored.get("objective"), str):
        start_trial_server(stored["objective"])
    study = load_study(name, storage)
    summary = Worker(
        study,
        slots,
        timeout=timeout if timeout is not None else study.spec.budget.timeout,
        checkpoint_dir=checkpoint_dir,
        threads=threads,
        on_progress=on_progress,
        on_sigterm=on_sigterm,
    ).work()
    return study, summary
