"""Tasks, losses, metrics, schedules and the out-of-memory fallback of the training loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import FixedTrial
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import TensorDataset

from hpo.training import (
    LoaderData,
    MetricAccumulator,
    TrainConfig,
    learning_rate,
    make_loss,
    param_groups,
    seed_everything,
    train,
)
from hpo.training._checkpoints import LoopState
from hpo.training._optim import make_optimizer
from tests.test_training import ctx_for, make_data, make_model, without_time

CPU = torch.device("cpu")


def accumulate(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    acc = MetricAccumulator(task, CPU)
    for o, t in zip(outputs.split(7), targets.split(7), strict=True):  # several batches
        acc.update(o, t)
    return dict(zip(acc.names, acc.values().tolist(), strict=True))


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regression_metrics_match_sklearn(n_outputs: int) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, n_outputs, generator=g) * 3 + 1
    pred = y + torch.randn(50, n_outputs, generator=g)
    got = accumulate("regression", pred.squeeze(1) if n_outputs == 1 else pred, y.squeeze(1))
    if n_outputs > 1:
        got = accumulate("regression", pred, y)
    yn, pn = y.numpy().astype(np.float64), pred.numpy().astype(np.float64)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(yn, pn), rel=1e-6)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(yn, pn), rel=1e-6)
    assert got["r2"] == pytest.approx(skm.r2_score(yn, pn), rel=1e-6)


def test_multilabel_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(60, 4, generator=g) > 0.6).float()
    y[:, 3] = 0  # a label that never occurs: F1 0 by sklearn's zero_division=0
    logits = torch.randn(60, 4, generator=g) + 2 * (y - 0.5)
    got = accumulate("multilabel", logits, y)
    yn, pn = y.numpy().astype(int), (logits > 0).numpy().astype(int)
    kw: dict[str, Any] = {"zero_division": 0}
    per_label = skm.f1_score(yn, pn, average=None, **kw)
    for i, f1 in enumerate(per_label):
        assert got[f"f1_{i}"] == pytest.approx(f1)
    assert got["f1"] == pytest.approx(skm.f1_score(yn, pn, average="macro", **kw))
    assert got["precision"] == pytest.approx(skm.precision_score(yn, pn, average="macro", **kw))
    assert got["recall"] == pytest.approx(skm.recall_score(yn, pn, average="macro", **kw))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(yn, pn))


def test_binary_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(40, generator=g) > 0.5).float()
    logits = torch.randn(40, 1, generator=g) + (y[:, None] - 0.5)
    got = accumulate("binary", logits, y)
    yn, pn = y.numpy().astype(int), (logits[:, 0] > 0).numpy().astype(int)
    assert got["f1"] == pytest.approx(skm.f1_score(yn, pn))
    assert got["precision"] == pytest.approx(skm.precision_score(yn, pn))
    assert got["recall"] == pytest.approx(skm.recall_score(yn, pn))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(yn, pn))


def test_named_losses_are_torchs() -> None:
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(10, 3, generator=g), torch.randint(0, 3, (10,), generator=g)
    config = TrainConfig(label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5])
    expected = F.cross_entropy(
        logits, labels, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1
    )
    assert make_loss(config, CPU, training=True)(logits, labels) == pytest.approx(float(expected))
    plain = F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 2.0, 0.5]))
    assert make_loss(config, CPU, training=False)(logits, labels) == pytest.approx(float(plain))
    out, y = torch.randn(10, 1, generator=g), torch.randn(10, generator=g)
    huber = make_loss(
        TrainConfig(task="regression", loss="huber", huber_delta=0.5), CPU, training=True
    )
    assert float(huber(out, y)) == pytest.approx(float(F.huber_loss(out[:, 0], y, delta=0.5)))


# -- regression and multi-label training end to end ---------------------------------------


def regression_data(n: int = 200) -> LoaderData:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 6, generator=g)
    y = x @ torch.randn(6, generator=g) + 0.1 * torch.randn(n, generator=g)
    cut = n * 3 // 4
    return LoaderData(train=TensorDataset(x[:cut], y[:cut]), val=TensorDataset(x[cut:], y[cut:]))


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_regression_trains_and_reports_r2_without_confusion_matrix(loss: str) -> None:
    params = {"task": "regression", "loss": loss, "epochs": 8, "lr": 0.01, "batch_size": 16}
    seed_everything(0)
    model = nn.Linear(6, 1)
    trial = FixedTrial({})
    result = train(trial, ctx_for(params, "val_r2", "maximize"), model, regression_data())
    assert result.value > 0.5
    assert result.confusion_matrix is None and "confusion_matrix" not in trial.user_attrs
    assert {"val_mse", "val_mae", "val_r2"} <= set(result.best_metrics)


def test_user_metric_is_accumulated_and_can_be_the_trials_metric() -> None:
    def max_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs.reshape(-1) - targets).abs().mean()

    params = {"task": "regression", "epochs": 3, "lr": 0.01}
    seed_everything(0)
    ctx = ctx_for(params, "val_abs_err", "minimize")
    result = train(
        FixedTrial({}), ctx, nn.Linear(6, 1), regression_data(), metrics={"abs_err": max_error}
    )
    # a batch mean weighted by batch size is the mean absolute error
    assert result.value == pytest.approx(result.best_metrics["val_mae"], rel=1e-5)
    with pytest.raises(ValueError, match="Unknown metric 'val_accuracy' for task 'regression'"):
        train(FixedTrial({}), ctx_for(params), nn.Linear(6, 1), regression_data())


def test_multilabel_trains_with_per_label_f1() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(160, 5, generator=g)
    y = (x[:, :3] > 0).float()
    data = LoaderData(train=TensorDataset(x[:120], y[:120]), val=TensorDataset(x[120:], y[120:]))
    params = {"task": "multilabel", "epochs": 15, "lr": 0.1}
    seed_everything(0)
    result = train(FixedTrial({}), ctx_for(params, "val_f1_2"), nn.Linear(5, 3), data)
    assert result.best_metrics["val_f1"] > 0.8
    assert result.value == result.best_metrics["val_f1_2"]


# -- optimizers and schedules against torch's ----------------------------------------------


def _torch_lrs(scheduler: Any, optimizer: torch.optim.Optimizer, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_warmup_is_torchs_linear_lr() -> None:
    config, spe = TrainConfig(lr=0.1, warmup_epochs=2), 5
    opt = _opt()
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 10, total_iters=9)
    expected = _torch_lrs(sched, opt, 30)
    assert [learning_rate(config, s, spe) for s in range(30)] == pytest.approx(expected)


@pytest.mark.parametrize("t_mult", [1, 2])
def test_cosine_warm_restarts_is_torchs(t_mult: int) -> None:
    config = TrainConfig(
        lr=0.1,
        scheduler="cosine_warm_restarts",
        restart_epochs=2,
        restart_mult=t_mult,
        min_lr=0.001,
    )
    spe, opt = 3, _opt()
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=6, T_mult=t_mult, eta_min=0.001
    )
    expected = _torch_lrs(sched, opt, 60)
    assert [learning_rate(config, s, spe) for s in range(60)] == pytest.approx(expected)


def test_one_cycle_is_torchs() -> None:
    config = TrainConfig(lr=0.1, epochs=5, scheduler="onecycle", onecycle_pct_start=0.25)
    spe, opt = 4, _opt()
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=20, pct_start=0.25, cycle_momentum=False
    )
    expected = _torch_lrs(sched, opt, 20)
    assert [learning_rate(config, s, spe) for s in range(20)] == pytest.approx(expected)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_plateau_is_torchs_reduce_on_plateau(direction: str) -> None:
    config = TrainConfig(lr=0.1, scheduler="plateau", plateau_factor=0.5, plateau_patience=1)
    values = [1.0, 0.9, 0.95, 0.93, 0.8, 0.85, 0.86, 0.9, 0.7, 0.7, 0.7, 0.75]
    if direction == "maximize":
        values = [-v for v in values]
    opt = _opt()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="min" if direction == "minimize" else "max",
        factor=0.5,
        patience=1,
        threshold=0,
    )
    state, ctx = LoopState(), ctx_for({}, "val_loss", direction)
    for epoch, value in enumerate(values):
        state.record({"val_loss": value, "epoch": epoch}, ctx, config)
        sched.step(value)
        assert learning_rate(config, 0, 1, state.lr_scale) == pytest.approx(
            opt.param_groups[0]["lr"]
        )


def test_optimizer_options_and_no_decay_on_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    sgd = make_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = make_optimizer(model, TrainConfig(optimizer="adamw", betas=[0.8, 0.95]))
    assert adamw.defaults["betas"] == (0.8, 0.95)
    decay, no_decay = param_groups(model, TrainConfig(no_decay_bias_norm=True, weight_decay=0.1))
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 6 and no_decay["weight_decay"] == 0.0


# -- out of memory: half the micro-batch, twice the accumulation ------------------------------


class _Limited(nn.Module):
    """Raises torch.OutOfMemoryError above ``limit`` samples per forward pass."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.ooms, self.largest = inner, limit, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) > self.limit:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        if self.training:
            self.largest = max(self.largest, len(x))
        return self.inner(x)


