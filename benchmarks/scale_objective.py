"""benchmarks/scale.py's objective: does nothing, but each process's first trial waits at a
gate until every process has reached it, so all of them start asking at the same moment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

from hpo.context import TrialContext

_passed: list[bool] = []


def gate(directory: str) -> None:
    """Say this process is ready, then wait for the benchmark's go (once per process)."""
    if _passed:
        return
    where = Path(directory)
    (where / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 600  # the benchmark died: do not wait forever
    while not (where / "go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no go from benchmarks/scale.py in 10 minutes")
        time.sleep(0.005)
    _passed.append(True)


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    gate(str(ctx.params["gate"]))
    p = ctx.params  # read, as a real objective would (hpo checks a searched one is read)
    return float(p["x"]) + float(p["y"]) + float(p["lr"]) + len(str(p["opt"]))
