"""Optuna's private attributes of a live ``Study`` and ``Trial`` that hpo's worker reads.

The worker drives trials through ask/tell but also needs the storage behind a study, the
row ids of studies and trials, and a trial's stored state without a second storage read.
Optuna exposes none of these publicly; each accessor names the attribute it relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = [
    "forget_ahead",
    "frozen_trial",
    "sample_ahead",
    "storage_of",
    "study_id",
    "suggest",
    "trial_id",
]


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


def sample_ahead(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Sample ``space`` for ``trial`` now, as its ``suggest_*`` calls would, without storing.

    Each parameter takes the path ``Trial._suggest`` would: a fixed (enqueued) value, a
    single-valued distribution, the sampler's relative sample (``Trial.relative_params``,
    computed here as Optuna computes it at the first suggest), else ``sample_independent``
    in the order of ``space``. The values become the trial's relative parameters
    (``Trial._relative_params`` / ``relative_search_space``), so the worker's later
    ``Trial._suggest`` stores exactly these values, and only for the ones the objective asks.
    """
    from optuna import pruners
    from optuna.distributions import _get_single_value

    relative = dict(trial.relative_params)  # sample_relative, as at Optuna's first suggest
    relative_space = dict(trial.relative_search_space or {})
    frozen = trial._get_latest_trial()  # what Trial._suggest hands the sampler
    fixed = trial._fixed_params or {}
    study = pruners._filter_study(trial.study, frozen)
    values: dict[str, Any] = {}
    for name, dist in space.items():
        if name in fixed:
            if not dist._contains(dist.to_internal_repr(fixed[name])):
                continue  # Optuna warns and samples: leave it to the objective's suggest
            values[name] = fixed[name]
        elif dist.single():
            values[name] = _get_single_value(dist)
        elif name in relative and relative_space.get(name) == dist:
            values[name] = relative[name]
        else:
            values[name] = trial.study.sampler.sample_independent(study, frozen, name, dist)
    trial._relative_params = {**relative, **values}
    trial.relative_search_space = {**relative_space, **{k: space[k] for k in values}}
    return values


def forget_ahead(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> None:
    """Drop ``name``'s relative sample when the objective asks with another distribution:
    ``Trial._suggest`` would answer with it whenever the value fits the new range."""
    known = (trial.relative_search_space or {}).get(name)
    if known is None or known == distribution:
        return
    relative = dict(trial.relative_params)
    relative.pop(name, None)
    trial._relative_params = relative
    trial.relative_search_space = {
        k: v for k, v in (trial.relative_search_space or {}).items() if k != name
    }
