"""A real one-node Slurm cluster on loopback for the tests, started by the test suite itself.

Debian's ``slurm-wlm`` and ``munge`` (``make test`` installs them): munged, slurmctld and
slurmd run as root from a temporary directory with a generated ``slurm.conf`` and a munge key
of their own, on free ports, so nothing of the machine's own configuration is read or
changed. No systemd and no cgroups: processes are tracked by parentage
(``proctrack/linuxproc``) and not confined (``task/none``). The node has CPU slots only.
Client commands (``sbatch``, ``scontrol``, ``scancel``) find it through ``SLURM_CONF``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE = "hpo-node"
CPUS = 4  # more than the host may have: slurmd takes the configured figure (config_overrides)
DAEMONS = ("munged", "slurmctld", "slurmd")

SLURM_CONF = """\
ClusterName=hpotest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
# Look at pending jobs every second (60 s by default), so a requeued one starts at once.
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Seconds between a job's SIGTERM and its SIGKILL (30 by default, as on most clusters).
KillWait=30
# A requeued job waits for cred_expire (AuthInfo: 120 s by default, 5 here, its least) before
# it may start again.
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is not installed, or the cluster did not come up."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    root: Path
    conf: Path = field(init=False)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conf = self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client command needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60.0) -> None:
        missing = [
            d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()
        ]
        if missing:
            raise SlurmUnavailable(
                f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster runs its daemons as root")
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o600)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            SLURM_CONF.format(
                host=host,
                dir=self.root,
                node=NODE,
                cpus=CPUS,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
            )
        )
        d = self.root
        self._daemon(
            "munged",
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={d}/munge.socket",
                f"--pid-file={d}/munged.pid",
                f"--log-file={d}/munged.log",
                f"--seed-file={d}/munge/munged.seed",
            ],
            d / "munged.pid",
        )
        self._wait(lambda: (d / "munge.socket").exists(), timeout, "munged")
        env = {**os.environ, **self.env}
        self._daemon(
            "slurmctld", ["slurmctld", "-c", "-f", str(self.conf)], d / "slurmctld.pid", env
        )
        self._daemon("slurmd", ["slurmd", "-N", NODE, "-f", str(self.conf)], d / "slurmd.pid", env)
        self._wait(self._node_up, timeout, "slurmd registering with slurmctld")

    def _daemon(
        self, name: str, argv: list[str], pid_file: Path, env: dict[str, str] | None = None
    ) -> None:
        # Each daemon forks into the background and writes its pid file.
        path = shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}"
        done = subprocess.run(
            [path, *argv[1:]], env=env, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise SlurmUnavailable(
                f"{name} did not start: {(done.stderr or done.stdout).strip()}{self._log(name)}"
            )
        self._wait(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 20, name)
        self.pids[name] = int(pid_file.read_text().split()[0])

    def _node_up(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
        return out in ("idle", "mixed", "allocated")

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise SlurmUnavailable(
            f"{what} not ready within {timeout:.0f} s{self._log(what.split()[0])}"
        )

    def _log(self, name: str) -> str:
        log = self.root / f"{name}.log"
        return f"; {log}: {log.read_text()[-1500:]}" if log.exists() else ""

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        done = subprocess.run(
            list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (the first record: an array's first task)."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout.splitlines()[0]
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def states(self, job_id: str) -> list[str]:
        """The state of each task of the job (one for a plain job)."""
        out = self.run("squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T", check=False)
        return out.stdout.split()

    def stop(self) -> None:
        """End every job, then the daemons, in reverse order of their start."""
        self.run("scancel", "--full", "--user=root", check=False)
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(5):  # a throwaway cluster: no need to wait for a tidy exit
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
