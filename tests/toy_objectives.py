"""Fast objectives for tests: plain functions, importable by spawned trial processes."""

from __future__ import annotations

import os
import time

import optuna

from hpo.context import TrialContext


def quadratic(trial: optuna.trial.BaseTrial) -> float:
    """A plain Optuna objective, unchanged: define-by-run suggestions, reports, pruning."""
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", 0, 5)
    for step in range(3):
        trial.report((x - 2) ** 2 + y + (3 - step), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    return (x - 2) ** 2 + y


def instant(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """An hpo-style objective that returns at once: for budget and contention tests."""
    time.sleep(float(ctx.params.get("sleep", 0.0)))
    return float(sum(v for v in trial.params.values() if isinstance(v, int | float)))


def grid_recorder(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Records every call in a directory so a test can count how often each point ran."""
    out = ctx.params["record_dir"]
    key = "-".join(f"{k}={trial.params[k]}" for k in sorted(trial.params))
    with open(os.path.join(out, f"{key}__{os.getpid()}_{time.monotonic_ns()}"), "w"):
        pass
    time.sleep(float(ctx.params.get("sleep", 0.0)))
    return float(trial.params.get("lr", 0.0))


def failing(trial: optuna.trial.BaseTrial) -> float:
    trial.suggest_float("x", 0, 1)
    raise RuntimeError("boom")


def sleeper(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Sleeps in steps, reporting each, and marks its checkpoint dir so retries can be seen."""
    steps = int(ctx.params.get("steps", 10))
    assert ctx.checkpoint_dir is not None
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker = ctx.checkpoint_dir / "progress"
    start = int(marker.read_text()) if marker.exists() else 0
    trial.set_user_attr("resumed_from", start)
    try:
        for step in range(start, steps):
            time.sleep(float(ctx.params.get("step_s", 0.2)))
            marker.write_text(str(step + 1))
            trial.report(float(step), step)
    finally:  # shows that a trial ended early still runs its cleanup
        (ctx.checkpoint_dir / "finally").write_text("ran")
    return float(trial.params["x"])


def hang(trial: optuna.trial.BaseTrial) -> float:
    trial.suggest_float("x", 0, 1)
    time.sleep(3600)
    return 0.0


def threads_probe(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Records the threads its trial process got: torch's pool and OMP_NUM_THREADS."""
    import torch

    trial.set_user_attr("torch_threads", torch.get_num_threads())
    trial.set_user_attr("omp_num_threads", os.environ.get("OMP_NUM_THREADS"))
    trial.set_user_attr("mkl_num_threads", os.environ.get("MKL_NUM_THREADS"))
    trial.set_user_attr("pid", os.getpid())
    time.sleep(float(ctx.params.get("sleep", 0.0)))
    return float(trial.params["x"])


def define_by_run(trial: optuna.trial.BaseTrial) -> float:
    """A plain Optuna objective whose suggest_* define its space, with the cases sampling
    ahead must get right: ``extra`` is skipped by every third trial (a conditional
    parameter), ``w`` is asked with another range by every fourth. It records what it got
    and, under hpo, which parameters its worker sampled ahead for it."""
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    extra = trial.suggest_int("extra", 0, 3) if trial.number % 3 != 2 else 0
    # every fourth trial asks another range, one a value sampled ahead would fit
    w = trial.suggest_float("w", 0, 20 if trial.number % 4 == 3 else 1)
    seen = {"x": x, "kind": kind, "w": w} | ({"extra": extra} if trial.number % 3 != 2 else {})
    trial.set_user_attr("seen", seen)
    job = getattr(trial, "_job", None)  # hpo's RemoteTrial: what its worker sent
    ahead = {k: v for k, (v, _) in job.ahead.items()} if job is not None else {}
    trial.set_user_attr("ahead", ahead)
    time.sleep(0.05)
    return x**2 + w + extra + (kind == "b")


def on_demand(trial: optuna.trial.BaseTrial) -> float:
    """Parameters no other trial asks for, between pauses: each is sampled on demand."""
    total = 0.0
    for i in range(3):
        time.sleep(0.4)
        total += trial.suggest_float(f"p{trial.number}_{i}", 0, 1)
    return total
