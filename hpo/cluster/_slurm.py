"""Workers as a Slurm job: the batch script ``hpo slurm`` writes, and submitting it.

The job is an array with one task per worker node (``--array=0-N``, each task one node): a
task is one ``hpo worker`` with a trial process per GPU slot (or ``processes`` CPU ones).
Tasks can be cancelled, preempted and requeued one by one (``scancel JOB_2``), and
``hpo status`` names each worker by its task (``hpo.storage.this_job``).

The storage URL never appears in the script or on a command line: ``sbatch --export=ALL``
passes HPO_STORAGE from the submitting environment to the job (the script refuses to start
without it).

Signals: Slurm's warning before the time limit (``--signal=B:USR1@N``) goes to the batch
shell, which passes it to the worker: the worker preempts its trials (each recorded as
preempted and queued again to resume from its checkpoints) and exits 138; with
``--requeue`` the task then requeues itself, since the study is not done. At the time
limit, ``scancel`` and ``scontrol requeue``, Slurm sends SIGTERM to every process of the job
and SIGKILL ``KillWait`` (usually 30 s) later: inside a Slurm job SIGTERM preempts too
(``hpo worker --on-sigterm``).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import HpoError, UsageError

#: The worker's exit code when SIGUSR1 preempted it (128 + SIGUSR1, as a shell reports it).
PREEMPTED_EXIT = 138
#: Where ``hpo slurm`` keeps the scripts it wrote and the jobs' logs, by default.
SLURM_DIR = Path(".hpo") / "slurm"
#: ``sbatch`` options hpo sets itself, which an extra argument must not override.
OWN_OPTIONS = ("--array", "--signal", "--export", "--requeue", "--no-requeue", "--output")
# Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (sbatch(1), --time).
_TIME = re.compile(
    r"(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<h>\d+):(?P<hm>\d+):(?P<hs>\d+)|(?P<m>\d+)(?::(?P<ms>\d+))?)"
)


class SlurmError(HpoError):
    """``sbatch`` refused the job, or could not be run."""

    exit_code = 1


def time_limit_s(value: str) -> int | None:
    """A Slurm ``--time`` in seconds (None: unlimited); UsageError naming a bad one."""
    if value.strip().lower() in ("infinite", "unlimited"):
        return None
    m = _TIME.fullmatch(value.strip())
    if m is None:
        raise UsageError(
            f"--time {value!r}: expected Slurm's MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS "
            "or DAYS-HOURS[:MINUTES[:SECONDS]] (e.g. 2:00:00 or 1-12)"
        )
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "h" in g:
        return (g["h"] * 60 + g["hm"]) * 60 + g["hs"]
    return g["m"] * 60 + g.get("ms", 0)


@dataclass(frozen=True)
class SlurmJob:
    """What ``hpo slurm`` asks of Slurm, checked at construction (:meth:`check`)."""

    study: str
    nodes: int = 1  # array tasks, one worker each
    gpus_per_node: int = 0  # 0: CPU trial processes
    trials_per_gpu: int = 1
    processes: int = 1  # CPU trial processes per worker, without GPUs
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    job_name: str | None = None
    sbatch_args: tuple[str, ...] = ()
    requeue: bool = False
    signal_s: int = 120  # the warning's lead on the time limit; 0: none
    log_dir: Path = SLURM_DIR
    checkpoint_dir: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the worker starts (module load, ...)
    hpo: tuple[str, ...] = (sys.executable, "-m", "hpo.cli")  # how the nodes run hpo

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        limit = time_limit_s(self.time) if self.time is not None else None
        if limit is not None and self.signal_s and self.signal_s >= limit:
            raise UsageError(
                f"--signal-before {self.signal_s} s leaves no time to run within --time "
                f"{self.time} ({limit} s): give a longer --time or a shorter --signal-before"
            )
        for arg in self.sbatch_args:
            option = arg.split("=", 1)[0]
            if not arg.startswith("-") or "\n" in arg:
                raise UsageError(
                    f"--sbatch-arg {arg!r}: expected one sbatch option such as --qos=high"
                )
            if option in OWN_OPTIONS or (option == "-a" or option.startswith("--arr")):
                raise UsageError(
                    f"--sbatch-arg {arg!r}: hpo slurm sets {option} itself (see --nodes, "
                    "--requeue, --signal-before, --log-dir)"
                )
        for name, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not re.fullmatch(r"[\w.,:+-]+", value):
                raise UsageError(f"{name} {value!r}: not a Slurm {name[2:]} name")

    # -- the batch script --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.job_name or f"hpo-{self.study}"

    def directives(self) -> list[str]:
        """The ``#SBATCH`` options, in the order the script lists them."""
        name = self.name
        opts = [
            f"--job-name={name}",
            f"--array=0-{self.nodes - 1}",
            "--nodes=1",
            "--ntasks=1",
        ]
        if self.gpus_per_node:
            opts.append(f"--gres=gpu:{self.gpus_per_node}")
        if self.cpus_per_task:
            opts.append(f"--cpus-per-task={self.cpus_per_task}")
        opts += [f"--{k}={v}" for k, v in self._named().items() if v is not None]
        if self.signal_s:
            opts.append(f"--signal=B:USR1@{self.signal_s}")
        if self.requeue:
            opts.append("--requeue")
        opts += ["--open-mode=append", f"--output={self.log_dir.resolve()}/{name}-%A_%a.out"]
        return [*opts, *self.sbatch_args]

    def _named(self) -> Mapping[str, str | None]:
        return {"time": self.time, "partition": self.partition, "account": self.account}

    def worker_command(self) -> list[str]:
        """The ``hpo worker`` each task runs (no storage: it reads HPO_STORAGE)."""
        cmd = [*self.hpo, "worker", self.study, "--on-sigterm", "preempt"]
        if self.gpus_per_node:
            cmd += ["--gpus", "all", "--per-gpu", str(self.trials_per_gpu)]
        else:
            cmd += ["--gpus", "none", "--processes", str(self.processes)]
        if self.checkpoint_dir:
            cmd += ["--checkpoint-dir", self.checkpoint_dir]
        return cmd

    def script(self, *, now: dt.datetime | None = None) -> str:
        """The batch script: its options, a check for HPO_STORAGE, and the worker."""
        when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
        requeue = (
            '  scontrol requeue "$SLURM_JOB_ID"  # --requeue: the study is not done\n'
            if self.requeue
            else "  : # without --requeue the task ends here; the other tasks take its trials\n"
        )
        setup = "".join(f"{line}\n" for line in self.setup)
        return (
            "#!/bin/bash\n"
            f"# Workers for the hpo study {self.study!r}, written by `hpo slurm` on {when}.\n"
            "# Submit it again with HPO_STORAGE set:  sbatch --export=ALL THIS_FILE\n"
            "# The storage URL is not in this file: sbatch passes HPO_STORAGE on from the\n"
            "# environment it was submitted from.\n"
            + "".join(f"#SBATCH {shlex.quote(o)}\n" for o in self.directives())
            + "\nset -u\n"
            'if [ -z "${HPO_STORAGE:-}" ]; then\n'
            '  echo "hpo: error: HPO_STORAGE is not set: submit with it in the environment '
            '(sbatch --export=ALL)" >&2\n'
            "  exit 2\n"
            "fi\n"
            f"{setup}"
            "# The worker runs in the background so that this shell can pass Slurm's signals\n"
            "# on: USR1 (the warning before the time limit) and TERM preempt its trials, which\n"
            "# are queued again and resume from their checkpoints on the next worker.\n"
            f"{shlex.join(self.worker_command())} &\n"
            "worker=$!\n"
            "trap 'kill -USR1 \"$worker\" 2>/dev/null' USR1\n"
            "trap 'kill -TERM \"$worker\" 2>/dev/null' TERM\n"
            "while :; do\n"
            '  wait "$worker"\n'
            "  status=$?\n"
            '  kill -0 "$worker" 2>/dev/null || break  # alive: a signal cut the wait short\n'
            "done\n"
            f'if [ "$status" -eq {PREEMPTED_EXIT} ]; then  # preempted by the warning signal\n'
            f"{requeue}"
            "fi\n"
            'exit "$status"\n'
        )


