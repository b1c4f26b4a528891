"""``hpo logs STUDY TRIAL``: a command trial's stdout and stderr, from its trial directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from hpo.cli._app import handle_errors, main, storage_option
from hpo.cli._target import target

_POLL_S = 0.5


@main.command()
@click.argument("study")
@click.argument("trial", type=click.IntRange(min=0))
@storage_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the trial finishes.")
@handle_errors
def logs(study: str, trial: int, storage: str | None, follow: bool) -> None:
    """Print a command trial's stdout (to stdout) and stderr (to stderr).

    STUDY is a study name or the path of its spec; TRIAL is the trial's number. The logs
    are in the trial directory, on the machine that ran the trial unless it is shared.
    """
    study, storage = target(study, storage)
    from hpo.errors import HpoError, UsageError
    from hpo.script import log_paths
    from hpo.study import load_study

    loaded = load_study(study, storage)
    frozen = _trial(loaded, trial)
    if frozen is None:
        raise UsageError(f"study {study!r} has no trial {trial}")
    while follow and "trial_dir" not in frozen.user_attrs and not frozen.state.is_finished():
        time.sleep(_POLL_S)  # queued, or just started: its worker has not said where yet
        frozen = _trial(loaded, trial)
    trial_dir = frozen.user_attrs.get("trial_dir")
    if not isinstance(trial_dir, str):
        raise UsageError(
            f"trial {trial} has no logs: hpo keeps them for a spec's command, "
            "and this trial ran none (or has not started)"
        )
    out, err = log_paths(Path(trial_dir), trial)
    if not Path(trial_dir).is_dir():
        host = frozen.user_attrs.get("host", "another machine")
        raise HpoError(f"trial {trial}'s logs are on {host}, in {out.parent} (not on this machine)")
    streams = [(out, sys.stdout), (err, sys.stderr)]
    offsets = [_copy(path, stream, 0) for path, stream in streams]
    while follow and not _finished(loaded, trial):
        time.sleep(_POLL_S)
        offsets = [_copy(p, s, o) for (p, s), o in zip(streams, offsets, strict=True)]
    if follow:  # what it wrote as it finished
        for (path, stream), offset in zip(streams, offsets, strict=True):
            _copy(path, stream, offset)
    others = _other_attempts(out.parent, trial)
    if others:  # retries of one logical trial share its directory, each with its own logs
        shown = ", ".join(str(n) for n in others)
        click.echo(f"other attempts of this trial: {shown} (hpo logs {study} N)", err=True)


def _other_attempts(logs: Path, number: int) -> list[int]:
    found = (p.name.partition(".")[0] for p in logs.glob("*.stdout.log"))
    return sorted(int(n) for n in found if n.isdigit() and int(n) != number)


def _trial(study: Any, number: int) -> Any:
    for t in study.optuna.get_trials(deepcopy=False):
        if t.number == number:
            return t
    return None


def _finished(study: Any, number: int) -> bool:
    frozen = _trial(study, number)
    return frozen is None or frozen.state.is_finished()


def _copy(path: Path, stream: IO[str], offset: int) -> int:
    """Write what ``path`` holds from ``offset`` on; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    stream.write(data.decode("utf-8", errors="replace"))
    stream.flush()
    return offset + len(data)
