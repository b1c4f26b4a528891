"""Objectives that record the slot their trial process ran in (``test_gpus_per_trial``)."""

from __future__ import annotations

import os

import optuna

from hpo.context import TrialContext


def slot_probe(trial: optuna.trial.BaseTrial, ctx: TrialContext) -> float:
    """Records the slot's CUDA_VISIBLE_DEVICES and HPO_SLOT_GPUS as the trial process saw them."""
    trial.set_user_attr("cuda_visible_devices", os.environ.get("CUDA_VISIBLE_DEVICES"))
    trial.set_user_attr("slot_gpus", os.environ.get("HPO_SLOT_GPUS"))
    return float(trial.params["x"])
