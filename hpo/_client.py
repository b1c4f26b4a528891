"""``hpo.report``: what a training script calls each epoch. The standard library only.

A script that hpo runs for a command spec finds the trial's report socket in the environment
(``HPO_REPORT_SOCKET``); the trial process serves it (``hpo.script``). Each call is one JSON
line each way, on a connection kept open, so a round trip costs well under a millisecond
plus the pruner's verdict. Run by hand (no such variable) the call does nothing and says
"go on", so the same script still trains on its own.

In a script started by torchrun only rank 0 reports; any other rank's call waits for rank
0's report of that epoch and returns the same verdict, so every rank stops together (call it
with the same epochs on every rank).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from typing import Any

#: The Unix socket of the running trial, set by hpo in the script's environment.
SOCKET_ENV = "HPO_REPORT_SOCKET"
#: The prefix of a report printed on stdout: ``[hpo] {"epoch": 3, "val_loss": 0.41}``.
LINE_PREFIX = "[hpo] "

_conn: tuple[int, socket.socket, Any] | None = None  # (pid, socket, its reader)
_warned = False


def report(epoch: int, **metrics: float) -> bool:
    """Report one epoch's metrics; True when the pruner says the trial should stop.

    ``epoch`` is the step the pruner counts (an int >= 0); metrics are numbers (a 0-d
    tensor or a NumPy scalar is converted). Outside hpo it returns False and does nothing.
    """
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return False
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"hpo.report: epoch must be an int >= 0, got {epoch!r}")
    rank = os.environ.get("RANK", "0")
    if rank not in ("", "0"):
        return _ask({"epoch": epoch, "ask": True}, path)
    values = {}
    for name, value in metrics.items():
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"hpo.report: {name} must be a number, got {value!r}") from None
    if not values:
        raise ValueError("hpo.report: give at least one metric, e.g. val_loss=0.3")
    return _ask({"epoch": epoch, "metrics": {k: _json_safe(v) for k, v in values.items()}}, path)


def _json_safe(value: float) -> float | str:
    return value if math.isfinite(value) else repr(value)  # JSON has no nan or inf


def _ask(message: dict[str, Any], path: str) -> bool:
    global _conn, _warned
    try:
        if _conn is None or _conn[0] != os.getpid():  # a forked child opens its own
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            _conn = (os.getpid(), sock, sock.makefile("rb"))
        _, sock, reader = _conn
        sock.sendall(json.dumps(message).encode() + b"\n")
        line = reader.readline()
        if not line:
            raise ConnectionError("the trial closed the report socket")
        return bool(json.loads(line).get("stop", False))
    except (OSError, ValueError) as e:
        _conn = None
        if not _warned:  # training goes on; the trial fails if its metric never arrives
            _warned = True
            print(f"hpo.report: cannot reach the trial ({e}); going on", file=sys.stderr)
        return False
