"""The training loop against real Optuna trials and studies (SQLite files), on CPU."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FixedTrial, TrialState
from torch import nn

from hpo.context import TrialContext
from hpo.training import (
    ClassificationData,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    learning_rate,
    seed_everything,
    train,
)

N_FEATURES, N_CLASSES = 8, 3


def make_data(
    n_train: int = 240, n_val: int = 90, *, shifted_val: bool = False
) -> ClassificationData:
    """Labels are the argmax of a fixed linear map; ``shifted_val`` relabels val as (y+1)%3,
    so the better the model fits, the worse it does on val."""
    g = torch.Generator().manual_seed(123)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=g)
    x_train = torch.randn(n_train, N_FEATURES, generator=g)
    x_val = torch.randn(n_val, N_FEATURES, generator=g)
    y_val = (x_val @ w).argmax(dim=1)
    return ClassificationData(
        x_train=x_train,
        y_train=(x_train @ w).argmax(dim=1),
        x_val=x_val,
        y_val=(y_val + 1) % N_CLASSES if shifted_val else y_val,
        n_classes=N_CLASSES,
    )


def make_model(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(
        nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, N_CLASSES)
    )


def ctx_for(
    params: Mapping[str, Any],
    metric: str = "val_accuracy",
    direction: str = "maximize",
    **kwargs: Any,
) -> TrialContext:
    return TrialContext(params=params, metrics=(metric,), directions=(direction,), **kwargs)


def run(
    params: Mapping[str, Any], *, seed: int = 0, **ctx_kwargs: Any
) -> tuple[TrainResult, FixedTrial]:
    trial = FixedTrial(dict(params))
    ctx = ctx_for(params, seed=seed, **ctx_kwargs)
    return train(trial, ctx, make_model(seed), make_data()), trial


def without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "epoch_time"} for row in history]


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "`epochs` must be >= 1, but got epochs=0"),
        ({"batch_size": 2.5}, "`batch_size` must be an integer, but got batch_size=2.5"),
        ({"lr": -1.0}, "`lr` must be > 0, but got lr=-1.0"),
        ({"lr": float("nan")}, "`lr` must be a finite number"),
        ({"optimizer": "rmsprop"}, "`optimizer` must be one of ('adam', 'adamw', 'sgd')"),
        ({"scheduler": "step"}, "`scheduler` must be one of"),
        ({"momentum": 1.0}, "`momentum` must be in [0, 1), but got momentum=1.0"),
        ({"grad_clip": 0}, "`grad_clip` must be > 0 or None, but got grad_clip=0.0"),
        ({"patience": 0}, "`patience` must be >= 1 or None, but got patience=0"),
        ({"amp": "yes"}, "`amp` must be 'auto', true or false, but got amp='yes'"),
        ({"epochs": True}, "`epochs` must be an integer, but got epochs=True"),
        ({"label_smoothing": 1.0}, "`label_smoothing` must be in [0, 1)"),
    ],
)
def test_config_validation_names_key_and_value(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_params(params)
    assert message in str(info.value)


def test_config_from_params_ignores_model_keys_and_accepts_integral_floats() -> None:
    config = TrainConfig.from_params({"epochs": 10.0, "lr": 1, "hidden_size": 64, "amp": False})
    assert (config.epochs, config.lr, config.amp) == (10, 1.0, False)
    assert isinstance(config.lr, float)


def test_unknown_metric_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown metric 'val_auc'.*'val_accuracy'"):
        run({"epochs": 1}, metric="val_auc")


def test_learning_rate_warmup_then_cosine_restarts() -> None:
    config = TrainConfig(
        lr=1.0, warmup_epochs=1, scheduler="cosine_warm_restarts", restart_epochs=2
    )
    lrs = [learning_rate(config, step, steps_per_epoch=4) for step in range(16)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # the first cycle starts after warm-up
    assert lrs[8] == pytest.approx(0.5)  # half way through the 2-epoch cycle
    assert lrs[12] == pytest.approx(1.0)  # restart
    assert all(0 < lr <= 1 for lr in lrs)


# -- the loop ----------------------------------------------------------------------------


def test_trains_and_stores_user_attrs() -> None:
    result, trial = run({"epochs": 4, "lr": 0.01})
    attrs = trial.user_attrs
    assert result.epochs_run == 4 and result.stop_reason == "completed"
    assert result.value == max(row["val_accuracy"] for row in result.history)
    assert result.value > 0.6  # it learned something
    assert {
        "history",
        "best_epoch",
        "epochs_run",
        "stop_reason",
        "val_accuracy",
        "val_loss",
        "val_f1",
        "confusion_matrix",
        "device",
        "n_params",
    } <= attrs.keys()
    assert attrs["device"] == "cpu" and attrs["n_params"] == 8 * 32 + 32 + 32 * 3 + 3
    assert len(attrs["history"]) == 4
    assert set(attrs["history"][0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_f1",
        "val_precision",
        "val_recall",
        "lr",
        "epoch_time",
    }
    cm = attrs["confusion_matrix"]
    assert sum(map(sum, cm)) == 90
    assert sum(cm[i][i] for i in range(3)) / 90 == pytest.approx(result.value)


def test_same_seed_gives_identical_results_other_seed_does_not() -> None:
    params = {"epochs": 3, "lr": 0.01, "grad_accum": 2, "warmup_epochs": 1}
    first, _ = run(params)
    second, _ = run(params)
    other, _ = run(params, seed=1)
    assert without_time(first.history) == without_time(second.history)
    assert without_time(first.history) != without_time(other.history)


def test_early_stopping_returns_best_epoch_not_last() -> None:
    # Val labels are shifted, so val accuracy falls as the model learns.
    trial = FixedTrial({})
    ctx = ctx_for({})
    config = TrainConfig(epochs=30, lr=0.05, patience=3)
    result = train(trial, ctx, make_model(), make_data(shifted_val=True), config)
    accuracies = [row["val_accuracy"] for row in result.history]
    assert result.stop_reason == "early_stopped"
    assert result.epochs_run == result.best_epoch + 1 + 3 < 30
    assert result.value == accuracies[result.best_epoch] == max(accuracies)
    assert result.value > accuracies[-1]
    assert trial.user_attrs["stop_reason"] == "early_stopped"
    assert trial.user_attrs["val_accuracy"] == pytest.approx(result.value, rel=1e-5)


def test_min_delta_governs_patience_but_not_the_best_epoch() -> None:
    config = TrainConfig(epochs=10, lr=0.01, patience=2, min_delta=10.0)
    result = train(
        FixedTrial({}), ctx_for({}, "val_loss", "minimize"), make_model(), make_data(), config
    )
    losses = [row["val_loss"] for row in result.history]
    # No epoch improves val_loss by 10, so patience runs out after epochs 1 and 2 ...
    assert result.epochs_run == 3 and result.stop_reason == "early_stopped"
    # ... but the value is still the best epoch's, not the first one's.
    assert result.value == min(losses) == losses[result.best_epoch]


def test_pruned_trial_stops_early(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Accuracy can never reach 1.01: the pruner rejects every epoch after its warm-up.
    pruner = optuna.pruners.ThresholdPruner(lower=1.01, n_warmup_steps=1)
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        train(trial, ctx_for({}), make_model(), make_data(), TrainConfig(epochs=10))
    study.tell(trial, state=TrialState.PRUNED)

    frozen = optuna.load_study(study_name=study.study_name, storage=storage).trials[0]
    assert frozen.state == TrialState.PRUNED
    assert sorted(frozen.intermediate_values) == [0, 1]
    assert frozen.user_attrs["epochs_run"] == 2
    assert frozen.user_attrs["stop_reason"] == "pruned"
    assert len(frozen.user_attrs["history"]) == 2


def test_multi_objective_returns_tuple_without_reporting(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"]
    )
    trial = study.ask()
    ctx = TrialContext(
        params={}, metrics=("val_accuracy", "val_loss"), directions=("maximize", "minimize")
    )
    result = train(trial, ctx, make_model(), make_data(), TrainConfig(epochs=2))
    assert isinstance(result.value, tuple) and len(result.value) == 2
    best = result.history[result.best_epoch]
    assert result.value == (best["val_accuracy"], best["val_loss"])
    study.tell(trial, result.value)
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.trials[0].intermediate_values == {}


def test_nan_loss_fails_the_trial() -> None:
    data = make_data()
    poisoned = data.x_train.clone()
    poisoned[5, 0] = float("nan")
    data = ClassificationData(
        x_train=poisoned, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val, n_classes=3
    )
    with pytest.raises(FloatingPointError, match=r"non-finite train_loss \(nan\) at epoch 0"):
        train(FixedTrial({}), ctx_for({}), make_model(), data, TrainConfig(epochs=3))


def test_exploding_lr_fails_the_trial() -> None:
    config = TrainConfig(epochs=20, optimizer="sgd", lr=1e30, momentum=0.0)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(FixedTrial({}), ctx_for({}), make_model(), make_data(), config)


class _OutOfMemory(nn.Module):
    """Runs out of memory on its fourth forward pass, as a too-large model would."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, N_CLASSES)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x)


