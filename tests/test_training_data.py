"""The loop over the user's own data: Datasets, DataLoaders, dict batches and the step hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import FixedTrial
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from hpo.training import LoaderData, TrainConfig, TrainResult, seed_everything, split_batch, train
from tests.test_training import (
    RESUME_PARAMS,
    _Crash,
    ctx_for,
    make_data,
    make_model,
    without_time,
)


def loader_data(**kwargs: Any) -> LoaderData:
    data = make_data()
    return LoaderData(
        train=TensorDataset(data.x_train, data.y_train),
        val=TensorDataset(data.x_val, data.y_val),
        **kwargs,
    )


def fit(data: Any, params: dict[str, Any], seed: int = 0, **kwargs: Any) -> TrainResult:
    ctx = ctx_for(params, "val_loss", "minimize", seed=seed, **kwargs.pop("ctx", {}))
    model = kwargs.pop("model", None) or make_model(seed)
    return train(FixedTrial({}), ctx, model, data, TrainConfig.from_params(params), **kwargs)


def assert_same_history(a: TrainResult, b: TrainResult) -> None:
    for row_a, row_b in zip(without_time(a.history), without_time(b.history), strict=True):
        assert row_a == pytest.approx(row_b, rel=1e-6, abs=1e-9)


PARAMS = {"epochs": 3, "batch_size": 32, "lr": 0.02, "grad_accum": 2, "warmup_epochs": 1}


def test_in_memory_and_dataloader_paths_agree() -> None:
    in_memory = fit(make_data(), PARAMS)
    datasets = fit(loader_data(), PARAMS)
    assert_same_history(in_memory, datasets)
    assert datasets.confusion_matrix == in_memory.confusion_matrix


class DictDataset(Dataset[dict[str, torch.Tensor]]):
    """Samples as dicts, the way many projects' datasets return them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.x[i], "labels": self.y[i], "id": torch.tensor(i)}


def dict_step(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    return model(batch["features"]), batch["labels"]


def test_dict_batches_through_the_step_hook_equal_tuple_batches() -> None:
    data = make_data()
    dicts = LoaderData(
        train=DictDataset(data.x_train, data.y_train), val=DictDataset(data.x_val, data.y_val)
    )
    assert_same_history(fit(dicts, PARAMS, step=dict_step), fit(make_data(), PARAMS))


def test_dict_batches_without_a_step_name_the_fix() -> None:
    data = make_data()
    dicts = LoaderData(
        train=DictDataset(data.x_train, data.y_train), val=DictDataset(data.x_val, data.y_val)
    )
    with pytest.raises(TypeError, match="pass `step="):
        fit(dicts, PARAMS)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.net(x * scale[:, None])


def test_several_inputs_and_a_users_collate_and_dataloader() -> None:
    data = make_data()

    def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        x = torch.stack([s[0] for s in samples])
        return x, torch.ones(len(samples)), torch.stack([s[1] for s in samples])

    val = DataLoader(
        TensorDataset(data.x_val, data.y_val),
        batch_size=50,
        collate_fn=collate,
        generator=torch.Generator(),  # else it draws worker seeds from the global generator
    )
    two = LoaderData(train=TensorDataset(data.x_train, data.y_train), val=val, collate_fn=collate)
    result = fit(two, PARAMS, model=TwoInputs())
    assert_same_history(result, fit(make_data(), PARAMS))


class Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y, strict=True))


def test_iterable_dataset_trains_and_a_schedule_without_length_is_refused() -> None:
    data = make_data()
    stream = LoaderData(
        train=Stream(data.x_train, data.y_train), val=TensorDataset(data.x_val, data.y_val)
    )
    result = fit(stream, {"epochs": 2, "batch_size": 32})
    assert result.epochs_run == 2
    with pytest.raises(ValueError, match="give your IterableDataset a __len__"):
        fit(stream, {"epochs": 2, "warmup_epochs": 1})


class _CrashOnCall(nn.Module):
    def __init__(self, inner: nn.Module, crash_at_call: int) -> None:
        super().__init__()
        self.inner, self.crash_at_call, self.calls = inner, crash_at_call, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise _Crash
        return self.inner(x)


@pytest.mark.parametrize("users_loader", [False, True])
def test_resume_with_workers_equals_uninterrupted(tmp_path: Path, users_loader: bool) -> None:
    """Map-style data, 2 workers: the shuffle order is replayed from the checkpoint."""
    seed = 7
    if users_loader:
        d = make_data()
        gen = torch.Generator().manual_seed(99)
        train_loader = DataLoader(
            TensorDataset(d.x_train, d.y_train),
            batch_size=32,
            shuffle=True,
            generator=gen,
            num_workers=2,
        )
        data: LoaderData = LoaderData(train=train_loader, val=TensorDataset(d.x_val, d.y_val))
    else:
        data = loader_data(num_workers=2)
    uninterrupted = fit(data, RESUME_PARAMS, seed=seed)
    ckpt = {"checkpoint_dir": tmp_path}
    with pytest.raises(_Crash):  # 8 train + 1 val forward passes per epoch: inside epoch 3
        fit(data, RESUME_PARAMS, seed=seed, ctx=ckpt, model=_CrashOnCall(make_model(seed), 30))
    seed_everything(12345)  # a new process: other RNG state, and other generator states
    if users_loader:
        gen.manual_seed(4321)
    resumed = fit(
        data, RESUME_PARAMS, seed=seed, ctx=ckpt, model=_CrashOnCall(make_model(seed), -1)
    )
    assert without_time(resumed.history) == without_time(uninterrupted.history)


def test_split_batch_cuts_nested_batches() -> None:
    batch = {"x": torch.arange(10), "pair": (torch.zeros(10, 2), "tag"), "n": 3}
    parts = split_batch(batch, 4)
    assert [len(p["x"]) for p in parts] == [4, 4, 2]
    assert parts[2]["pair"][0].shape == (2, 2) and parts[2]["pair"][1] == "tag"
    assert all(p["n"] == 3 for p in parts)
