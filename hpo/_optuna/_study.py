"""Optuna's private attributes of a live ``Study`` and ``Trial`` that hpo's worker reads.

The worker drives trials through ask/tell but also needs the storage behind a study, the
row ids of studies and trials, and a trial's stored state without a second storage read.
Optuna exposes none of these publicly; each accessor names the attribute it relies on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = ["frozen_trial", "storage_of", "study_id", "suggest", "trial_id"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """``Study._storage``: the storage the study was opened on (hpo's worker storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """``Study._study_id``: the study's row id, the key of hpo's own tables."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """``Trial._trial_id`` (``FrozenTrial._trial_id``): the trial's row id, what the storage
    API takes."""
    return trial._trial_id


def frozen_trial(trial: optuna.Trial) -> FrozenTrial:
    """``Trial._get_latest_trial()``: the trial as stored, read through the study's cache."""
    return trial._get_latest_trial()


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``Trial._suggest``: sample ``name`` from a distribution given as an object.

    The trial process sends its ``suggest_*`` calls as serialized distributions; the public
    ``suggest_float``/``suggest_int``/``suggest_categorical`` would need them taken apart.
    """
    return trial._suggest(name, distribution)
