"""Small in-memory classification datasets: tensors, stratified splits, built-in loaders.

The training loop batches by slicing pre-made tensors (no ``DataLoader``), so a dataset here
is nothing more than a few tensors with validated shapes. Loaders return host tensors; the
loop decides where they live.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "SKLEARN_DATASETS",
    "ClassificationData",
    "load_sklearn_dataset",
    "make_classification_data",
    "stratified_split",
]

#: Tabular datasets that ship inside scikit-learn (read from its package, never downloaded).
SKLEARN_DATASETS: tuple[str, ...] = ("digits", "wine", "breast_cancer", "iris")


@dataclass(frozen=True)
class ClassificationData:
    """Train/validation(/test) tensors of a classification task.

    ``x_*`` are float tensors whose first dimension indexes samples; ``y_*`` hold int64
    class labels in ``[0, n_classes)``. The training loop never modifies them in place, so
    one instance can be cached and shared by every trial of a worker process.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"`n_classes` must be >= 2, but got {self.n_classes=}.")
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("`x_test` and `y_test` must be given together.")
        for name, x, y in self._splits():
            if len(x) != len(y):
                raise ValueError(f"x_{name} and y_{name} differ in length: {len(x)} != {len(y)}.")
            if len(y) == 0:
                raise ValueError(f"The {name} split is empty.")
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(
                    f"y_{name} must be a 1-d int64 tensor, but got {y.dtype} {tuple(y.shape)}."
                )
            # Checked once here so that the loop's bincount never sees a bad label.
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.n_classes:
                raise ValueError(
                    f"y_{name} holds labels in [{low}, {high}], outside "
                    f"[0, {self.n_classes}) ({self.n_classes=})."
                )
            if x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(
                    f"x_{name} has sample shape {tuple(x.shape[1:])}, but x_train has "
                    f"{tuple(self.x_train.shape[1:])}."
                )

    def _splits(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        splits = [("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val)]
        if self.x_test is not None and self.y_test is not None:
            splits.append(("test", self.x_test, self.y_test))
        return splits

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes + y.nbytes for _, x, y in self._splits())


def stratified_split(y: np.ndarray, fractions: Sequence[float], *, seed: int) -> list[np.ndarray]:
    """Split sample indices into parts of the given fractions, preserving class proportions.

    Each class is shuffled and cut separately (rounding per class), so every part gets
    about ``fraction`` of every class. The result depends only on ``y``, ``fractions`` and
    ``seed``: objectives pass a fixed data seed, not the trial's, so all trials compare on
    the same split.
    """
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"`fractions` must be positive and sum to 1, but got {fractions=}.")
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fractions)[:-1]
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        cuts = np.round(bounds * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.append(chunk)
    # Sorted so the split does not leak the class order into the training order.
    return [np.sort(np.concatenate(p)) for p in parts]


@functools.lru_cache(maxsize=8)
def load_sklearn_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels (int64) of a dataset bundled with scikit-learn.

    Cached per process: a worker runs many trials on the same data.
    """
    from sklearn import datasets  # only the bundled loaders; imported lazily, it is slow

    loaders = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {list(SKLEARN_DATASETS)}.")
    x, y = loaders[name](return_X_y=True)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def make_classification_data(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
) -> ClassificationData:
    """Stratified train/val/test split, standardized with training statistics only.

    ``standardize`` normalizes every feature (all axes but the sample axis) to zero mean and
    unit variance on the training split; constant features are left centred, not divided
    by zero. ``test_fraction=0`` gives no test split.
    """
    fractions = [1 - val_fraction - test_fraction, val_fraction]
    if test_fraction > 0:
        fractions.append(test_fraction)
    parts = stratified_split(y, fractions, seed=seed)
    x = np.asarray(x, dtype=np.float32)
    if standardize:
        train_x = x[parts[0]]
        mean = train_x.mean(axis=0)
        std = train_x.std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0).astype(np.float32)

    def tensors(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.int64)),
        )

    x_train, y_train = tensors(parts[0])
    x_val, y_val = tensors(parts[1])
    x_test, y_test = tensors(parts[2]) if test_fraction > 0 else (None, None)
    return ClassificationData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        n_classes=int(y.max()) + 1,
        x_test=x_test,
        y_test=y_test,
    )
