"""Hyperband that hashes each trial into its bracket once, not on every read of the study.

Optuna's ``HyperbandPruner`` hands each bracket's successive-halving pruner a view of the study
that re-derives every trial's bracket (a CRC32 of the study name and trial number, behind an
attribute guard) each time the pruner reads it: at 10,000 trials that is about 30% of a
worker's coordination cost. A trial's bracket never changes, so :class:`HyperbandPruner`
computes it once per trial and keeps each bracket's trial numbers, from which a bracket's
view of the study is picked by index. Brackets, rungs and decisions are Optuna's own
(``tests/test_incremental.py`` compares the two).
"""

from __future__ import annotations

import bisect
from collections.abc import Container

import optuna
from optuna.trial import FrozenTrial, TrialState


class HyperbandPruner(optuna.pruners.HyperbandPruner):
    """``optuna.pruners.HyperbandPruner`` with each trial's bracket computed once."""

    def _get_bracket_id(self, study: optuna.Study, trial: FrozenTrial) -> int:
        if not self._pruners:  # not initialised yet: Optuna's answer, and nothing to keep
            return 0
        return self._brackets(study.study_name, trial.number + 1).of[trial.number]

    def _brackets(self, study_name: str, upto: int) -> _Brackets:
        """The brackets of this study's trials numbered below ``upto`` (at least)."""
        by_study: dict[str, _Brackets] = self.__dict__.setdefault("_hpo_brackets", {})
        if study_name not in by_study:
            by_study[study_name] = _Brackets(self._n_brackets or 0)
        brackets = by_study[study_name]
        for number in range(len(brackets.of), upto):
            hashed = super()._get_bracket_id(_Named(study_name), _Numbered(number))  # type: ignore[arg-type]
            brackets.of.append(hashed)
            brackets.members[hashed].append(number)
        return brackets

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        return _BracketStudy(study, self, bracket_id)


class _Brackets:
    """Each trial's bracket, by trial number, and each bracket's trial numbers, ascending."""

    def __init__(self, n_brackets: int) -> None:
        self.of: list[int] = []
        self.members: list[list[int]] = [[] for _ in range(n_brackets)]


class _BracketStudy(optuna.Study):
    """The trials of one bracket, as the bracket's successive-halving pruner reads them."""

    def __init__(self, study: optuna.Study, pruner: HyperbandPruner, bracket_id: int) -> None:
        super().__init__(
            study_name=study.study_name,
            storage=study._storage,
            sampler=study.sampler,
            pruner=pruner,
        )
        self._study = study
        self._name = study.study_name
        self._hyperband = pruner
        self._bracket_id = bracket_id

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._get_trials(deepcopy=deepcopy, states=states)
        if not trials:
            return trials
        brackets = self._hyperband._brackets(self._name, trials[-1].number + 1)
        if trials[-1].number == len(trials) - 1:
            # Numbers 0..n-1 in order (the whole study): a trial's number is its index.
            members = brackets.members[self._bracket_id]
            return [trials[i] for i in members[: bisect.bisect_left(members, len(trials))]]
        of, mine = brackets.of, self._bracket_id
        return [t for t in trials if of[t.number] == mine]

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
