"""What one trial's command is: its directory, its config copy, its argv and environment.

The trial directory is the logical trial's (``TrialContext.checkpoint_dir``), so a retry runs
in the directory of the attempt it retries and ``{resume}`` finds that attempt's checkpoint.
Layout::

    <trial_dir>/config.yaml         the base config with this trial's parameters ({config})
    <trial_dir>/params.json         the parameters ({args_json_file})
    <trial_dir>/checkpoints/        where the script writes checkpoints ({checkpoint_dir})
    <trial_dir>/logs/N.stdout.log   each attempt's output (N: the trial's number)
    <trial_dir>/logs/N.stderr.log
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import StopStudy
from hpo.spec import (
    CommandSpec,
    fill,
    format_value,
    has_key,
    read_config,
    set_key,
    template_names,
    write_config,
)

#: GPUs in the trial's slot, set by the worker; ``{gpus}`` reads it (1 when unset).
SLOT_GPUS_ENV = "HPO_SLOT_GPUS"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    trial_dir: Path
    stdout: Path
    stderr: Path
    resume: str | None


def log_paths(trial_dir: Path, number: int) -> tuple[Path, Path]:
    """Where trial ``number``'s stdout and stderr go (``hpo logs`` reads them there)."""
    logs = trial_dir / "logs"
    return logs / f"{number}.stdout.log", logs / f"{number}.stderr.log"


def prepare(
    spec: CommandSpec,
    params: Mapping[str, Any],
    *,
    searched: set[str],
    number: int,
    seed: int,
    trial_dir: Path,
) -> Launch:
    """Write the trial's files and fill in the command; ``searched`` are the sampled names
    (the others are fixed, whose strings may hold ``{trial_dir}`` / ``{checkpoint_dir}``)."""
    checkpoints = trial_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    stdout, stderr = log_paths(trial_dir, number)
    stdout.parent.mkdir(exist_ok=True)
    paths = {"trial_dir": str(trial_dir), "checkpoint_dir": str(checkpoints)}
    params = {
        k: fill(v, paths) if isinstance(v, str) and k not in searched else v
        for k, v in params.items()
    }
    params_file = trial_dir / "params.json"
    params_file.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    resume = _resume(spec, checkpoints)
    values = {
        **paths,
        "config": _write_config(spec, params, trial_dir) or "",
        "resume": resume or "",
        "gpus": os.environ.get(SLOT_GPUS_ENV) or "1",
        "args_json_file": str(params_file),
        **{k: format_value(v) for k, v in params.items()},
    }
    argv: list[str] = []
    for i, arg in enumerate(spec.argv):
        if arg == "{args}":
            argv += [f"--{k}={format_value(v)}" for k, v in params.items()]
        elif resume is None and "resume" in template_names(arg):
            # nothing to resume: the placeholder goes, and the flag before it
            if arg == "{resume}" and i > 0 and spec.argv[i - 1].startswith("-") and argv:
                argv.pop()
        else:
            argv.append(fill(arg, values))
    env = {
        **os.environ,
        "HPO_TRIAL_NUMBER": str(number),
        "HPO_TRIAL_DIR": str(trial_dir),
        "HPO_CHECKPOINT_DIR": str(checkpoints),
        "HPO_SEED": str(seed),
        "HPO_PARAMS": json.dumps(params),
    }
    if values["config"]:
        env["HPO_CONFIG"] = values["config"]
    # A Python script's stdout into a pipe is block-buffered: its reports would arrive a
    # few kilobytes late, and the pruner with them.
    env.setdefault("PYTHONUNBUFFERED", "1")
    return Launch(argv, env, spec.workdir, trial_dir, stdout, stderr, resume)


def _write_config(spec: CommandSpec, params: Mapping[str, Any], trial_dir: Path) -> str | None:
    if spec.config is None:
        return None
    try:
        config = read_config(spec.config)
    except ValueError as e:  # it was there at load: moved or edited since
        raise StopStudy(f"config: {e}") from None
    for name, value in params.items():
        if spec.config_new_keys or has_key(config, name):
            try:
                set_key(config, name, value)
            except ValueError as e:
                raise StopStudy(f"config: {e}") from None
        elif f"{{{name}}}" not in " ".join(spec.argv):
            raise StopStudy(f"config: the base config {spec.config} has no key {name!r} now")
    path = trial_dir / f"config{Path(spec.config).suffix.lower()}"
    write_config(config, path)
    return str(path)


def _resume(spec: CommandSpec, checkpoints: Path) -> str | None:
    """The checkpoint a retry resumes from: the spec's ``resume_file``, or the newest entry."""
    if spec.resume_file is not None:
        path = checkpoints / spec.resume_file
        return str(path) if path.exists() else None
    entries = [p for p in checkpoints.iterdir() if not p.name.startswith(".")]
    return str(max(entries, key=lambda p: p.stat().st_mtime)) if entries else None
