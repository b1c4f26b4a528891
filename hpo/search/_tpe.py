"""TPE whose record of the finished trials grows with the study instead of being rebuilt.

Optuna's ``TPESampler`` rebuilds its observations from every trial on every ask: it sorts all
finished trials in Python and converts each one's parameters again. That is Python work per
trial per ask, and at 10,000 trials it is most of a worker's coordination cost. A finished
trial never changes, so :class:`IncrementalTPESampler` converts each one once, keeps the
results in arrays, in Optuna's orders (a new trial is inserted in its place, nothing sorted
again), and splits them with numpy. Its candidates are scored with ``hpo.search._parzen.log_pdf``,
Optuna's log density to the last bit at a fraction of its cost. It samples exactly what
``TPESampler`` samples from the same history and seed (``tests/test_incremental.py`` compares
the two, and ``make optuna-contract`` runs Optuna's own TPE tests against it); what it does not
cover (several objectives, ``constraints_func``) takes ``TPESampler``'s own path.

Optuna's private names are imported in :mod:`hpo._optuna._tpe` only.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo._optuna._study import storage_of, study_id
from hpo._optuna._tpe import ParzenEstimator, default_gamma
from hpo.search._parzen import log_pdf

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# What one read of the study returns for the constant liar: finished and running trials
# together, as Optuna's TPE reads them, so that a trial finishing meanwhile is seen once.
_FINISHED_OR_RUNNING = (*_FINISHED, TrialState.RUNNING)
# The groups of Optuna's split, in the order it fills the "below" group from.
_COMPLETE, _PRUNED, _INFEASIBLE = 0, 1, 2


class _History:
    """Finished trials of one study and search space, one row each, in the order first seen.

    Rows fall in Optuna's three groups, each with its sort key: a complete trial by its value
    (best first); a pruned one by the last step it reached (furthest first), then its value
    there (NaN last), and one that reported nothing after all others; an infeasible one (a
    positive sum of constraint violations) by that sum, whatever its state.
    """

    def __init__(self, search_space: dict[str, BaseDistribution], maximize: bool) -> None:
        self.space = search_space
        self.sign = -1.0 if maximize else 1.0
        self.seen: set[int] = set()
        self._rows: list[tuple[int, int, float, float, tuple[float, ...] | None]] = []
        self.number = np.empty(0, dtype=np.int64)
        self.group = np.empty(0, dtype=np.int8)
        self.key = np.empty((0, 2))
        self.obs = np.empty((0, len(search_space)))
        self.has_params = np.empty(0, dtype=bool)
        # Row indices in Optuna's orders, kept as rows come: each group by its key, and all
        # rows by trial number.
        self.orders = (_Sorted(), _Sorted(), _Sorted())
        self.by_number = _Sorted()
        # The study's read is by number: its first ``settled`` trials, numbered below
        # ``frontier``, were all finished (and added) when it was last read.
        self.settled = 0
        self.frontier = 0

    def add(self, trial: FrozenTrial) -> None:
        violation = sum(v for v in trial.constraints.values() if v > 0)
        if violation > 0:
            group, key = _INFEASIBLE, (violation, 0.0)
        elif trial.state == TrialState.COMPLETE:
            group, key = _COMPLETE, (self.sign * float(trial.value), 0.0)  # type: ignore[arg-type]
        elif trial.intermediate_values:
            step, value = max(trial.intermediate_values.items())
            group, key = _PRUNED, (-step, math.inf if math.isnan(value) else self.sign * value)
        else:
            group, key = _PRUNED, (1.0, 0.0)
        self._rows.append((trial.number, group, *key, internal_row(self.space, trial.params)))

    def catch_up(self, trials: list[FrozenTrial]) -> list[FrozenTrial] | None:
        """Add the finished trials of ``trials`` not added yet and return the running ones.

        ``trials`` is one read of the study's finished (and running) trials, by number, as a
        storage returns them. Only its trials from the first one running at the last read on
        are looked at, and the few below that are new (one that finished out of order without
        the constant liar, an enqueued one that started late), found from the top down. None
        (start over) if the read lacks a trial seen below it: another study, since a finished
        trial stays in its study for good.
        """
        start = bisect.bisect_left(trials, self.frontier, key=_number)
        running: list[FrozenTrial] = []
        first_open = len(trials)  # the first trial not finished: the next frontier
        new_below, i = start - self.settled, start
        while new_below > 0 and i > 0:
            i -= 1
            if trials[i].number not in self.seen:
                new_below -= 1
                if not self._take(trials[i], running):
                    first_open = i
        if new_below != 0:  # fewer than seen (another study), or not by number
            return None
        for i in range(start, len(trials)):
            if not self._take(trials[i], running):
                first_open = min(first_open, i)
        self.settled = first_open
        if first_open < len(trials):
            self.frontier = trials[first_open].number
        else:
            self.frontier = trials[-1].number + 1 if trials else 0
        self.commit()
        return running

    def _take(self, trial: FrozenTrial, running: list[FrozenTrial]) -> bool:
        """Add the trial if it is finished and new, keep it if running; whether finished."""
        if trial.state.is_finished():
            if trial.number not in self.seen:
                self.seen.add(trial.number)
                if trial.state in _FINISHED:
                    self.add(trial)
            return True
        if trial.state == TrialState.RUNNING:
            running.append(trial)
        return False

    def commit(self) -> None:
        """Append the rows added since the last commit to the arrays."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        obs, has_params = observation_rows([r[4] for r in rows], len(self.space))
        self.number = np.concatenate([self.number, [r[0] for r in rows]])
        self.group = np.concatenate([self.group, np.array([r[1] for r in rows], dtype=np.int8)])
        self.key = np.concatenate([self.key, [(r[2], r[3]) for r in rows]])
        self.obs = np.concatenate([self.obs, obs])
        self.has_params = np.concatenate([self.has_params, has_params])
        new = np.arange(len(self.number) - len(rows), len(self.number))
        # The trial number breaks ties, as Optuna's stable sort over trials by number does.
        complete, pruned, infeasible = self.orders
        complete.add(new[self.group[new] == _COMPLETE], [self.key[:, 0], self.number])
        pruned_rows = new[self.group[new] == _PRUNED]
        pruned.add(pruned_rows, [self.key[:, 0], self.key[:, 1], self.number])
        infeasible.add(new[self.group[new] == _INFEASIBLE], [self.key[:, 0], self.number])
        self.by_number.add(new, [self.number])

    def split(self, n_below: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the below and the above group, as Optuna's ``_split_trials``: the
        best complete trials first, then the best pruned ones, then the least infeasible."""
        below, above = [], []
        for order in self.orders:
            n = min(n_below, len(order.rows))  # a negative n (a custom gamma) slices as Optuna's
            below.append(order.rows[:n])
            above.append(order.rows[n:])
            n_below = max(0, n_below - len(below[-1]))
        return np.concatenate(below), np.concatenate(above)


def _number(trial: FrozenTrial) -> int:
    return trial.number


class _Sorted:
    """Row indices sorted by key columns (most significant first; the last one unique), as
    ``np.lexsort`` sorts them, kept sorted as rows come rather than sorted again per ask."""

    def __init__(self) -> None:
        self.rows = np.empty(0, dtype=np.int64)

    def add(self, new: np.ndarray, keys: list[np.ndarray]) -> None:
        """Insert rows ``new``; ``keys`` are the key columns over all rows."""
        if len(new) > 8 or any(np.isnan(k[new]).any() for k in keys if k.dtype.kind == "f"):
            rows = np.concatenate([self.rows, new])  # many, or a NaN (lexsort puts it last)
            self.rows = rows[np.lexsort([k[rows] for k in reversed(keys)])]
            return
        for row in new:
            # Its place: the number of rows that sort before it.
            before = np.zeros(len(self.rows), dtype=bool)
            tied = np.ones(len(self.rows), dtype=bool)
            for k in keys:
                ours, theirs = k[row], k[self.rows]
                before |= tied & (theirs < ours)
                tied &= theirs == ours
            self.rows = np.insert(self.rows, np.count_nonzero(before), row)


def internal_row(
    space: dict[str, BaseDistribution], params: dict[str, Any]
) -> tuple[float, ...] | None:
    """The trial's parameters in the sampler's internal representation, or None if it lacks one."""
    if not space.keys() <= params.keys():
        return None
    return tuple(float(d.to_internal_repr(params[name])) for name, d in space.items())


def observation_rows(
    rows: list[tuple[float, ...] | None], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of :func:`internal_row` as an array (NaN where a trial lacks a parameter) and
    the mask of the trials that have them all."""
    obs = np.array([r or (math.nan,) * width for r in rows], dtype=float).reshape(-1, width)
    return obs, np.array([r is not None for r in rows], dtype=bool)


class IncrementalTPESampler(TPESampler):
    """``optuna.samplers.TPESampler`` that reads each finished trial once (same samples)."""

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if len(study.directions) > 1 or self._constraints_func is not None:
            return super()._sample(study, trial, search_space)
        # One read, straight from the storage, as Optuna's TPE reads (hpo's worker keeps these
        # lists until the study changes, where Optuna's per-ask cache would filter every trial).
        states = _FINISHED_OR_RUNNING if self._constant_liar else _FINISHED
        trials = storage_of(study).get_all_trials(study_id(study), deepcopy=False, states=states)
        history = self._history(study, search_space)
        running = history.catch_up(trials)
        if running is None:  # not the study it saw: trust nothing kept
            self._histories.clear()
            return super()._sample(study, trial, search_space)

        if self._gamma is None:
            self._gamma = default_gamma
        below, above = history.split(self._gamma(len(history.number)))
        liars = [
            (t.number, internal_row(search_space, self._get_params(t, study)))
            for t in running
            if t.number != trial.number
        ]
        mpe_below = self._estimator(search_space, history, below, [])
        mpe_above = self._estimator(search_space, history, above, liars)

        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acquisition = self._compute_acquisition_func(samples, mpe_below, mpe_above)
        best = TPESampler._compare(samples, acquisition)
        return {name: d.to_external_repr(best[name]) for name, d in search_space.items()}

    def _history(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> _History:
        key = (study_id(study), study.study_name, tuple(search_space.items()))
        if key not in self._histories:
            maximize = study.direction == StudyDirection.MAXIMIZE
            self._histories[key] = _History(search_space, maximize)
        return self._histories[key]

    @property
    def _histories(self) -> dict[tuple[Any, ...], _History]:
        # Set on first use: TPESampler's constructor stays the one spec options are checked on.
        return self.__dict__.setdefault("_hpo_histories", {})

    def _estimator(
        self,
        search_space: dict[str, BaseDistribution],
        history: _History,
        rows: np.ndarray,
        extra: list[tuple[int, tuple[float, ...] | None]],
    ) -> Any:
        """The Parzen estimator over these rows (plus running trials), in trial-number order,
        of the trials that have every parameter of the space."""
        # The rows in trial-number order (the running trials' numbers among them).
        chosen = np.zeros(len(history.number), dtype=bool)
        chosen[rows] = True
        ordered = history.by_number.rows[chosen[history.by_number.rows]]
        obs = history.obs[ordered][history.has_params[ordered]]
        if extra:
            liar_obs, liar_has_params = observation_rows([r for _, r in extra], len(search_space))
            liar_numbers = np.array([n for n, _ in extra], dtype=np.int64)[liar_has_params]
            kept_numbers = history.number[ordered][history.has_params[ordered]]
            order = np.argsort(np.concatenate([kept_numbers, liar_numbers]), kind="stable")
            obs = np.concatenate([obs, liar_obs[liar_has_params]])[order]
        observations = {}
        for j, (name, d) in enumerate(search_space.items()):
            column = obs[:, j]
            # Optuna's own arrays hold a categorical's choice indices as integers.
            if isinstance(d, CategoricalDistribution) and len(column):
                column = column.astype(np.int64)
            observations[name] = column
        return self._parzen_estimator_cls(
            observations, search_space, self._parzen_estimator_parameters
        )

    def _compute_acquisition_func(
        self,
        samples: dict[str, np.ndarray],
        mpe_below: ParzenEstimator,
        mpe_above: ParzenEstimator,
    ) -> np.ndarray:
        # Optuna's, with its log densities computed faster (the same bits: hpo/search/_parzen.py)
        return log_pdf(mpe_below, samples) - log_pdf(mpe_above, samples)
