"""Retrain one configuration outside a study and write a reproducible record of it.

``hpo retrain STUDY`` calls :func:`retrain` with the best trial's params: the objective runs
once more, with checkpoints in ``out_dir`` (``best.pt``, ``last.pt``), and
``out_dir/manifest.json`` records what is needed to trust and reproduce the model: params,
metrics, per-epoch history, software versions and hardware.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

from hpo.context import TrialContext

__all__ = ["Objective", "retrain"]

#: ``f(trial, ctx)`` (hpo's) or ``f(trial)`` (a plain Optuna objective).
Objective = Callable[..., float | Sequence[float]]

_RESERVED_KEYS = frozenset(
    {
        "created",
        "command",
        "params",
        "metrics",
        "directions",
        "values",
        "seed",
        "best_epoch",
        "epochs_run",
        "stop_reason",
        "history",
        "user_attrs",
        "checkpoints",
        "versions",
        "hardware",
    }
)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _hardware(device_used: str | None) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "device": device_used,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "cuda_device_count": torch.cuda.device_count() if cuda else 0,
    }


def _versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "optuna": optuna.__version__,
        "numpy": _version("numpy"),
        "hpo": _version("hpo"),
    }


def _manifest(
    trial: optuna.trial.FixedTrial, ctx: TrialContext, values: list[float], out_dir: Path
) -> dict[str, Any]:
    attrs = dict(trial.user_attrs)
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "params": dict(ctx.params),
        "metrics": list(ctx.metrics),
        "directions": list(ctx.directions),
        "values": values,
        "seed": ctx.seed,
        "best_epoch": attrs.pop("best_epoch", None),
        "epochs_run": attrs.pop("epochs_run", None),
        "stop_reason": attrs.pop("stop_reason", None),
        "history": attrs.pop("history", []),
        "user_attrs": attrs,
        # what the objective saved in its checkpoint directory; a plain objective saves none
        # (a command spec's script writes into checkpoints/, its {checkpoint_dir})
        "checkpoints": sorted(p.name for p in out_dir.glob("*.pt"))
        + sorted(f"checkpoints/{p.name}" for p in out_dir.glob("checkpoints/*") if p.is_file()),
        "versions": _versions(),
        "hardware": _hardware(attrs.get("device")),
        "command": sys.argv,
    }


def retrain(
    objective: Objective,
    params: Mapping[str, Any],
    *,
    metrics: Sequence[str],
    directions: Sequence[str],
    out_dir: Path,
    manifest_extra: Mapping[str, Any],
    device: str | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Run ``objective`` once with fixed ``params``; write ``out_dir/manifest.json``.

    The objective gets an ``optuna.trial.FixedTrial``, which never prunes and keeps the
    user attributes the training loop sets (history, best epoch, confusion matrix, ...), and
    ``out_dir`` as its checkpoint directory, so an interrupted retrain resumes when called
    again with the same arguments. ``manifest_extra`` (e.g. the spec and the study name) is
    merged into the manifest's top level; it must not reuse the manifest's own keys.
    Returns the manifest's path.
    """
    clashes = sorted(_RESERVED_KEYS.intersection(manifest_extra))
    if clashes:
        raise ValueError(f"`manifest_extra` must not set the manifest's own keys {clashes}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = TrialContext(
        params=dict(params),
        metrics=tuple(metrics),
        directions=tuple(directions),
        checkpoint_dir=out_dir,
        device=device,
        seed=seed,
        extra=dict(extra or {}),  # a command spec's command (hpo.script)
    )
    from hpo.spec import objective_arity

    trial = optuna.trial.FixedTrial(dict(params))
    returned = objective(trial, ctx) if objective_arity(objective) == 2 else objective(trial)
    values = [float(returned)] if isinstance(returned, int | float) else list(map(float, returned))
    manifest = _manifest(trial, ctx, values, out_dir)
    manifest.update(manifest_extra)
    path = out_dir / "manifest.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
