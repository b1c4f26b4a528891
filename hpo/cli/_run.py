"""Commands that create and run studies: run, create, worker, stop, delete."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hpo.cli._app import (
    checkpoint_option,
    exit_code,
    exit_with,
    gpus_option,
    gpus_per_trial_option,
    handle_errors,
    main,
    storage_option,
    threads_option,
)
from hpo.cli._secrets import remember
from hpo.cli._target import storage_for, storage_origin, target


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    envvar="HPO_WORKERS",
    help="Local trial processes.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop starting trials after this long (default: the spec's budget.timeout).",
)
@click.option("--force", is_flag=True, help="Replace a stored spec that differs from SPEC.")
@checkpoint_option
@gpus_option
@gpus_per_trial_option
@threads_option
@handle_errors
def run(
    spec: Path,
    storage: str | None,
    workers: int,
    timeout: float | None,
    force: bool,
    checkpoint_dir: str | None,
    gpus: str | None,
    gpus_per_trial: int,
    threads: int | None,
) -> None:
    """Create or resume the study in SPEC and run it until its budget is spent.

    Exit codes: 0 done, 1 failed (every trial failed, storage unreachable), 2 usage or spec
    error, 130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM. The first signal finishes
    the running trials, a second abandons them for a retry; the code is the same.
    """
    from hpo.cli import _console
    from hpo.spec import load_spec
    from hpo.worker import run as run_study

    loaded = load_spec(spec)
    url = storage_for(storage, loaded.storage)
    gpu_ids = _parse_gpus(gpus, None)
    _note_cpu_ranks(gpu_ids, gpus_per_trial)
    if loaded.n_trials is None and (timeout or loaded.budget.timeout) is None:
        _console.err.print(
            f"{loaded.name}: the spec has no budget.n_trials or budget.timeout: running until "
            f"stopped (Ctrl-C, or `hpo stop {loaded.name}`)",
            markup=False,
        )
    where = f"{loaded.name}: storage {storage_origin(storage, loaded.storage, url)}"
    with _console.progress(loaded.name) as on_progress:
        study, summary = run_study(
            loaded,
            storage=url,
            workers=workers,
            gpus=gpu_ids,
            gpus_per_trial=gpus_per_trial,
            force=force,
            timeout=timeout,
            checkpoint_dir=checkpoint_dir,
            threads=threads,
            on_progress=_remembering(url, storage, on_progress, where),
        )
    state = _console.print_summary(study, summary)
    exit_with(exit_code(summary, study, state), study)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option("--force", is_flag=True, help="Replace a stored spec that differs from SPEC.")
@handle_errors
def create(spec: Path, storage: str | None, force: bool) -> None:
    """Create the study in SPEC (or check it matches the stored one), without running it."""
    from hpo.spec import load_spec
    from hpo.study import create_study

    loaded = load_spec(spec)
    url = storage_for(storage, loaded.storage)
    study = create_study(loaded, url, force=force)
    note = _remember_here(study.url, storage)
    click.echo(
        f"study {study.name!r} ready in {storage_origin(storage, loaded.storage, url)}{note}"
    )


@main.command()
@click.argument("study", envvar="HPO_STUDY")
@storage_option
@checkpoint_option
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(1, 256),
    default=None,
    envvar="HPO_PROCESSES",
    help="CPU trial processes when no GPU is used [default: 1].",
)
@gpus_option
@click.option(
    "--per-gpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="HPO_PER_GPU",
    help="Trial processes packed onto each GPU (each group of --gpus-per-trial GPUs).",
)
@gpus_per_trial_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop starting trials after this long.",
)
@threads_option
@click.option(
    "--on-sigterm",
    type=click.Choice(["drain", "preempt"]),
    envvar="HPO_ON_SIGTERM",
    help="What SIGTERM does: drain (finish the running trials; a second signal abandons them) "
    "or preempt (end them now, queued again to resume from their checkpoints, not counted "
    "against max_retries) (env HPO_ON_SIGTERM) [default: preempt inside a Slurm job or a "
    "Kubernetes pod, else drain]. SIGUSR1 always preempts.",
)
@handle_errors
def worker(
    study: str,
    storage: str | None,
    processes: int | None,
    gpus: str | None,
    per_gpu: int,
    gpus_per_trial: int,
    timeout: float | None,
    checkpoint_dir: str | None,
    threads: int | None,
    on_sigterm: str | None,
) -> None:
    """Join STUDY (env HPO_STUDY) from this machine: one trial process per GPU slot.

    STUDY is a study name or the path of the spec it was created from.

    Exit codes: 0 done, 1 failed (every trial failed, storage unreachable), 2 usage or spec
    error, 130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM; 138 preempted by SIGUSR1.
    The first SIGINT (or SIGTERM, see --on-sigterm) finishes the running trials, a second
    abandons them for a retry; the code is the same.
    """
    from hpo.cli import _console
    from hpo.worker import join

    study, storage = target(study, storage)
    gpu_ids = _parse_gpus(gpus, processes)
    if not gpu_ids and gpus in (None, "all") and processes is None:
        _console.err.print("no GPU visible: running 1 CPU trial process (see --processes)")
    _note_cpu_ranks(gpu_ids, gpus_per_trial)
    with _console.progress(study) as on_progress:
        loaded, summary = join(
            study,
            storage=remember(storage),
            processes=processes or 1,
            gpus=gpu_ids,
            per_gpu=per_gpu,
            gpus_per_trial=gpus_per_trial,
            timeout=timeout,
            checkpoint_dir=checkpoint_dir,
            threads=threads,
            on_progress=on_progress,
            on_sigterm=on_sigterm,
        )
    state = _console.print_summary(loaded, summary)
    exit_with(exit_code(summary, loaded, state), loaded)


@main.command()
@click.argument("study")
@storage_option
@click.option("--now", is_flag=True, help="Abandon running trials (they are retried later).")
@handle_errors
def stop(study: str, storage: str | None, now: bool) -> None:
    """Ask every worker of STUDY, on every machine, to finish its trial and exit.

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = target(study, storage)
    from hpo.study import request_stop

    request_stop(study, remember(storage), now=now)
    what = "abandon their trials" if now else "finish their current trials"
    click.echo(f"asked the workers of {study!r} to {what} and exit")


