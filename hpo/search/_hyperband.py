"""Hyperband that reads each finished trial once, not on every read of the study.

Optuna's ``HyperbandPruner`` hands each bracket's successive-halving pruner a view of the study
that re-derives every trial's bracket (a CRC32 of the study name and trial number, behind an
attribute guard) each time the pruner reads it, and the pruner then collects a rung's values
from every trial of the bracket, at every rung a trial reaches. At 10,000 trials those two were
most of a worker's pruning cost. A trial's bracket never changes and a finished trial's rung
values never change, so :class:`HyperbandPruner` computes each trial's bracket once and keeps
the finished trials' rung values sorted, per bracket and rung; only the trials still running
are read at each rung. Brackets, rungs and decisions are Optuna's own
(``tests/test_incremental.py`` compares the two, and ``make optuna-contract`` runs Optuna's own
Hyperband tests against it). Optuna's private names are imported in :mod:`hpo._optuna._pruners`
only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo._optuna._pruners import (
    BRACKET_STUDY_ATTRS,
    RUNG_PREFIX,
    completed_rung_key,
    current_rung,
    promotable_to_next_rung,
)
from hpo._optuna._study import storage_of, study_id, trial_id


class HyperbandPruner(optuna.pruners.HyperbandPruner):
    """``optuna.pruners.HyperbandPruner`` reading each trial's bracket and rungs once."""

    def _try_initialization(self, study: optuna.Study) -> None:
        super()._try_initialization(study)
        # Optuna's successive-halving pruners, one per bracket, as subclasses that read the
        # rung values this pruner keeps.
        self._pruners = [
            _SuccessiveHalving(
                min_resource=p._min_resource if p._min_resource is not None else "auto",
                reduction_factor=p._reduction_factor,
                min_early_stopping_rate=p._min_early_stopping_rate,
                bootstrap_count=p._bootstrap_count,
            )
            for p in self._pruners
        ]

    def _brackets(self, study_name: str, upto: int) -> _Brackets:
        """The brackets of this study's trials numbered below ``upto`` (at least); only once
        the pruner is initialised, when the number of brackets is known."""
        assert self._pruners and self._n_brackets is not None
        by_study: dict[str, _Brackets] = self.__dict__.setdefault("_hpo_brackets", {})
        if study_name not in by_study:
            by_study[study_name] = _Brackets(self._n_brackets)
        brackets = by_study[study_name]
        for number in range(len(brackets.of), upto):
            # Optuna's hash (or whatever replaces it), once per trial: it reads only these two.
            hashed = self._get_bracket_id(_Named(study_name), _Numbered(number))  # type: ignore[arg-type]
            brackets.members[hashed].append(number)
            brackets.of.append(hashed)
        return brackets

    def _rungs(self, study: optuna.Study) -> _Rungs:
        """This study's finished rung values (started over for a new study of the same name)."""
        by_study: dict[str, _Rungs] = self.__dict__.setdefault("_hpo_rungs", {})
        rungs = by_study.get(study.study_name)
        if rungs is None or rungs.study_id != study_id(study):
            rungs = by_study[study.study_name] = _Rungs(study_id(study))
        return rungs

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        return _BracketStudy(study, self, bracket_id)


class _Brackets:
    """Each trial's bracket, by trial number, and each bracket's trial numbers, ascending."""

    def __init__(self, n_brackets: int) -> None:
        self.of: list[int] = []
        self.members: list[list[int]] = [[] for _ in range(n_brackets)]


class _Rungs:
    """The rung values of a study's finished trials, sorted, by bracket and rung key.

    Trials numbered below ``upto`` are finished and counted; so are those in ``counted``
    (finished out of order). Each is counted once: a finished trial never changes.
    """

    def __init__(self, study_id: int) -> None:
        self.study_id = study_id
        self.clear()

    def clear(self) -> None:
        self.upto = 0
        self.counted: set[int] = set()
        self.values: dict[tuple[int, str], list[float]] = {}
        # Keys with a value that is not a plain number (never one written by the pruner):
        # sorting those depends on the order, so they are collected as Optuna does.
        self.irregular: set[tuple[int, str]] = set()

    def catch_up(self, trials: list[FrozenTrial], brackets: _Brackets) -> None:
        """Count the finished trials of ``trials`` (the whole study, numbered 0..n-1) not yet
        counted."""
        if len(trials) < self.upto:  # not the study counted so far: start over
            self.clear()
        for t in trials[self.upto :]:
            if t.state.is_finished() and t.number not in self.counted:
                self.counted.add(t.number)
                bracket = brackets.of[t.number]
                for key, value in t.system_attrs.items():
                    if key.startswith(RUNG_PREFIX):
                        self._add((bracket, key), value)
        while self.upto in self.counted:
            self.counted.remove(self.upto)
            self.upto += 1

    def _add(self, key: tuple[int, str], value: object) -> None:
        if not _regular(value):
            self.irregular.add(key)
            return
        bisect.insort(self.values.setdefault(key, []), value)  # type: ignore[call-overload]

    def competing(
        self, trials: list[FrozenTrial], brackets: _Brackets, bracket: int, rung_key: str, me: int
    ) -> list[float]:
        """The rung values of the bracket's trials, as Optuna's ``_get_competing_values``
        collects them (in another order, the same once sorted), the trial's own (number
        ``me``) not added."""
        running = [
            t.system_attrs[rung_key]
            for t in trials[self.upto :]
            if t.number not in self.counted
            and t.number != me
            and brackets.of[t.number] == bracket
            and rung_key in t.system_attrs
        ]
        if (bracket, rung_key) in self.irregular or not all(map(_regular, running)):
            return _collect(trials, brackets, bracket, rung_key, me)
        return [*self.values.get((bracket, rung_key), ()), *running]