def test_out_of_memory_is_reraised_after_freeing_gradients() -> None:
    model = _OutOfMemory()
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
        train(
            FixedTrial({}),
            ctx_for({}),
            model,
            make_data(),
            TrainConfig(batch_size=32, oom_fallback=False),
        )
    assert all(p.grad is None for p in model.parameters())
    # The process stays usable: the next trial trains normally.
    result, _ = run({"epochs": 1})
    assert math.isfinite(result.value)


@pytest.mark.parametrize(
    "params",
    [
        {"amp": True},  # bf16 autocast on CPU
        {"optimizer": "sgd", "scheduler": "plateau", "plateau_patience": 0, "label_smoothing": 0.1},
        {"optimizer": "adamw", "weight_decay": 0.01, "grad_clip": 0.5, "grad_accum": 3},
        {"scheduler": "cosine_warm_restarts", "restart_epochs": 1, "warmup_epochs": 1},
    ],
)
def test_options_train_to_finite_values(params: dict[str, Any]) -> None:
    result, _ = run({"epochs": 3, "batch_size": 32, **params})
    assert result.epochs_run == 3
    assert all(math.isfinite(row["train_loss"]) for row in result.history)


def test_plateau_reduces_lr() -> None:
    params = {"epochs": 6, "scheduler": "plateau", "plateau_patience": 0, "plateau_factor": 0.5}
    # Val labels are shifted, so the monitored accuracy stops improving early.
    config = TrainConfig.from_params(params)
    result = train(
        FixedTrial({}), ctx_for(params), make_model(), make_data(shifted_val=True), config
    )
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[0]
    assert all(later <= earlier for earlier, later in itertools.pairwise(lrs))


