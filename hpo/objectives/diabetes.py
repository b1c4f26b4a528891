"""Built-in ``diabetes`` objective: regression with the 3-layer MLP on scikit-learn's diabetes.

442 patients, 10 standardized features (age, sex, BMI, blood pressure, six blood serum
measurements), the target a measure of disease progression one year later; the data ship
inside scikit-learn (no download). Split 60/20/20 with a fixed data seed; features and
target are standardized with the training split's statistics, so ``val_mse`` is in units
of the target's variance and ``val_r2`` is what a spec usually maximizes.

Params (defaults): ``hidden_size`` (64), ``dropout`` (0.1), and the training loop's keys
(see :class:`hpo.training.TrainConfig`; ``task`` is always ``regression``, ``loss`` may
be ``mse``, ``l1`` or ``huber``).
"""

from __future__ import annotations

import functools

import numpy as np
import optuna
import torch
from torch.utils.data import TensorDataset

from hpo.context import TrialContext
from hpo.objectives import float_param, int_param, training_accepts
from hpo.objectives.mlp import MLP
from hpo.training import LoaderData, TrainConfig, seed_everything, train

__all__ = ["ACCEPTS", "load_data", "objective"]

#: The params it reads (the training loop's and its own) and the metrics it reports.
ACCEPTS = training_accepts("hidden_size", "dropout", task="regression")

DATA_SEED = 0


@functools.lru_cache(maxsize=1)
def load_data() -> LoaderData:
    """Train/val/test tensor datasets of standardized features and targets."""
    from sklearn.datasets import load_diabetes  # bundled with scikit-learn; imported lazily

    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(DATA_SEED).permutation(len(y))
    cut_val, cut_test = int(0.6 * len(y)), int(0.8 * len(y))
    parts = np.split(order, [cut_val, cut_test])
    train_idx = parts[0]
    x_mean, x_std = x[train_idx].mean(axis=0), x[train_idx].std(axis=0)
    y_mean, y_std = y[train_idx].mean(), y[train_idx].std()

    def dataset(idx: np.ndarray) -> TensorDataset:
        xs = torch.from_numpy(((x[idx] - x_mean) / x_std).astype(np.float32))
        ys = torch.from_numpy(((y[idx] - y_mean) / y_std).astype(np.float32))
        return TensorDataset(xs, ys)

    return LoaderData(train=dataset(parts[0]), val=dataset(parts[1]), test=dataset(parts[2]))


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float | tuple[float, ...]:
    params = ctx.params
    data = load_data()
    config = TrainConfig.from_params({**params, "task": "regression"})
    seed_everything(ctx.seed)
    model = MLP(
        10,
        1,
        hidden_size=int_param(params, "hidden_size", 64),
        dropout=float_param(params, "dropout", 0.1, low=0.0, high=1.0),
    )
    return train(trial, ctx, model, data, config).value
