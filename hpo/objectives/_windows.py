"""Windows of multichannel time series in an on-disk, memory-mapped dataset.

:func:`rhythm_windows` generates the ``sequence`` objective's data once into a cache
directory (``.npy`` files written chunk by chunk, so generating never holds the whole set
in memory either) and returns train/val/test :class:`MemmapWindows` datasets that read
their windows from the files through ``np.load(mmap_mode="r")``: only the pages a batch
touches are read, and ``DataLoader`` workers share the operating system's page cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "MemmapWindows",
    "default_cache_dir",
    "rhythm_prototypes",
    "rhythm_samples",
    "rhythm_windows",
]

#: Samples generated per chunk: 4 MiB per float64 array at 8 x 64, a few arrays at a time.
_CHUNK = 1024
_SPLITS = (("train", 0.6), ("val", 0.2), ("test", 0.2))


def rhythm_prototypes(
    rng: np.random.Generator, n_classes: int, n_channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every class's rhythm: cycles per window, phase and strength of every channel."""
    freq = rng.uniform(1.0, 6.0, size=(n_classes, n_channels))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_classes, n_channels))
    strength = rng.uniform(0.3, 1.0, size=(n_classes, n_channels))
    return freq, phase, strength


def rhythm_samples(
    rng: np.random.Generator,
    prototypes: tuple[np.ndarray, np.ndarray, np.ndarray],
    y: np.ndarray,
    seq_len: int,
    noise: float,
) -> np.ndarray:
    """``(len(y), n_channels, seq_len)`` float64 windows of the classes ``y``."""
    freq, phase, strength = prototypes
    n_samples, n_channels = len(y), freq.shape[1]
    t = np.linspace(0.0, 1.0, seq_len, endpoint=False)
    f = freq[y] * (1 + 0.05 * rng.standard_normal((n_samples, n_channels)))
    shift = rng.uniform(0.0, 1.0, size=(n_samples, 1, 1))
    gain = rng.uniform(0.6, 1.4, size=(n_samples, 1, 1))
    # A slow swell and fade, like a muscle activating: 0.5-1.5 cycles per window.
    swell_rate = rng.uniform(0.5, 1.5, size=(n_samples, 1, 1))
    swell_phase = rng.uniform(size=(n_samples, 1, 1))
    envelope = 1 + 0.5 * np.sin(2 * np.pi * (swell_rate * t + swell_phase))
    angle = 2 * np.pi * f[..., None] * (t + shift) + phase[y][..., None]
    x = gain * envelope * strength[y][..., None] * np.sin(angle)
    x += noise * rng.standard_normal(x.shape)
    return x


def default_cache_dir() -> Path:
    """``$HPO_CACHE_DIR``, else ``~/.cache/hpo``."""
    return Path(os.environ.get("HPO_CACHE_DIR") or Path.home() / ".cache" / "hpo")


class MemmapWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(window, label)`` pairs from ``x.npy`` (n, channels, time) and ``y.npy`` (n,).

    The files are opened lazily, in the process that reads them, so the dataset pickles
    to ``DataLoader`` workers as two paths. Windows are standardized per channel with the
    training split's statistics as they are read.
    """

    def __init__(self, directory: Path, split: str, mean: np.ndarray, std: np.ndarray) -> None:
        self.x_path, self.y_path = directory / f"x_{split}.npy", directory / f"y_{split}.npy"
        self.mean = mean.astype(np.float32)[:, None]
        self.scale = (1 / std).astype(np.float32)[:, None]
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self.n = int(np.load(self.y_path, mmap_mode="r").shape[0])

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._x is None or self._y is None:
            self._x = np.load(self.x_path, mmap_mode="r")
            self._y = np.load(self.y_path, mmap_mode="r")
        return self._x, self._y

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch's windows in one read, sorted for locality (the DataLoader's fast path)."""
        x_all, y_all = self._arrays()
        order = np.argsort(indices)
        idx = np.asarray(indices)[order]
        x = (np.asarray(x_all[idx]) - self.mean) * self.scale
        y = np.asarray(y_all[idx])
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        xt, yt = torch.from_numpy(x[back]), torch.from_numpy(y[back])
        return list(zip(xt, yt, strict=True))

    def __getstate__(self) -> dict[str, Any]:
        # Workers reopen the files: a memory map does not pickle.
        return {**self.__dict__, "_x": None, "_y": None}


def rhythm_windows(
    cache_dir: Path,
    *,
    n_samples: int,
    n_channels: int,
    seq_len: int,
    n_classes: int,
    noise: float,
    seed: int,
) -> dict[str, MemmapWindows]:
    """Train/val/test windows (60/20/20) on disk, generated on the first call.

    Deterministic in its arguments; concurrent callers (several workers) may each generate,
    and the first to finish wins the rename, so a reader never sees a half-written set.
    """
    key = f"rhythm-n{n_samples}-c{n_channels}-t{seq_len}-k{n_classes}-noise{noise:g}-s{seed}"
    directory = Path(cache_dir) / key
    if not (directory / "stats.json").exists():
        _generate(directory, n_samples, n_channels, seq_len, n_classes, noise, seed)
    stats = json.loads((directory / "stats.json").read_text())
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    return {name: MemmapWindows(directory, name, mean, std) for name, _ in _SPLITS}


def _generate(
    directory: Path,
    n_samples: int,
    n_channels: int,
    seq_len: int,
    n_classes: int,
    noise: float,
    seed: int,
) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        prototypes = rhythm_prototypes(np.random.default_rng(seed), n_classes, n_channels)
        sizes = [round(n_samples * f) for _, f in _SPLITS[:-1]]
        sizes.append(n_samples - sum(sizes))
        chunk_index = 0
        total = np.zeros(n_channels)
        total_sq = np.zeros(n_channels)
        for (name, _), size in zip(_SPLITS, sizes, strict=True):
            x_file = np.lib.format.open_memmap(
                tmp / f"x_{name}.npy",
                mode="w+",
                dtype=np.float32,
                shape=(size, n_channels, seq_len),
            )
            y_file = np.lib.format.open_memmap(
                tmp / f"y_{name}.npy", mode="w+", dtype=np.int64, shape=(size,)
            )
            for start in range(0, size, _CHUNK):
                n = min(_CHUNK, size - start)
                rng = np.random.default_rng([seed, chunk_index])
                chunk_index += 1
                y = rng.integers(0, n_classes, size=n)
                x = rhythm_samples(rng, prototypes, y, seq_len, noise)
                x_file[start : start + n] = x
                y_file[start : start + n] = y
                if name == "train":
                    total += x.sum(axis=(0, 2))
                    total_sq += (x * x).sum(axis=(0, 2))
            x_file.flush()
            y_file.flush()
            del x_file, y_file
        count = sizes[0] * seq_len
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
        stats = {"mean": mean.tolist(), "std": std.tolist(), "sizes": sizes}
        (tmp / "stats.json").write_text(json.dumps(stats))
        try:
            tmp.rename(directory)
        except OSError:  # another process finished first: use its files
            if not (directory / "stats.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
