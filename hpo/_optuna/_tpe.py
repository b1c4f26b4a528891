"""Optuna's TPE internals behind hpo's incremental TPE (``hpo/search/_tpe.py``, ``_parzen.py``).

Imported only when :func:`hpo._optuna.internals_supported` holds (``hpo.search.make_sampler``
imports the sampler lazily), so an Optuna release that renamed one of these cannot break hpo's
import: hpo then runs Optuna's stock ``TPESampler``. ``make optuna-contract`` runs Optuna's own
TPE tests against hpo's sampler on each release listed in ``TESTED_OPTUNA``.

Besides the names below, hpo's subclass of ``TPESampler`` relies on these of its attributes:
``_sample(study, trial, search_space)`` (overridden: the one place TPE turns the study's trials
into a sample), ``_compute_acquisition_func`` (overridden), ``_compare`` (the argmax),
``_get_params(trial, study)`` (a running trial's params for the constant liar),
``_constant_liar``, ``_constraints_func``, ``_gamma``, ``_rng.rng``, ``_n_ei_candidates``,
``_parzen_estimator_cls`` and ``_parzen_estimator_parameters``; and on ``Study._storage`` and
``Study._study_id`` to read the trials straight from the storage, as ``Study._get_trials`` does.
"""

from __future__ import annotations

from optuna.samplers._tpe._truncnorm import (
    # ``_log_gauss_mass(a, b)``: log of the standard normal's mass in [a, b] (the truncation
    # normaliser), elementwise; hpo calls Optuna's own, not scipy's, so the bits match.
    _log_gauss_mass as log_gauss_mass,
)
from optuna.samplers._tpe._truncnorm import (
    # log sqrt(2 pi), the constant term of a normal's log density, as Optuna subtracts it.
    _norm_pdf_logC as NORM_PDF_LOG_C,
)
from optuna.samplers._tpe.parzen_estimator import (
    # The estimator TPE builds from a group of trials: hpo builds it the same way (its
    # ``(observations, search_space, parameters)`` constructor, via the sampler's
    # ``_parzen_estimator_cls``), samples from it (``sample(rng, n)``) and reads its
    # ``_mixture_distribution`` and ``_transform(samples)`` to compute the log density faster.
    _ParzenEstimator as ParzenEstimator,
)
from optuna.samplers._tpe.probability_distributions import (
    # A categorical parameter's part of the mixture: ``weights``, kernels x choices.
    _BatchedCategoricalDistributions as BatchedCategorical,
)
from optuna.samplers._tpe.probability_distributions import (
    # The log mass of a stepped parameter's interval from the distinct (candidate, kernel)
    # pairs only, as Optuna's log_pdf computes it.
    _log_gauss_mass_unique as log_gauss_mass_unique,
)
from optuna.samplers._tpe.probability_distributions import (
    # The mixture: ``weights`` (one per kernel) and ``distributions`` (one per parameter, in
    # the search space's order): categorical, or truncated normal with ``mu``, ``sigma``
    # (per kernel), ``adapted_low``/``adapted_high``, ``step`` (0.0 when continuous) and
    # ``is_log``. hpo's log density reproduces its ``log_pdf`` bit for bit.
    _MixtureOfProductDistribution as Mixture,
)
from optuna.samplers._tpe.probability_distributions import (
    # The distinct (mu, sigma) pairs of a parameter's kernels and each kernel's index among
    # them, as Optuna's log_pdf groups them.
    _unique_inverse_2d as unique_inverse_2d,
)
from optuna.samplers._tpe.sampler import (
    # The number of "below" trials out of n when ``gamma`` is not given (single objective).
    default_gamma,
)

__all__ = [
    "NORM_PDF_LOG_C",
    "BatchedCategorical",
    "Mixture",
    "ParzenEstimator",
    "default_gamma",
    "log_gauss_mass",
    "log_gauss_mass_unique",
    "unique_inverse_2d",
]
