"""Built-in ``mlp`` objective: a 3-layer MLP with dropout on tabular data.

The datasets are the ones bundled with scikit-learn (read from its package, no download):
``digits`` (8x8 images flattened to 64 features, 10 classes), ``wine``, ``breast_cancer``
and ``iris``. They are split 60/20/20 (stratified, with a fixed data seed so that every
trial sees the same split) and standardized with the training split's statistics.

Params (defaults): ``dataset`` ("digits"), ``hidden_size`` (128), ``dropout`` (0.2), and
the training loop's keys (see :class:`hpo.training.TrainConfig`).
"""

from __future__ import annotations

import functools

import optuna
import torch
from torch import nn

from hpo.context import TrialContext
from hpo.objectives import choice_param, float_param, int_param, training_accepts
from hpo.training import (
    SKLEARN_DATASETS,
    ClassificationData,
    load_sklearn_dataset,
    make_classification_data,
    seed_everything,
    train,
)

__all__ = ["ACCEPTS", "MLP", "load_data", "objective"]

#: The params it reads (the training loop's and its own) and the metrics it reports.
ACCEPTS = training_accepts("dataset", "hidden_size", "dropout")

#: Seed of the train/val/test split: fixed, so trials differ only in what they try.
DATA_SEED = 0


class MLP(nn.Module):
    """``Linear-ReLU-Dropout`` twice, then a linear classifier."""

    def __init__(
        self, n_features: int, n_classes: int, *, hidden_size: int = 128, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@functools.lru_cache(maxsize=8)
def load_data(dataset: str = "digits") -> ClassificationData:
    """The split, standardized dataset; loaded once per process, shared by its trials."""
    x, y = load_sklearn_dataset(dataset)
    return make_classification_data(x, y, val_fraction=0.2, test_fraction=0.2, seed=DATA_SEED)


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float | tuple[float, ...]:
    params = ctx.params
    data = load_data(choice_param(params, "dataset", "digits", SKLEARN_DATASETS))
    seed_everything(ctx.seed)
    model = MLP(
        data.x_train.shape[1],
        data.n_classes,
        hidden_size=int_param(params, "hidden_size", 128),
        dropout=float_param(params, "dropout", 0.2, low=0.0, high=1.0),
    )
    return train(trial, ctx, model, data).value
