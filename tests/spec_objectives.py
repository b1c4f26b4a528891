"""Objectives that disagree with their spec, as a new user's first ones do.

Used by tests/test_no_silence.py.
"""

from __future__ import annotations

import optuna

from hpo.context import TrialContext


def reads_lr(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Reads ``lr`` with a default, as a training loop does; a spec may search another name."""
    lr = float(ctx.params.get("lr", 1e-3))
    units = int(ctx.params.get("hidden_size", 8))
    return lr * units


def plain_x(trial: optuna.trial.BaseTrial) -> float:
    """A plain Optuna objective that suggests only x."""
    return trial.suggest_float("x", 0, 1)


def plain_lr(trial: optuna.trial.BaseTrial) -> float:
    """Its own range for learning_rate: 1e-4..1e-3 on a log scale."""
    return trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)


def plain_optimizer(trial: optuna.trial.BaseTrial) -> float:
    name = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    return float(len(name))


def plain_lr_caught(trial: optuna.trial.BaseTrial) -> float:
    """Swallows every error, as some objectives do: the mismatch must still stop the study."""
    try:
        return trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    except Exception:
        return 0.0


def reads_all(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Reads x through ctx and y through trial.suggest_int; fixed keys as given."""
    y = trial.suggest_int("y", 0, 5)
    return float(ctx.params["x"]) + y + float(ctx.params.get("scale", 0))


def trains_tiny(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """hpo's training loop on a tiny linear model: ctx.metric reaches train() as the spec says."""
    import torch

    from hpo.training import ClassificationData, TrainConfig, train

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    data = ClassificationData(x[:48], y[:48], x[48:], y[48:], n_classes=2)
    config = TrainConfig.from_params({**ctx.params, "epochs": 1})
    return float(train(trial, ctx, torch.nn.Linear(4, 2), data, config).value)