def script_path(study: str, directory: Path = SLURM_DIR, *, now: dt.datetime | None = None) -> Path:
    """Where a job's script is kept by default: ``.hpo/slurm/<study>-<UTC time>.sbatch``."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    return directory / f"{study}-{stamp}.sbatch"


def find_sbatch() -> str:
    """The ``sbatch`` on PATH; UsageError when there is none (not a Slurm login node)."""
    found = shutil.which("sbatch")
    if found is None:
        raise UsageError(
            "sbatch not found on PATH: run hpo slurm on a Slurm login node (or --dry-run to "
            "see the script)"
        )
    return found


def submit(script: Path, storage: str, *, env: Mapping[str, str], sbatch: str) -> str:
    """Submit ``script`` with ``sbatch --parsable``; the job id.

    ``storage`` reaches the job as HPO_STORAGE in sbatch's environment (``--export=ALL``),
    never on its command line, where ``ps`` would show it.
    """
    argv = [sbatch, "--parsable", "--export=ALL", str(script)]
    done = _run(argv, {**env, "HPO_STORAGE": storage})
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(f"sbatch refused {script}: {reason[-1] if reason else done.returncode}")
    job = done.stdout.strip().split(";")[0]  # "JOBID" or "JOBID;CLUSTER"
    if not job.isdigit():
        raise SlurmError(f"sbatch printed no job id for {script}: {done.stdout.strip()!r}")
    return job


def _run(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), env=dict(env), capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"could not run sbatch: {e}") from None
