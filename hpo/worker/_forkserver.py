"""What the forkserver that starts trial processes imports once, before any trial process.

Trial processes are forked from that server instead of each starting a fresh interpreter,
so they start ready: Optuna, hpo's trial process and the study's objective module (and with
it torch, a second or more per process) are imported once per worker, not once per slot.

The server must never initialise CUDA, or no forked child could use it: PyTorch's NVML-based
check keeps an objective module's import-time ``torch.cuda.is_available()`` from doing so
(each trial process then initialises CUDA itself, after its worker set
``CUDA_VISIBLE_DEVICES``). The server never opens the database either. Set
``HPO_START_METHOD=spawn`` to start each trial process from a fresh interpreter instead.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
if __name__ != "__main__":
    # A signal to the worker's process group (Ctrl-C, ``timeout``, Slurm) must not kill the
    # server: its trial processes die with it (PR_SET_PDEATHSIG) before the worker can act.
    # It still exits when its worker does (its pipe from the worker closes).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # Slurm ends a job (time limit, scancel, requeue) by signalling every process in it,
    # whatever its group: the server must outlive its trial processes' graceful end, which
    # their worker oversees. Its children inherit the same, until they set their own.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

import hpo.spec  # the trial process resolves its objective with it
import hpo.worker._trial_process

_module = os.environ.get(hpo.worker._trial_process.OBJECTIVE_MODULE_ENV)
if _module and __name__ != "__main__":
    # A broken objective must not take the server down: its trial process imports it again
    # and reports what went wrong.
    with contextlib.suppress(BaseException):
        importlib.import_module(_module)
