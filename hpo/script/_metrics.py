"""Reading metrics from a script's output lines: ``[hpo] {json}`` lines, and the spec's regex.

A line gives a :class:`Report` (an epoch and some metrics). Its epoch is the ``epoch`` (or
``step``) on the line (with a regex, also the N of "Epoch N", "epoch: N", "Epoch [N/60]");
else the last one seen on an earlier line ("Epoch 3/60" then "val_loss=0.41"); else the
count of reports so far (1, 2, ...).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from hpo._client import LINE_PREFIX

_EPOCH_KEYS = ("epoch", "step")
_EPOCH_WORD = re.compile(r"(?i)\b(?:epoch|step)\b\W{0,3}(\d+)")


@dataclass
class Report:
    """One epoch's metrics, from the client (with ``reply``) or from an output line."""

    epoch: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    reply: Callable[[bool], None] | None = None  # answers the client's call
    ask: bool = False  # a torchrun rank other than 0 asking for rank 0's verdict


def as_number(value: object) -> float | None:
    """A metric value from JSON or text; None for what is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # also "nan" and "inf", which JSON cannot write
        except ValueError:
            return None
    return None


def as_epoch(value: object) -> int | None:
    number = as_number(value)
    if number is None or not math.isfinite(number) or number < 0 or not number.is_integer():
        return None
    return int(number)


class LineParser:
    """Turns output lines into reports; shared by the stdout and stderr readers (locked)."""

    def __init__(self, regex: str | None) -> None:
        self._regex = re.compile(regex) if regex else None
        self._pairs = self._regex is not None and {"name", "value"} <= set(self._regex.groupindex)
        self._lock = threading.Lock()
        self._last_epoch: int | None = None
        self._count = 0
        self.problems: list[str] = []  # lines that looked like reports but were not
        self.unread: list[str] = []  # the first lines that held no report at all

    def parse(self, line: str) -> Report | None:
        found = self._prefixed(line)
        if found is None and self._regex is not None:
            found = self._pairs_of(line) if self._pairs else self._groups_of(line)
            word = _EPOCH_WORD.search(line)
            if word and (found is None or found[0] is None):
                found = (int(word.group(1)), found[1] if found else {})
        if found is None:
            return None
        epoch, metrics = found
        with self._lock:
            if epoch is not None and not metrics:
                self._last_epoch = epoch  # "Epoch 3/60": the metrics follow on later lines
                return None
            if not metrics:
                return None
            if epoch is None:
                epoch = self._last_epoch
            if epoch is None:
                self._count += 1
                epoch = self._count
            return Report(epoch=epoch, metrics=metrics)

    def _prefixed(self, line: str) -> tuple[int | None, dict[str, float]] | None:
        at = line.find(LINE_PREFIX)  # after a launcher's own prefix too ("[rank0]: [hpo] ")
        if at < 0:
            return None
        text = line[at + len(LINE_PREFIX) :].strip()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._problem(f"not a JSON object after {LINE_PREFIX.strip()!r}: {text[:80]!r}")
            return None
        epoch = None
        for key in _EPOCH_KEYS:
            if key in data:
                epoch = as_epoch(data[key])
                if epoch is None:
                    self._problem(f"{key} must be an int >= 0: {text[:80]!r}")
                    return None
                break
        metrics = {}
        for key, value in data.items():
            number = as_number(value)
            if key not in _EPOCH_KEYS and number is not None:
                metrics[key] = number
        return epoch, metrics

    def _pairs_of(self, line: str) -> tuple[int | None, dict[str, float]] | None:
        assert self._regex is not None
        epoch, metrics = None, {}
        for m in self._regex.finditer(line):
            name, number = m.group("name"), as_number(m.group("value"))
            if number is None:
                continue
            if name.lower() in _EPOCH_KEYS:
                epoch = as_epoch(number)
            else:
                metrics[name] = number
        return (epoch, metrics) if epoch is not None or metrics else None

    def _groups_of(self, line: str) -> tuple[int | None, dict[str, float]] | None:
        assert self._regex is not None
        m = self._regex.search(line)
        if m is None:
            return None
        epoch, metrics = None, {}
        for name, text in m.groupdict().items():
            number = as_number(text) if text is not None else None
            if number is None:
                continue
            if name in _EPOCH_KEYS:
                epoch = as_epoch(number)
            else:
                metrics[name] = number
        return (epoch, metrics) if epoch is not None or metrics else None

    def _problem(self, text: str) -> None:
        with self._lock:
            if len(self.problems) < 5:
                self.problems.append(text)
