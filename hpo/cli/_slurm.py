"""``hpo slurm``: submit a study's workers as a Slurm job array."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hpo.cli._app import checkpoint_option, handle_errors, main, storage_option

if TYPE_CHECKING:
    from hpo.spec import StudySpec


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "-N",
    "--nodes",
    type=click.IntRange(1, 10000),
    default=1,
    show_default=True,
    help="Workers: one task of the job array each, on a node of its own.",
)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="GPUs each worker asks for (--gres=gpu:N); 0 runs CPU trial processes.",
)
@click.option(
    "--trials-per-gpu",
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
    help="CPU trial processes per worker, with --gpus-per-node 0.",
)
@click.option("--cpus-per-task", type=click.IntRange(1, 4096), help="Cores each worker asks for.")
@click.option("-t", "--time", "time_limit", metavar="TIME", help="Time limit, e.g. 4:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option("--account", help="Slurm account to charge.")
@click.option("--job-name", help="Job name [default: hpo-STUDY].")
@click.option(
    "--sbatch-arg",
    "sbatch_args",
    multiple=True,
    metavar="OPTION",
    help="Another sbatch option for the script, e.g. --sbatch-arg=--qos=high (repeatable).",
)
@click.option(
    "--setup",
    multiple=True,
    metavar="LINE",
    help="A shell line run before the worker, e.g. 'module load cuda' (repeatable).",
)
@click.option(
    "--requeue/--no-requeue",
    default=False,
    show_default=True,
    help="Let Slurm requeue a preempted task, and requeue a task the time-limit warning "
    "preempted, until the study is done.",
)
@click.option(
    "--signal-before",
    "signal_s",
    type=click.IntRange(0, 65535),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="Ask Slurm for SIGUSR1 this long before the time limit (--signal=B:USR1@N): the "
    "worker preempts its trials, which resume from their checkpoints elsewhere; 0: none.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".hpo/slurm"),
    show_default=True,
    help="Where each task's output goes (STUDY-JOB_TASK.out).",
)
@click.option(
    "-o",
    "--output",
    "script_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the batch script here [default: LOG_DIR/STUDY-TIME.sbatch].",
)
@click.option("--force", is_flag=True, help="Replace a stored spec that differs from SPEC.")
@click.option("--dry-run", is_flag=True, help="Print the script; submit and write nothing.")
@checkpoint_option
@handle_errors
def slurm(
    study: str,
    storage: str | None,
    nodes: int,
    gpus_per_node: int,
    trials_per_gpu: int,
    processes: int,
    cpus_per_task: int | None,
    time_limit: str | None,
    partition: str | None,
    account: str | None,
    job_name: str | None,
    sbatch_args: tuple[str, ...],
    setup: tuple[str, ...],
    requeue: bool,
    signal_s: int,
    log_dir: Path,
    script_file: Path | None,
    force: bool,
    dry_run: bool,
    checkpoint_dir: str | None,
) -> None:
    """Submit workers for STUDY as a Slurm job array: one `hpo worker` per node.

    STUDY is a study name, or the path of a spec: that study is created first (as `hpo
    create` does). The batch script is kept (-o) for you to read and submit again; the
    storage URL travels in the job's environment (HPO_STORAGE), never in the script.
    Prints the job id. A worker preempted by Slurm (the warning signal, scancel, requeue)
    ends its trials at once; they are queued again and resume from their checkpoints.
    """
    from hpo.cli._target import storage_for, target
    from hpo.cluster import SlurmJob, find_sbatch, script_path, submit

    spec = _spec_of(study)
    name = spec.name if spec is not None else study
    job = SlurmJob(
        study=name,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        trials_per_gpu=trials_per_gpu,
        processes=processes,
        cpus_per_task=cpus_per_task,
        time=time_limit,
        partition=partition,
        account=account,
        job_name=job_name,
        sbatch_args=sbatch_args,
        requeue=requeue,
        signal_s=signal_s,
        log_dir=log_dir,
        checkpoint_dir=checkpoint_dir,
        setup=setup,
    )
    if dry_run:
        click.echo(job.script(), nl=False)
        return
    sbatch = find_sbatch()  # before anything is written
    if spec is not None:
        from hpo.study import create_study

        url = storage_for(storage, spec.storage)
        create_study(spec, url, force=force)
    else:
        from hpo.study import load_study

        name, url = target(study, storage)
        load_study(name, url)  # it must exist: a typo would start workers that fail at once
    if url.startswith("sqlite"):
        click.echo(
            "hpo: note: a SQLite storage works only if every node sees its file; use "
            "PostgreSQL on a cluster",
            err=True,
        )
    path = script_file or script_path(name, log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the log directory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(job.script())
    job_id = submit(path, url, env=os.environ, sbatch=sbatch)
    click.echo(f"submitted job {job_id}: {nodes} worker(s) for study {name!r}", err=True)
    click.echo(f"script: {path}; logs: {log_dir}/{job.name}-{job_id}_*.out", err=True)
    click.echo(f"watch: hpo status {name}   stop: scancel {job_id}", err=True)
    click.echo(job_id)


def _spec_of(study: str) -> StudySpec | None:
    """The spec STUDY names, when it is a spec's path; None for a study name."""
    from hpo.cli._target import spec_path
    from hpo.spec import load_spec

    path = spec_path(study)
    return None if path is None else load_spec(path)