@main.command()
@click.argument("study")
@storage_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@checkpoint_option
@handle_errors
def delete(study: str, storage: str | None, yes: bool, checkpoint_dir: str | None) -> None:
    """Delete STUDY and all its trials from the storage, and its checkpoints on this machine.

    STUDY is a study name or the path of the spec it was created from. Checkpoints are
    removed only where this machine sees them (the spec's checkpoint_dir, or
    --checkpoint-dir); other machines' local checkpoint directories are left alone.
    """
    study, storage = target(study, storage)
    from hpo.errors import UsageError
    from hpo.study import delete_study

    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without --yes when not run interactively")
        click.confirm(f"Delete study {study!r} and all its trials?", abort=True)
    deleted = delete_study(study, storage, checkpoint_dir=checkpoint_dir)
    click.echo(f"deleted study {study!r}; {deleted.note}")


def _remember_here(url: str, storage: str | None) -> str:
    """Remember ``url`` in ./.hpo/storage for the commands that follow; what to tell the user."""
    from hpo.storage import remember_url

    if remember_url(url):
        return ""
    if storage is not None and storage == os.environ.get("HPO_STORAGE"):
        return ""  # it came from HPO_STORAGE, which the next commands have too
    return " (a URL with a password is not remembered: set HPO_STORAGE for the commands after)"


def _remembering(
    url: str, storage: str | None, on_progress: Callable[[Any], None], where: str
) -> Callable[[Any], None]:
    """``on_progress`` that first says where the study is (``where``) and remembers ``url``:
    the first report means the study exists, so a run that fails before (a bad storage)
    writes nothing and says only its error."""
    done: list[bool] = []

    def update(progress: Any) -> None:
        if not done:
            done.append(True)
            click.echo(where, err=True)
            note = _remember_here(url, storage)
            if note:
                click.echo(f"hpo: note: {note.strip(' ()')}", err=True)
        on_progress(progress)

    return update


def _note_cpu_ranks(gpu_ids: list[str], gpus_per_trial: int) -> None:
    """Say what --gpus-per-trial means where there is no GPU: CPU processes (gloo ranks)."""
    if not gpu_ids and gpus_per_trial > 1:
        click.echo(
            f"hpo: note: no GPU: each trial's {{gpus}} is {gpus_per_trial} CPU processes "
            "(torchrun --nproc-per-node {gpus} with the gloo backend)",
            err=True,
        )


def _parse_gpus(gpus: str | None, processes: int | None) -> list[str]:
    from hpo.errors import UsageError

    if gpus is None:
        if processes is not None:
            return []  # asking for CPU processes means CPU
        gpus = "all"
    gpus = gpus.strip().lower()
    if gpus == "none":
        return []
    if gpus == "all":
        return _visible_gpus()
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise UsageError(f"--gpus must be 'all', 'none' or indices like 0,1,3 (got {gpus!r})")
    return ids


def _visible_gpus() -> list[str]:
    """GPUs visible to this process, counted without initialising CUDA in the worker."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]
