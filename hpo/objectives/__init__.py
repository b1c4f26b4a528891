"""Built-in objectives, selected in a spec by name: ``objective: mlp`` -> ``hpo.objectives.mlp``.

Each module exposes ``objective(trial, ctx)``, reads its hyperparameters from
``ctx.params`` (sampled values merged over the spec's fixed ones; missing keys take the
module's defaults) and trains with :func:`hpo.training.train`. The data ship with the
packages (scikit-learn's bundled datasets) or are generated; nothing is downloaded.

This module stays free of heavy imports so that resolving a name does not load torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpo.search import BUILTIN_OBJECTIVES

__all__ = [
    "BUILTIN_OBJECTIVES",
    "Accepts",
    "accepts_of",
    "choice_param",
    "closest_param",
    "float_param",
    "int_param",
    "training_accepts",
]


@dataclass(frozen=True)
class Accepts:
    """What an objective reads and reports, so a spec can be checked before a trial runs.

    A module declares it as ``ACCEPTS``; every built-in does. ``params`` are the keys the
    objective reads from ``ctx.params`` (searched or fixed); ``first_metrics`` the metrics it
    can report each epoch (the first of a spec's metrics, which is pruned and early-stopped
    on); ``metrics`` those any later metric may be.
    """

    params: frozenset[str]
    first_metrics: tuple[str, ...]
    metrics: tuple[str, ...]


def training_accepts(*model_params: str, task: str = "classification") -> Accepts:
    """An objective that trains with :func:`hpo.training.train`: the loop's keys
    (:class:`~hpo.training.TrainConfig`'s fields) plus ``model_params``, and the metrics the
    loop reports for ``task``."""
    import dataclasses

    from hpo.training import MODEL_METRICS, TASK_METRICS, TrainConfig

    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    first = ("train_loss", "val_loss", *(f"val_{m}" for m in TASK_METRICS[task]))
    return Accepts(
        params=frozenset({*keys, *model_params}),
        first_metrics=first,
        metrics=(*first, *MODEL_METRICS),
    )


def accepts_of(objective: Callable[..., Any]) -> Accepts | None:
    """The ``ACCEPTS`` its module declares, or None (a user objective that declares nothing)."""
    import sys

    module = sys.modules.get(getattr(objective, "__module__", "") or "")
    accepts = getattr(module, "ACCEPTS", None)
    return accepts if isinstance(accepts, Accepts) else None


# Names other code and papers use for the same hyperparameter: difflib alone cannot see that
# learning_rate is lr.
_ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate", "learningrate", "eta", "step_size", "base_lr", "max_lr"),
    "weight_decay": ("wd", "l2", "l2_reg", "decay", "weightdecay"),
    "batch_size": ("batchsize", "bs", "train_batch_size", "per_device_train_batch_size"),
    "dropout": ("dropout_rate", "drop_rate", "p_dropout", "dropout_prob", "drop_prob"),
    "hidden_size": ("hidden_dim", "hidden", "n_hidden", "hidden_units", "units", "width"),
    "n_layers": ("num_layers", "layers", "depth", "nlayers", "n_blocks", "num_blocks"),
    "n_heads": ("num_heads", "heads", "nhead", "n_head", "num_attention_heads"),
    "epochs": ("num_epochs", "n_epochs", "max_epochs", "epoch", "num_train_epochs"),
    "optimizer": ("optim", "opt", "optimiser"),
    "scheduler": ("lr_scheduler", "schedule", "lr_schedule"),
    "warmup_epochs": ("warmup", "warmup_steps", "n_warmup"),
    "grad_clip": ("clip", "max_grad_norm", "gradient_clip_val", "clip_grad_norm", "clip_norm"),
    "grad_accum": ("gradient_accumulation_steps", "accumulate_grad_batches", "accum_steps"),
    "patience": ("early_stopping_patience", "es_patience"),
    "label_smoothing": ("smoothing", "label_smooth"),
    "kernel_size": ("kernel", "ksize", "filter_size"),
    "channels": ("n_channels", "num_channels", "filters", "n_filters", "num_filters"),
}


def closest_param(name: str, known: Iterable[str]) -> str | None:
    """The known key ``name`` most likely means (a synonym first, then spelling), or None."""
    known = sorted(set(known) - {name})
    for key, aliases in _ALIASES.items():
        if key in known and name.lower() in aliases:
            return key
    norm = {k.replace("_", "").lower(): k for k in known}
    if name.replace("_", "").lower() in norm:
        return norm[name.replace("_", "").lower()]
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if hint:
        return hint[0]
    # An abbreviation: val_acc for val_accuracy.
    prefixed = [k for k in known if len(name) >= 4 and (k.startswith(name) or name.startswith(k))]
    return prefixed[0] if len(prefixed) == 1 else None


def int_param(params: Mapping[str, Any], key: str, default: int, *, minimum: int = 1) -> int:
    """``params[key]`` as an int >= ``minimum`` (integral floats accepted), else ``default``."""
    value = params.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{key}` must be an integer >= {minimum}, but got {key}={value!r}.")
    return value


def float_param(
    params: Mapping[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    """``params[key]`` as a float in ``[low, high)``, else ``default``."""
    value = params.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value < high:
        raise ValueError(f"`{key}` must be a number in [{low}, {high}), but got {key}={value!r}.")
    return float(value)


def choice_param(params: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> str:
    """``params[key]``, which must be one of ``choices``, else ``default``."""
    value = params.get(key, default)
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {list(choices)}, but got {key}={value!r}.")
    return str(value)
