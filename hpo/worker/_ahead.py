"""Which define-by-run parameters the worker samples ahead of the objective's ``suggest_*``.

A plain Optuna objective defines its space as it runs, so nothing is known before its first
trial. Once finished trials show what a trial asks for (the intersection of their spaces,
as Optuna's relative sampling computes it), the worker samples those parameters for the
next trial together, while the slot's current trial runs; a ``suggest_*`` for one of them
is then answered in the trial process, and only a parameter not seen in every finished
trial (a conditional one, or a new one) is sampled on demand.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.distributions import BaseDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState


class AheadSpace:
    """The parameters to sample ahead: every completed trial's, minus the spec's own."""

    def __init__(self, declared: Mapping[str, BaseDistribution]) -> None:
        self._declared = set(declared)
        # Incremental: each call reads only the trials finished since the last one.
        self._intersection = IntersectionSearchSpace(include_pruned=False)

    def of(self, study: optuna.Study) -> dict[str, BaseDistribution]:
        """The space, in the order the latest completed trial asked for it: a sampler that
        draws parameters one by one from one random stream then draws the same values as
        it would for the objective's own suggest_* calls."""
        space = self._intersection.calculate(study)
        if not space:
            return {}
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        order = list(done[-1].params) if done else []
        names = [n for n in order if n in space] + [n for n in space if n not in order]
        return {n: space[n] for n in names if n not in self._declared}
