"""The script's process: started in its own process group, its output copied to log files
while read for metrics, and ended, with everything it forked, however the trial ends.

The group is what gets signalled: a script's DataLoader workers (or anything it forked) share
it, so SIGTERM then SIGKILL to the group leaves no orphan. For the case where the trial
process itself is SIGKILLed, the script gets ``PR_SET_PDEATHSIG`` (Linux); what the script
forked dies with its group only when the trial process lives to signal it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from hpo.script._launch import Launch

_TAIL_LINES = 20
_CHUNK = 65536


def _pdeathsig() -> Callable[[], None] | None:
    """What the child runs between fork and exec: only a call into libc, loaded here in the
    parent (loading a library in a forked child of a threaded process can deadlock)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def die_with_trial() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the trial process's death kills it
        # An ignored signal stays ignored across exec: the trial process ignores these (they
        # are its worker's to act on), but the script gets them as it would run by hand.
        for sig in (signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)

    return die_with_trial


class ScriptProcess:
    """A running command; ``on_line`` gets each line of its stdout and stderr (two threads),
    and ``on_close`` is called as each of the two streams reaches its end."""

    def __init__(
        self,
        launch: Launch,
        on_line: Callable[[str], None],
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.popen = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, and no terminal's Ctrl-C
            preexec_fn=_pdeathsig(),
        )
        self.pgid = self.popen.pid
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(
                target=_pump,
                args=(self.popen.stdout, launch.stdout, on_line, None, on_close),
                name="hpo-script-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=_pump,
                args=(self.popen.stderr, launch.stderr, on_line, self.stderr_tail, on_close),
                name="hpo-script-stderr",
                daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()

    def poll(self) -> int | None:
        return self.popen.poll()

    def output_done(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for both streams to reach their end."""
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        return not any(r.is_alive() for r in self._readers)

    def end(self, grace: float) -> None:
        """End the script and its whole group: SIGTERM, up to ``grace`` seconds, SIGKILL.

        Also after the script exited on its own: what it forked and left behind goes too
        (it would hold the output pipes open, and a GPU).
        """
        if self.popen.poll() is not None and not self._group_alive():
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.popen.poll() is None or self._group_alive()):
            time.sleep(0.02)
        self._signal(signal.SIGKILL)
        self.popen.wait()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _group_alive(self) -> bool:
        """Whether any process of the group still runs (zombies waiting for init do not)."""
        self.popen.poll()  # reap the leader, so its own zombie does not count
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return any(_in_group_running(pid, self.pgid) for pid in _pids())


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _in_group_running(pid: int, pgid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # fields after the command's closing parenthesis: state ppid pgrp ...
    fields = stat.rpartition(")")[2].split()
    return len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z"


def _pump(
    pipe: IO[bytes],
    log_path: Path,
    on_line: Callable[[str], None],
    tail: collections.deque[str] | None,
    on_close: Callable[[], None],
) -> None:
    """Copy a stream to its log file as it comes, and hand each complete line on."""
    partial = b""
    fd = pipe.fileno()
    with open(log_path, "ab") as log:
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                break
            log.write(chunk)
            log.flush()  # `hpo logs --follow` shows it now
            *lines, partial = (partial + chunk).split(b"\n")
            for raw in lines:
                _line(raw, on_line, tail)
        if partial:
            _line(partial, on_line, tail)
    pipe.close()
    on_close()


def _line(raw: bytes, on_line: Callable[[str], None], tail: collections.deque[str] | None) -> None:
    text = raw.decode("utf-8", errors="replace")
    shown = text.rstrip("\r").rpartition("\r")[2]  # a progress bar: what a terminal shows last
    if tail is not None and shown.strip():
        tail.append(shown)
    for segment in text.split("\r"):
        if segment:
            on_line(segment)
