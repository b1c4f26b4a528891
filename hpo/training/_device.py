"""Device choice, seeding, mixed precision and where the data sit while the loop reads them."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpo.training._config import TrainConfig
from hpo.training._data import ClassificationData


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if present, else MPS if present, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested, but CUDA is not available.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r} was requested, but MPS is not available.")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global generators.

    Objectives call this before building their model so that initialization is
    reproducible; :func:`train` calls it again for dropout and friends.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclass
class Placed:
    """The data where the loop reads it: on the device, or pinned on the host for CUDA."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None
    device: torch.device
    # Pinned buffers the shuffled training set is gathered into when it stays on the host.
    shuffle_buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def shuffled_train(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # The permutation comes from a CPU generator, so the order is the same on every device.
        x, y = self.train
        perm = torch.randperm(len(y), generator=generator)
        if self.shuffle_buffers is None:
            perm = perm.to(x.device)
            return x.index_select(0, perm), y.index_select(0, perm)
        # Safe to overwrite: the previous epoch ended with a sync, so its copies are done.
        bx, by = self.shuffle_buffers
        return torch.index_select(x, 0, perm, out=bx), torch.index_select(y, 0, perm, out=by)


def place(data: ClassificationData, device: torch.device) -> Placed:
    splits = [(data.x_train, data.y_train), (data.x_val, data.y_val)]
    test = (
        (data.x_test, data.y_test) if data.x_test is not None and data.y_test is not None else None
    )
    resident = device.type != "cuda"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Twice the training set: each epoch gathers a shuffled copy of it.
        resident = data.nbytes + data.x_train.nbytes + data.y_train.nbytes < free // 2
    if resident:
        # One copy per trial; afterwards batches are views, never host-to-device copies.
        moved = [(x.to(device), y.to(device)) for x, y in splits]
        test_moved = (test[0].to(device), test[1].to(device)) if test else None
        return Placed(moved[0], moved[1], test_moved, device)
    pinned = [(x.pin_memory(), y.pin_memory()) for x, y in splits]
    test_pinned = (test[0].pin_memory(), test[1].pin_memory()) if test else None
    buffers = (
        torch.empty_like(data.x_train).pin_memory(),
        torch.empty_like(data.y_train).pin_memory(),
    )
    return Placed(pinned[0], pinned[1], test_pinned, device, buffers)


def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN pick the fastest kernels (not bitwise reproducible).
        torch.backends.cudnn.benchmark = True
        # TF32 for whatever runs in fp32 (amp=False). torch >= 2.9 has a new flag and
        # refuses a mix of new and legacy settings, so use the new one where it exists.
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "tf32"
        else:
            matmul.allow_tf32 = True


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    enabled = device.type == "cuda" if config.amp == "auto" else config.amp
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    # nullcontext rather than autocast(enabled=False): it costs nothing per batch.
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
