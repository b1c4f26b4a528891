"""TPE whose record of the finished trials grows with the study instead of being rebuilt.

Optuna's ``TPESampler`` rebuilds its observations from every trial on every ask: it sorts all
finished trials in Python and converts each one's parameters again. That is Python work per
trial per ask, and at 10,000 trials it is most of a worker's coordination cost. A finished
trial never changes, so :class:`IncrementalTPESampler` converts each one once, keeps the
results in arrays, in Optuna's orders (a new trial is inserted in its place, nothing sorted
again), and splits them with numpy. Its candidates are scored with ``hpo.search._parzen.log_pdf``,
Optuna's log density to the last bit at a fraction of its cost. It samples exactly what
``TPESampler`` samples from the same history and seed (``tests/test_incremental.py`` compares
the two); what it does not cover (several objectives, constraints) takes ``TPESampler``'s own
path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.samplers._tpe.sampler import default_gamma
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.search._parzen import log_pdf

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_RUNNING = (TrialState.RUNNING,)


class _History:
    """Finished trials of one study and search space, one row each, in the order first seen.

    Sort keys follow Optuna's split: a complete trial by its value (best first); a pruned one
    by the last step it reached (furthest first), then its value there (NaN last), and one
    that reported nothing after all others.
    """

    def __init__(self, search_space: dict[str, BaseDistribution], maximize: bool) -> None:
        self.space = search_space
        self.sign = -1.0 if maximize else 1.0
        self.seen: set[int] = set()
        self._rows: list[tuple[int, bool, float, float, tuple[float, ...] | None]] = []
        self.number = np.empty(0, dtype=np.int64)
        self.complete = np.empty(0, dtype=bool)
        self.key = np.empty((0, 2))
        self.obs = np.empty((0, len(search_space)))
        self.has_params = np.empty(0, dtype=bool)
        # Row indices in Optuna's orders, kept as rows come: complete trials by their key,
        # pruned ones by theirs, and all by trial number.
        self.complete_order = _Sorted()
        self.pruned_order = _Sorted()
        self.by_number = _Sorted()

    def add(self, trial: FrozenTrial) -> None:
        self.seen.add(trial.number)
        if trial.state == TrialState.COMPLETE:
            key: tuple[float, float] = (self.sign * float(trial.value), 0.0)  # type: ignore[arg-type]
        elif trial.intermediate_values:
            step, value = max(trial.intermediate_values.items())
            key = (-step, math.inf if math.isnan(value) else self.sign * value)
        else:
            key = (1.0, 0.0)
        self._rows.append(
            (
                trial.number,
                trial.state == TrialState.COMPLETE,
                *key,
                internal_row(self.space, trial.params),
            )
        )

    def catch_up(self, finished: list[FrozenTrial]) -> bool:
        """Add the trials of ``finished`` (the study's finished trials, by number) not yet
        seen. A finished trial stays in its study for good, so False (start over) only if
        there are fewer than were seen."""
        new = len(finished) - len(self.seen)
        # New trials are mostly the latest, so look from the end and stop once all are found.
        for t in reversed(finished):
            if new <= 0:
                break
            if t.number not in self.seen:
                self.add(t)
                new -= 1
        self.commit()
        return new == 0

    def commit(self) -> None:
        """Append the rows added since the last commit to the arrays."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        obs, has_params = observation_rows([r[4] for r in rows], len(self.space))
        self.number = np.concatenate([self.number, [r[0] for r in rows]])
        self.complete = np.concatenate([self.complete, [r[1] for r in rows]])
        self.key = np.concatenate([self.key, [(r[2], r[3]) for r in rows]])
        self.obs = np.concatenate([self.obs, obs])
        self.has_params = np.concatenate([self.has_params, has_params])
        new = np.arange(len(self.number) - len(rows), len(self.number))
        # The trial number breaks ties, as Optuna's stable sort over trials by number does.
        complete = new[self.complete[new]]
        self.complete_order.add(complete, [self.key[:, 0], self.number])
        pruned = new[~self.complete[new]]
        self.pruned_order.add(pruned, [self.key[:, 0], self.key[:, 1], self.number])
        self.by_number.add(new, [self.number])

    def split(self, n_below: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the below and the above group, as Optuna's ``_split_trials``."""
        complete, pruned = self.complete_order.rows, self.pruned_order.rows
        n_complete = min(n_below, len(complete))
        n_pruned = min(max(0, n_below - n_complete), len(pruned))
        below = np.concatenate([complete[:n_complete], pruned[:n_pruned]])
        above = np.concatenate([complete[n_complete:], pruned[n_pruned:]])
        return below, above


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
        # Straight from the storage: hpo's worker keeps these lists until the study changes,
        # where Optuna's per-ask cache would filter every trial again.
        storage, study_id = study._storage, study._study_id
        finished = storage.get_all_trials(study_id, deepcopy=False, states=_FINISHED)
        history = self._history(study, search_space)
        if not history.catch_up(finished):  # not the study it saw: trust nothing kept
            self._histories.clear()
            return super()._sample(study, trial, search_space)
        running: list[FrozenTrial] = []
        if self._constant_liar:
            running = storage.get_all_trials(study_id, deepcopy=False, states=_RUNNING)
            running = [t for t in running if t.number != trial.number]

        if self._gamma is None:
            self._gamma = default_gamma
        below, above = history.split(self._gamma(len(finished)))
        liars = [
            (t.number, internal_row(search_space, self._get_params(t, study))) for t in running
        ]
        mpe_below = self._estimator(search_space, history, below, [])
        mpe_above = self._estimator(search_space, history, above, liars)

        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acquisition = self._compute_acquisition_func(samples, mpe_below, mpe_above)
        best = TPESampler._compare(samples, acquisition)
        return {name: d.to_external_repr(best[name]) for name, d in search_space.items()}

    def _history(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> _History:
        key = (study._study_id, study.study_name, tuple(search_space.items()))
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
        mpe_below: _ParzenEstimator,
        mpe_above: _ParzenEstimator,
    ) -> np.ndarray:
        # Optuna's, with its log densities computed faster (the same bits: hpo/search/_parzen.py)
        return log_pdf(mpe_below, samples) - log_pdf(mpe_above, samples)
