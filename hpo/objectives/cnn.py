"""Built-in ``cnn`` objective: a small CNN on scikit-learn's bundled 8x8 digits.

Images are 1x8x8 with pixel values 0..16, scaled to [0, 1]; 10 classes; split 60/20/20
(stratified, fixed data seed). Two 3x3 conv blocks (conv, batch norm, ReLU), a 2x2 max
pool down to 4x4, dropout and a linear classifier.

Params (defaults): ``channels`` (16, doubled in the second block), ``dropout`` (0.25), and
the training loop's keys (see :class:`hpo.training.TrainConfig`).
"""

from __future__ import annotations

import functools

import optuna
import torch
from torch import nn

from hpo.context import TrialContext
from hpo.objectives import float_param, int_param, training_accepts
from hpo.training import (
    ClassificationData,
    load_sklearn_dataset,
    make_classification_data,
    seed_everything,
    train,
)

__all__ = ["ACCEPTS", "SmallCNN", "load_data", "objective"]

#: The params it reads (the training loop's and its own) and the metrics it reports.
ACCEPTS = training_accepts("channels", "dropout")

DATA_SEED = 0


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int = 10, *, channels: int = 16, dropout: float = 0.25) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, kernel_size=3, padding=1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * c * 16, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@functools.lru_cache(maxsize=1)
def load_data() -> ClassificationData:
    """Digits as 1x8x8 images in [0, 1]; loaded once per process."""
    x, y = load_sklearn_dataset("digits")
    images = (x / 16.0).reshape(-1, 1, 8, 8)
    return make_classification_data(
        images, y, val_fraction=0.2, test_fraction=0.2, seed=DATA_SEED, standardize=False
    )


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float | tuple[float, ...]:
    params = ctx.params
    data = load_data()
    seed_everything(ctx.seed)
    model = SmallCNN(
        data.n_classes,
        channels=int_param(params, "channels", 16),
        dropout=float_param(params, "dropout", 0.25, low=0.0, high=1.0),
    )
    return train(trial, ctx, model, data).value