# -- checkpoints and resume ----------------------------------------------------------------


class _Crash(Exception):
    pass


class _CrashingModel(nn.Module):
    """Wraps a model and raises on the given forward call: a worker killed mid-epoch."""

    def __init__(self, inner: nn.Module, crash_at_call: int) -> None:
        super().__init__()
        self.inner = inner
        self.crash_at_call = crash_at_call
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise _Crash
        return self.inner(x)


RESUME_PARAMS = {
    "epochs": 6,
    "lr": 0.02,
    "batch_size": 32,
    "grad_accum": 2,
    "warmup_epochs": 1,
    "scheduler": "plateau",
    "plateau_patience": 0,
    "label_smoothing": 0.05,
}


def test_resume_after_crash_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = make_data()
    config = TrainConfig.from_params(RESUME_PARAMS)
    ctx = ctx_for(RESUME_PARAMS, "val_loss", "minimize", seed=7)

    uninterrupted = train(FixedTrial({}), ctx, make_model(7), data, config)
    assert not any(tmp_path.iterdir())  # checkpoint_dir=None writes nothing

    # 8 train + 1 val forward passes per epoch: call 30 is inside epoch 3.
    ckpt_ctx = ctx_for(RESUME_PARAMS, "val_loss", "minimize", seed=7, checkpoint_dir=tmp_path)
    with pytest.raises(_Crash):
        train(FixedTrial({}), ckpt_ctx, _CrashingModel(make_model(7), 30), data, config)
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "last.pt"}
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["loop"]["epoch"] == 3

    # A new process: fresh model and RNG state, then the trial resumes from last.pt.
    seed_everything(12345)
    resumed_model = _CrashingModel(make_model(7), crash_at_call=-1)
    resumed = train(FixedTrial({}), ckpt_ctx, resumed_model, data, config)
    assert resumed_model.calls == 3 * 9  # only epochs 3..5 ran
    assert without_time(resumed.history) == without_time(uninterrupted.history)
    assert resumed.values == uninterrupted.values
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert resumed.confusion_matrix == uninterrupted.confusion_matrix


def test_larger_epoch_budget_continues_a_finished_trial(tmp_path: Path) -> None:
    data = make_data()
    params = {**RESUME_PARAMS, "epochs": 2}
    ctx = ctx_for(params, seed=3, checkpoint_dir=tmp_path)
    train(FixedTrial({}), ctx, make_model(3), data, TrainConfig.from_params(params))
    extended = train(
        FixedTrial({}), ctx, make_model(3), data, TrainConfig.from_params(RESUME_PARAMS)
    )
    straight = train(
        FixedTrial({}),
        ctx_for(params, seed=3),
        make_model(3),
        data,
        TrainConfig.from_params(RESUME_PARAMS),
    )
    assert extended.epochs_run == 6
    assert without_time(extended.history) == without_time(straight.history)


def test_resume_rereports_history_and_finished_trial_is_not_retrained(tmp_path: Path) -> None:
    data = make_data()
    config = TrainConfig(epochs=3)
    ctx = ctx_for({"epochs": 3}, checkpoint_dir=tmp_path)
    first = train(FixedTrial({}), ctx, _CrashingModel(make_model(), -1), data, config)

    # A retry is a new Optuna trial: it gets the full learning curve re-reported.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    trial = study.ask()
    model = _CrashingModel(make_model(), crash_at_call=-1)
    again = train(trial, ctx, model, data, config)
    assert model.calls == 0  # nothing left to train: restored, nothing re-run
    assert again.values == first.values
    assert without_time(again.history) == without_time(first.history)
    assert study.trials[0].intermediate_values == {
        i: row["val_accuracy"] for i, row in enumerate(first.history)
    }
    # The model holds the best epoch's weights after a resume, too.
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, best[key], rtol=0, atol=0)


def test_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    train(
        FixedTrial({}),
        ctx_for({"lr": 0.01}, checkpoint_dir=tmp_path),
        make_model(),
        make_data(),
        TrainConfig(epochs=1),
    )
    with pytest.raises(ValueError, match="belongs to a different configuration"):
        train(
            FixedTrial({}),
            ctx_for({"lr": 0.02}, checkpoint_dir=tmp_path),
            make_model(),
            make_data(),
            TrainConfig(epochs=1),
        )
