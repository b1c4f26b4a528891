"""Where the loop's batches come from: in-memory tensors (the fast path) or DataLoaders.

:class:`LoaderData` holds the user's datasets (map-style or iterable) or their own
``DataLoader``s. A batch may be a tensor, a tuple/list or a dict of tensors (nested);
:func:`to_device` moves every tensor in it with ``non_blocking`` and :func:`split_batch`
cuts it into micro-batches along the first dimension.

Reproducibility. For a map-style ``Dataset``, hpo builds the training ``DataLoader`` with
a ``RandomSampler`` driven by a generator seeded with the trial's seed and saved in every
checkpoint, so a resumed trial sees the same order as an uninterrupted one; the workers'
seeds come from a second generator re-seeded per epoch, so augmentation in workers is
reproducible too (with ``persistent_workers`` the workers keep the seeds of the epoch they
started in, so a resumed run's augmentation differs; the order does not). For a
``DataLoader`` you build yourself, hpo seeds (with the trial's seed), saves and restores its
``generator`` and its sampler's generator, and ``train`` seeds and checkpoints torch's
global generator, which a loader without a generator draws from: the order is
reproducible, but state your dataset or ``worker_init_fn`` keeps elsewhere is not, and a
loader without a generator draws its workers' seeds from the global generator, so its
results differ from the in-memory path's (still reproducible per seed). An ``IterableDataset`` is
read in its own order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from hpo.training._device import Placed

__all__ = ["BatchSource", "LoaderData", "split_batch", "to_device"]

Batch = Any


@dataclass(frozen=True)
class LoaderData:
    """Train/validation(/test) data as datasets or ``DataLoader``s.

    A ``Dataset`` is wrapped in a ``DataLoader`` of ``TrainConfig.batch_size`` (training,
    shuffled) or ``eval_batch_size`` (evaluation) with ``collate_fn``, ``num_workers``,
    ``pin_memory`` (``None``: on CUDA), ``persistent_workers`` and ``prefetch_factor``.
    A ``DataLoader`` is used as it is: its own batch size, sampler and workers.
    """

    train: Dataset[Any] | DataLoader[Any]
    val: Dataset[Any] | DataLoader[Any]
    test: Dataset[Any] | DataLoader[Any] | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    num_workers: int = 0
    pin_memory: bool | None = None
    persistent_workers: bool = False
    prefetch_factor: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, but got {self.num_workers=}.")
        if self.persistent_workers and self.num_workers == 0:
            raise ValueError("`persistent_workers` needs `num_workers` >= 1.")

    @property
    def has_test(self) -> bool:
        return self.test is not None


class _Permutation(Sampler[int]):
    """One ``randperm`` per epoch from ``generator``: the in-memory path's order, exactly.

    (torch's ``RandomSampler`` draws a second, empty permutation per epoch, which would
    make the two paths' orders part ways from the second epoch on.)
    """

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor moved to ``device`` (asynchronously from pinned memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_len(batch: Batch) -> int:
    """The number of samples: the first dimension of the first tensor found."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, Iterable) and not isinstance(values, str | bytes):
        for v in values:
            n = batch_len(v)
            if n >= 0:
                return n
    return -1


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """``batch`` cut into micro-batches of ``size`` samples (the last may be smaller).

    Tensors whose first dimension is the batch's are cut; anything else is shared by all.
    """
    n = batch_len(batch)
    parts = math.ceil(n / size)

    def cut(value: Any) -> list[Any]:
        if isinstance(value, torch.Tensor) and value.ndim and len(value) == n:
            return list(value.split(size))
        if isinstance(value, Mapping):
            cols = {k: cut(v) for k, v in value.items()}
            return [{k: c[i] for k, c in cols.items()} for i in range(parts)]
        if isinstance(value, tuple | list):
            cols_seq = [cut(v) for v in value]
            return [type(value)(c[i] for c in cols_seq) for i in range(parts)]
        return [value] * parts

    return cut(batch)


def _length(loader: DataLoader[Any]) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an IterableDataset without __len__
        return None


class BatchSource:
    """The batches of one trial, and the generators a checkpoint must save to replay them."""

    def __init__(
        self,
        data: Placed | LoaderData,
        *,
        seed: int,
        batch_size: int,
        eval_batch_size: int,
        device: torch.device,
    ) -> None:
        self.seed, self.batch_size, self.eval_batch_size = seed, batch_size, eval_batch_size
        self.device = device
        self.shuffle = torch.Generator().manual_seed(seed)
        self.generators: list[torch.Generator] = [self.shuffle]
        self.placed: Placed | None = None
        if isinstance(data, Placed):
            self.placed = data
            # Batches of resident data are views on the device; host data are pinned.
            self.on_device = data.train[0].device.type == device.type
            self.n_batches: int | None = math.ceil(len(data.train[1]) / batch_size)
            return
        self.on_device = False
        self._workers = torch.Generator()
        pin = data.pin_memory if data.pin_memory is not None else device.type == "cuda"
        opts: dict[str, Any] = {
            "collate_fn": data.collate_fn,
            "num_workers": data.num_workers,
            "pin_memory": pin,
            "persistent_workers": data.persistent_workers,
        }
        if data.num_workers and data.prefetch_factor is not None:
            opts["prefetch_factor"] = data.prefetch_factor
        self.train_loader = self._loader(data.train, batch_size, opts, train=True)
        self.val_loader = self._loader(data.val, eval_batch_size, opts, train=False)
        self.test_loader = (
            self._loader(data.test, eval_batch_size, opts, train=False)
            if data.test is not None
            else None
        )
        self.n_batches = _length(self.train_loader)

    def _loader(
        self, data: Any, batch_size: int, opts: dict[str, Any], *, train: bool
    ) -> DataLoader[Any]:
        if isinstance(data, DataLoader):
            if train:  # the user's loader: replay its shuffle from its own generators
                sampler_gen = getattr(data.sampler, "generator", None)
                for gen in (data.generator, sampler_gen):
                    if isinstance(gen, torch.Generator) and gen not in self.generators:
                        gen.manual_seed(self.seed + len(self.generators))
                        self.generators.append(gen)
            return data
        # A loader draws its workers' base seed from its generator, or else from torch's
        # global one, which would shift dropout: every loader built here gets its own.
        if not train:
            return DataLoader(data, batch_size=batch_size, generator=torch.Generator(), **opts)
        if isinstance(data, IterableDataset):
            return DataLoader(data, batch_size=batch_size, generator=self._workers, **opts)
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=_Permutation(len(data), self.shuffle),
            generator=self._workers,
            **opts,
        )

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """One epoch's training batches, in this trial's order for this epoch."""
        if self.placed is not None:
            x, y = self.placed.shuffled_train(self.shuffle)
            bs = self.batch_size
            return ((x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs))
        # Worker seeds per epoch, independent of how many epochs this process has run.
        self._workers.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return iter(self.train_loader)

    def val_batches(self) -> Iterable[Batch]:
        """Validation batches, in a fixed order."""
        if self.placed is not None:
            return self._slices(*self.placed.val)
        return self.val_loader

    def test_batches(self) -> Iterable[Batch] | None:
        """Test batches, in a fixed order; ``None`` without a test split."""
        if self.placed is not None:
            return self._slices(*self.placed.test) if self.placed.test is not None else None
        return self.test_loader

    def _slices(self, x: torch.Tensor, y: torch.Tensor) -> list[Batch]:
        bs = self.eval_batch_size
        return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]