def _no_dropout_model() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_result() -> None:
    params = {"epochs": 3, "batch_size": 64, "lr": 0.02}
    data = make_data(n_train=256)
    plain = train(FixedTrial({}), ctx_for(params), _no_dropout_model(), data)
    limited, trial = _Limited(_no_dropout_model(), limit=16), FixedTrial({})
    fallback = train(trial, ctx_for(params), limited, data)
    assert limited.ooms == 2 and limited.largest == 16  # 64 -> 32 -> 16, then kept
    events = trial.user_attrs["oom_fallback"]
    assert [e["new_micro_batch"] for e in events] == [32, 16] and events[0]["epoch"] == 0
    for a, b in zip(without_time(plain.history), without_time(fallback.history), strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_out_of_memory_below_the_floor_fails_with_the_reason() -> None:
    params = {"epochs": 2, "batch_size": 64, "min_micro_batch": 32}
    trial = FixedTrial({})
    with pytest.raises(torch.OutOfMemoryError, match=r"min_micro_batch=32.*Tried to allocate"):
        train(trial, ctx_for(params), _Limited(make_model(), limit=16), make_data())
    assert trial.user_attrs["oom_fallback"][-1]["gave_up"] is True


def test_binary_task_trains_on_in_memory_data_with_a_two_by_two_confusion_matrix() -> None:
    data = make_data()
    binary = type(data)(
        x_train=data.x_train,
        y_train=(data.y_train == 0).long(),
        x_val=data.x_val,
        y_val=(data.y_val == 0).long(),
        n_classes=2,
    )
    params = {"task": "binary", "epochs": 6, "lr": 0.02}
    seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    result = train(FixedTrial({}), ctx_for(params, "val_f1"), model, binary)
    assert result.value > 0.7
    cm = result.confusion_matrix
    assert cm is not None and len(cm) == 2 and sum(map(sum, cm)) == len(binary.y_val)
