"""The package's error types; the CLI turns each into one line and an exit code."""

from __future__ import annotations

from typing import Any


class HpoError(Exception):
    """Base class: an error the user can act on, printed without a traceback."""

    exit_code = 1


class SpecError(HpoError, ValueError):
    """A study spec is invalid. The message names the file, the key and the value."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, value: Any, message: str) -> None:
        self.source, self.key, self.value, self.message = source, key, value, message
        where = f"{source}: {key}" if key else source
        shown = "" if value is None else f" (got {_short(value)})"
        super().__init__(f"{where}: {message}{shown}")


class StopStudy(HpoError, ValueError):
    """Raised inside a trial when what it found makes every trial of the study as wrong (the
    spec's metric is one the training loop does not compute, say): the worker fails the trial
    with this message and stops the study rather than spend its budget."""


class RetryTrial(Exception):
    """Raised inside a trial that failed the way a retry may not (a training script that
    crashed after it made progress, or was killed): the worker fails the trial with this
    message and queues its retry, which resumes from the trial's checkpoints."""


class TrialInterrupted(BaseException):
    """Raised in a trial process's main thread when its worker ends the trial early (SIGTERM:
    ``hpo stop --now``, ``trial_timeout``, the worker's shutdown or preemption).

    Not an ``Exception``, so an objective's ``except Exception`` does not swallow it, while its
    ``finally`` blocks still run: that is where a running script's process group is ended.
    """


class UsageError(HpoError):
    """Bad command-line usage or a reference to something that does not exist."""

    exit_code = 2


class StudyNotFound(UsageError):
    def __init__(self, name: str, storage: str) -> None:
        super().__init__(f"no study named {name!r} in {storage}")


class NoDatabase(UsageError):
    """A read-only command named a SQLite file that does not exist (hpo never creates one)."""


class StorageError(HpoError):
    """The storage cannot be reached or used; the URL in the message has no password."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
