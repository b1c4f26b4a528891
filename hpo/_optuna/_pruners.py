"""Optuna's successive-halving and Hyperband internals behind hpo's Hyperband
(``hpo/search/_hyperband.py``).

Imported only when :func:`hpo._optuna.internals_supported` holds (``hpo.search.make_pruner``
imports the pruner lazily), so an Optuna release that renamed one of these cannot break hpo's
import: hpo then runs Optuna's stock ``HyperbandPruner``. ``make optuna-contract`` runs Optuna's
own Hyperband tests against hpo's pruner on each release listed in ``TESTED_OPTUNA``.

Besides the names below, hpo relies on these attributes of Optuna's classes:

- ``HyperbandPruner``: ``_try_initialization(study)`` (builds one ``SuccessiveHalvingPruner`` per
  bracket into ``_pruners``, empty until the first trial completes when ``max_resource`` is
  "auto"), ``_n_brackets``, ``_get_bracket_id(study, trial)`` (a CRC32 of
  ``f"{study.study_name}_{trial.number}"``: it reads nothing else, so hpo calls it with two
  small stand-ins) and ``_create_bracket_study(study, bracket_id)`` (the view of the study the
  bracket's pruner, and the sampler through ``optuna.pruners._filter_study``, are given).
- ``SuccessiveHalvingPruner``: ``_min_resource``, ``_reduction_factor``,
  ``_min_early_stopping_rate``, ``_bootstrap_count``; ``prune`` is overridden with Optuna's
  body, but for how the competing values are collected.
- ``Study``: ``_get_trials(deepcopy, states)`` (the unfiltered read), ``_storage``,
  ``_study_id``, ``_thread_local``.
"""

from __future__ import annotations

from optuna.pruners._successive_halving import (
    # ``f"completed_rung_{rung}"``: the system attribute a trial's value at a rung is stored
    # under; hpo reads the finished trials' rung values once, by this key.
    _completed_rung_key as completed_rung_key,
)
from optuna.pruners._successive_halving import (
    # The trial's current rung: the first rung without a ``completed_rung_`` attribute.
    _get_current_rung as current_rung,
)
from optuna.pruners._successive_halving import (
    # Optuna's promotion rule over a rung's values, the trial's own among them
    # ``(value, competing, reduction_factor, direction)``; it sorts ``competing`` in place.
    _is_trial_promotable_to_next_rung as promotable_to_next_rung,
)

#: The prefix of :func:`completed_rung_key`, to find every rung value among system attributes.
RUNG_PREFIX = completed_rung_key(0)[: -len("0")]

#: What Optuna's bracket study lets a pruner or sampler read (its ``_BracketStudy._VALID_ATTRS``,
#: which it defines inside ``_create_bracket_study``, so it cannot be imported): the rest of the
#: ``Study`` API raises ``AttributeError``, so nothing writes through a bracket's view.
BRACKET_STUDY_ATTRS: tuple[str, ...] = (
    "get_trials",
    "_get_trials",
    "directions",
    "direction",
    "_directions",
    "_storage",
    "_study_id",
    "pruner",
    "study_name",
    "_bracket_id",
    "sampler",
    "trials",
    "_is_multi_objective",
    "stop",
    "_study",
    "_thread_local",
)

__all__ = [
    "BRACKET_STUDY_ATTRS",
    "RUNG_PREFIX",
    "completed_rung_key",
    "current_rung",
    "promotable_to_next_rung",
]
