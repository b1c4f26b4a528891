"""Built-in ``sequence`` objective: classify multichannel time series (EMG / landmark style).

The data are GENERATED, deterministically from a fixed data seed, once into an on-disk,
memory-mapped dataset in a cache directory (``cache_dir``, default ``$HPO_CACHE_DIR`` or
``~/.cache/hpo``; see :mod:`hpo.objectives._windows`), and read through a ``DataLoader``
with ``num_workers`` (2) persistent workers, so ``n_samples`` may exceed memory.
(:func:`make_rhythm_data` makes the same kind of data in memory.) Every class has its own
rhythm, a frequency, phase and strength per channel. A sample of class ``k`` is that rhythm
with per-sample frequency jitter, a random time shift (which moves all channels together,
so only their relative timing and frequencies carry the class), a random gain, a slow
amplitude envelope (like muscle activation) and Gaussian noise. Channels are standardized
with training statistics.

Two architectures (``arch``): ``tcn``, residual blocks of dilated ``Conv1d`` + batch norm
+ ReLU with dilations 1, 2, 4, ...; ``transformer``, a small pre-norm Transformer encoder
over time steps with learned positions. Both average over time before a linear classifier.

Params (defaults): ``arch`` ("tcn"), ``hidden_size`` (32), ``n_layers`` (3 tcn, 2 transformer),
``kernel_size`` (5, tcn), ``n_heads`` (4, transformer), ``dropout`` (0.1); data:
``n_channels`` (8), ``seq_len`` (64), ``n_classes`` (5), ``n_samples`` (1000), ``noise``
(1.0), ``cache_dir``, ``num_workers`` (2); and the training loop's keys (see
:class:`hpo.training.TrainConfig`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn

from hpo.context import TrialContext
from hpo.objectives import choice_param, float_param, int_param, training_accepts
from hpo.objectives._windows import (
    default_cache_dir,
    rhythm_prototypes,
    rhythm_samples,
    rhythm_windows,
)
from hpo.training import (
    ClassificationData,
    LoaderData,
    make_classification_data,
    seed_everything,
    train,
)

__all__ = ["ACCEPTS", "TCN", "SequenceTransformer", "make_rhythm_data", "objective"]

ARCHS: tuple[str, ...] = ("tcn", "transformer")
DATA_SEED = 0
#: The params it reads (the training loop's and its own) and the metrics it reports.
ACCEPTS = training_accepts(
    *("arch", "hidden_size", "n_layers", "kernel_size", "n_heads", "dropout"),
    *("n_channels", "seq_len", "n_classes", "n_samples", "noise"),
    *("cache_dir", "num_workers"),  # where its windows are cached; DataLoader workers
)


@functools.lru_cache(maxsize=8)
def make_rhythm_data(
    n_samples: int = 1000,
    n_channels: int = 8,
    seq_len: int = 64,
    n_classes: int = 5,
    noise: float = 1.0,
    seed: int = DATA_SEED,
) -> ClassificationData:
    """Generated ``(n, n_channels, seq_len)`` series with class-dependent rhythms.

    Cached per argument tuple: a worker process generates each variant once.
    """
    rng = np.random.default_rng(seed)
    freq, phase, strength = rhythm_prototypes(rng, n_classes, n_channels)

    y = rng.permutation(np.arange(n_samples) % n_classes)
    x = rhythm_samples(rng, (freq, phase, strength), y, seq_len, noise)

    data = make_classification_data(
        x.astype(np.float32), y, val_fraction=0.2, test_fraction=0.2, seed=seed, standardize=False
    )
    # Per-channel standardization with training statistics (over samples and time).
    mean = data.x_train.mean(dim=(0, 2), keepdim=True)
    std = data.x_train.std(dim=(0, 2), keepdim=True)

    def norm(v: torch.Tensor) -> torch.Tensor:
        return ((v - mean) / std).contiguous()

    return ClassificationData(
        x_train=norm(data.x_train),
        y_train=data.y_train,
        x_val=norm(data.x_val),
        y_val=data.y_val,
        n_classes=n_classes,
        x_test=norm(data.x_test) if data.x_test is not None else None,
        y_test=data.y_test,
    )


class TemporalBlock(nn.Module):
    """Dilated conv, batch norm, ReLU, dropout, with a residual connection."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding="same")
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.act(self.norm(self.conv(x))))


class TCN(nn.Module):
    """Input ``(batch, channels, time)``; receptive field grows as 2**n_layers."""

    def __init__(
        self,
        n_channels: int,
        n_classes: int,
        *,
        hidden_size: int = 32,
        n_layers: int = 3,
        kernel_size: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv1d(n_channels, hidden_size, kernel_size=1)
        self.blocks = nn.Sequential(
            *(TemporalBlock(hidden_size, kernel_size, 2**i, dropout) for i in range(n_layers))
        )
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=2))


class SequenceTransformer(nn.Module):
    """Input ``(batch, channels, time)``; attends over time steps."""

    def __init__(
        self,
        n_channels: int,
        n_classes: int,
        seq_len: int,
        *,
        hidden_size: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(
                f"`hidden_size` must be divisible by `n_heads`, but got "
                f"hidden_size={hidden_size} and n_heads={n_heads}."
            )
        self.proj = nn.Linear(n_channels, hidden_size)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, hidden_size))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            n_heads,
            dim_feedforward=2 * hidden_size,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks, which fixed-length series lack.
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.proj(x.transpose(1, 2)) + self.pos)
        return self.head(self.norm(h.mean(dim=1)))


def objective(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float | tuple[float, ...]:
    params = ctx.params
    n_channels = int_param(params, "n_channels", 8)
    seq_len = int_param(params, "seq_len", 64, minimum=2)
    n_classes = int_param(params, "n_classes", 5, minimum=2)
    splits = rhythm_windows(
        Path(params.get("cache_dir") or default_cache_dir()),
        n_samples=int_param(params, "n_samples", 1000, minimum=10),
        n_channels=n_channels,
        seq_len=seq_len,
        n_classes=n_classes,
        noise=float_param(params, "noise", 1.0, low=0.0, high=float("inf")),
        seed=DATA_SEED,
    )
    num_workers = int_param(params, "num_workers", 2, minimum=0)
    data = LoaderData(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # one start per trial, not per epoch
    )
    arch = choice_param(params, "arch", "tcn", ARCHS)
    hidden_size = int_param(params, "hidden_size", 32)
    dropout = float_param(params, "dropout", 0.1, low=0.0, high=1.0)
    # Both architectures' own keys are read (and checked) whichever one a trial builds, so a
    # search over arch with kernel_size and n_heads in it is not refused as "never read".
    kernel_size = int_param(params, "kernel_size", 5)
    n_heads = int_param(params, "n_heads", 4)
    seed_everything(ctx.seed)
    model: nn.Module
    if arch == "tcn":
        model = TCN(
            n_channels,
            n_classes,
            hidden_size=hidden_size,
            n_layers=int_param(params, "n_layers", 3),
            kernel_size=kernel_size,
            dropout=dropout,
        )
    else:
        model = SequenceTransformer(
            n_channels,
            n_classes,
            seq_len,
            hidden_size=hidden_size,
            n_layers=int_param(params, "n_layers", 2),
            n_heads=n_heads,
            dropout=dropout,
        )
    return train(trial, ctx, model, data).value
