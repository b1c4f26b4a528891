"""The report socket a trial serves to its script's ``hpo.report`` calls.

A Unix socket in a private temporary directory (a trial directory's path may be longer than
a socket's 108 bytes). One thread accepts, one thread per connection reads JSON lines; each
call becomes a :class:`Report` on the trial's queue, and the thread waits for the verdict
the trial's main thread gives (the only thread that talks to the worker) to send it back.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from hpo.script._metrics import Report, as_epoch, as_number


class ReportServer:
    def __init__(self, events: queue.SimpleQueue[Any]) -> None:
        self._events = events
        self._dir = tempfile.mkdtemp(prefix="hpo-report-")
        self.path = str(Path(self._dir, "socket"))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._closed = False

    def start(self) -> None:
        threading.Thread(target=self._accept, name="hpo-report-accept", daemon=True).start()

    def close(self) -> None:
        """Stop serving: a call in flight gets end-of-file, which the client reads as go on."""
        self._closed = True
        for conn in [self._sock, *self._conns]:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ReportServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self._conns.append(conn)
            threading.Thread(
                target=self._serve, args=(conn,), name="hpo-report-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn.makefile("rb") as reader:
            for line in reader:
                verdict = self._verdict(line)
                conn.sendall(b'{"stop": true}\n' if verdict else b'{"stop": false}\n')

    def _verdict(self, line: bytes) -> bool:
        """Hand the call to the trial's main thread and wait for its answer."""
        try:
            data = json.loads(line)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        epoch = as_epoch(data.get("epoch"))
        raw = data.get("metrics")
        metrics = {}
        if isinstance(raw, dict):
            numbers = {k: as_number(v) for k, v in raw.items()}
            metrics = {k: v for k, v in numbers.items() if v is not None}
        answer: queue.SimpleQueue[bool] = queue.SimpleQueue()
        report = Report(epoch=epoch, metrics=metrics, reply=answer.put, ask=bool(data.get("ask")))
        self._events.put(report)
        while not self._closed:
            with contextlib.suppress(queue.Empty):
                return answer.get(timeout=0.5)
        return False