def _collect(
    trials: list[FrozenTrial], brackets: _Brackets, bracket: int, rung_key: str, me: int
) -> list[float]:
    """Optuna's ``_get_competing_values`` over the bracket's trials, in trial order, the trial's
    own (number ``me``) not added."""
    of = brackets.of
    members = (t for t in trials if of[t.number] == bracket and t.number != me)
    return [t.system_attrs[rung_key] for t in members if rung_key in t.system_attrs]


def _regular(value: object) -> bool:
    """A number that sorts the same wherever it stands (not NaN, not a bool or a string)."""
    return type(value) in (float, int) and value == value


class _SuccessiveHalving(optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's successive halving for one bracket of :class:`HyperbandPruner`, its rung
    values taken from the finished trials' values kept sorted and the running trials."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not isinstance(study, _BracketStudy) or self._min_resource is None:
            return super().prune(study, trial)
        # From here on Optuna's SuccessiveHalvingPruner.prune, but for the competing values.
        step = trial.last_step
        if step is None:
            return False
        rung = current_rung(trial)
        value = trial.intermediate_values[step]
        trials: list[FrozenTrial] | None = None
        while True:
            rung_promotion_step = self._min_resource * (
                self._reduction_factor ** (self._min_early_stopping_rate + rung)
            )
            if step < rung_promotion_step:
                return False
            if math.isnan(value):
                return True
            if trials is None:
                # Read once, as Optuna reads its bracket's trials once for all rungs.
                trials = study.all_trials()
            rung_key = completed_rung_key(rung)
            storage_of(study).set_trial_system_attr(trial_id(trial), rung_key, value)
            # The trial's own value once, whether or not the read above already holds the
            # value just written (a storage that hands out its live trials would show it).
            competing = study.competing_values(trials, rung_key, trial.number)
            competing.append(value)
            if len(competing) <= self._bootstrap_count:
                return True
            if not promotable_to_next_rung(
                value, competing, self._reduction_factor, study.direction
            ):
                return True
            rung += 1


class _BracketStudy(optuna.Study):
    """The trials of one bracket, as the bracket's successive-halving pruner reads them.

    As Optuna's, a read-only view: it lets a pruner or a sampler read only what Optuna's
    bracket study lets them read, and every other attribute (``optimize``, ``set_user_attr``,
    ``user_attrs``, ...) is an ``AttributeError``.
    """

    _VALID_ATTRS = frozenset(
        (*BRACKET_STUDY_ATTRS, "_hyperband", "_name", "all_trials", "competing_values")
    )

    def __init__(self, study: optuna.Study, pruner: HyperbandPruner, bracket_id: int) -> None:
        super().__init__(
            study_name=study.study_name,
            storage=storage_of(study),
            sampler=study.sampler,
            pruner=pruner,
        )
        self._study = study
        self._name = study.study_name
        self._hyperband = pruner
        self._bracket_id = bracket_id

    def __getattribute__(self, name: str) -> Any:
        if name not in _BracketStudy._VALID_ATTRS:
            raise AttributeError(f"_BracketStudy does not have attribute of '{name}'")
        return object.__getattribute__(self, name)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._get_trials(deepcopy=deepcopy, states=states)
        if not trials:
            return trials
        hyperband = self._hyperband
        if not hyperband._pruners:
            # Not initialised yet (before the first prune; with max_resource "auto", before a
            # trial completes): no brackets to keep yet, so Optuna's filter as it stands.
            return [t for t in trials if hyperband._get_bracket_id(self, t) == self._bracket_id]
        brackets = self._hyperband._brackets(self._name, trials[-1].number + 1)
        if trials[-1].number == len(trials) - 1:
            # Numbers 0..n-1 in order (the whole study): a trial's number is its index.
            members = brackets.members[self._bracket_id]
            return [trials[i] for i in members[: bisect.bisect_left(members, len(trials))]]
        of, mine = brackets.of, self._bracket_id
        return [t for t in trials if of[t.number] == mine]

    def all_trials(self) -> list[FrozenTrial]:
        """Every trial of the study, unfiltered (what Optuna's view filters, read once)."""
        return self._get_trials(deepcopy=False)

    def competing_values(self, trials: list[FrozenTrial], rung_key: str, me: int) -> list[float]:
        """The bracket's values at ``rung_key``, from ``trials`` (:meth:`all_trials`), but for
        the value of trial number ``me``."""
        if not trials:
            return []
        brackets = self._hyperband._brackets(self._name, trials[-1].number + 1)
        if trials[-1].number != len(trials) - 1:  # not numbered 0..n-1: no counting ahead
            return _collect(trials, brackets, self._bracket_id, rung_key, me)
        rungs = self._hyperband._rungs(self._study)
        rungs.catch_up(trials, brackets)
        return rungs.competing(trials, brackets, self._bracket_id, rung_key, me)

    def stop(self) -> None:
        self._study.stop()  # stops the real study's loop, as Optuna's bracket view does


class _Named:
    """What Optuna's bracket hash reads of a study."""

    def __init__(self, study_name: str) -> None:
        self.study_name = study_name


class _Numbered:
    """What Optuna's bracket hash reads of a trial."""

    def __init__(self, number: int) -> None:
        self.number = number
