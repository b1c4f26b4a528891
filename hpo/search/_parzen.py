"""Optuna's Parzen-estimator log density, to the last bit, at a fraction of its cost.

TPE scores its candidates (24 by default) against every kernel of the "above" mixture, and
that mixture has a kernel per finished trial: at 10,000 trials Optuna's
``_MixtureOfProductDistribution.log_pdf`` was two thirds of an ask. It builds candidates x
kernels x parameters arrays, picks from them with ``np.select`` and sums over a two-element
axis, each a pass over memory far larger than the CPU's cache.

:func:`log_pdf` computes the same thing kernel block by kernel block, in buffers that stay in
the cache. Every element goes through the same floating-point operations on the same values
in the same order as in Optuna (only exact rewrites: ``-(z**2) / 2.0`` as ``z * z * -0.5``,
numpy's short sum over the parameters as the same sums in the same order), and the per-kernel
parts (bounds, truncation normalisers, logs of the kernel widths) are Optuna's own arrays, so
the result is Optuna's, bit for bit, and TPE samples the same points
(``tests/test_incremental.py`` compares the two on many mixtures).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpo._optuna._tpe import (
    NORM_PDF_LOG_C,
    BatchedCategorical,
    Mixture,
    ParzenEstimator,
    log_gauss_mass,
    log_gauss_mass_unique,
    unique_inverse_2d,
)

# Kernels per block: a candidates x block array is 24 x 1024 doubles (192 KiB) by default, so
# a block's few buffers stay in a core's L2 cache.
_BLOCK = 1024
_EXP_ZERO_BELOW = -746.0


def log_pdf(estimator: ParzenEstimator, samples: dict[str, np.ndarray]) -> np.ndarray:
    """``estimator.log_pdf(samples)``, the same bits."""
    if type(estimator) is not ParzenEstimator:  # a subclass may compute it differently
        return estimator.log_pdf(samples)
    return mixture_log_pdf(estimator._mixture_distribution, estimator._transform(samples))


def mixture_log_pdf(mixture: Mixture, x: np.ndarray) -> np.ndarray:
    """``_MixtureOfProductDistribution.log_pdf(x)``: per candidate and kernel, the discrete
    and categorical parameters' terms in their order, then the continuous ones' sum, then the
    log weight; then a log-sum-exp over the kernels, on the whole array as Optuna does."""
    n_kernels = len(mixture.weights)
    parts: list[_Categorical | _Discrete] = []
    continuous: list[int] = []
    for i, d in enumerate(mixture.distributions):
        if isinstance(d, BatchedCategorical):
            parts.append(_Categorical(d, x[:, i]))
        elif d.step == 0.0:
            continuous.append(i)
        else:
            parts.append(_Discrete(d, x[:, i]))
    cont = _Continuous(mixture, x, continuous) if continuous else None
    log_weights = np.log(mixture.weights[np.newaxis])
    weighted_log_pdf = np.empty((len(x), n_kernels))
    scratch = np.empty((len(x), min(_BLOCK, n_kernels)))
    for lo in range(0, n_kernels, _BLOCK):
        hi = min(lo + _BLOCK, n_kernels)
        block = weighted_log_pdf[:, lo:hi]
        block[...] = 0.0  # Optuna adds every term to zeros
        buf = scratch[:, : hi - lo]
        for part in parts:
            part.add_to(block, buf, lo, hi)
        if cont is not None:
            block += cont.block(lo, hi)
        block += log_weights[:, lo:hi]
    max_ = weighted_log_pdf.max(axis=1)
    # As Optuna: avoid (-inf) - (-inf) where the probability is zero.
    max_[np.isneginf(max_)] = 0
    weighted_log_pdf -= max_[:, None]
    with np.errstate(divide="ignore"):
        return np.log(_exp(weighted_log_pdf).sum(axis=1)) + max_


def _exp(v: np.ndarray) -> np.ndarray:
    """``np.exp(v)``, the same bits, computed only where it is not 0.

    Below -746, exp is 0 (less than half the smallest subnormal), and numpy's exp is several
    times slower on such inputs (the CPU's underflow handling); far from the best kernel,
    most candidate x kernel terms are there.
    """
    flat = v.ravel()
    nonzero = np.flatnonzero(~(flat < _EXP_ZERO_BELOW))  # NaN included: exp(NaN) is NaN
    out = np.zeros_like(flat)
    out[nonzero] = np.exp(flat[nonzero])
    return out.reshape(v.shape)


class _Categorical:
    """log(weight of each candidate's choice) under each kernel."""

    def __init__(self, d: BatchedCategorical, xi: np.ndarray) -> None:
        self.weights_t = d.weights.T  # choices x kernels
        self.choice = xi.astype(np.int64)

    def add_to(self, block: np.ndarray, buf: np.ndarray, lo: int, hi: int) -> None:
        picked = self.weights_t[self.choice, lo:hi]
        block += np.log(picked, out=buf)


class _Discrete:
    """A stepped parameter: the candidate's log mass over its step under each kernel, less
    the kernel's log mass within the bounds, from the few distinct candidates and kernels."""

    def __init__(self, d: Any, xi: np.ndarray) -> None:
        step = d.step
        xi_uniq, xi_inv = np.unique(xi, return_inverse=True)
        mu_uniq, sigma_uniq, self.inv = unique_inverse_2d(d.mu, d.sigma)
        left = np.log(xi_uniq - step / 2) if d.is_log else (xi_uniq - step / 2)
        right = np.log(xi_uniq + step / 2) if d.is_log else (xi_uniq + step / 2)
        mass = log_gauss_mass_unique(
            (left[:, np.newaxis] - mu_uniq) / sigma_uniq,
            (right[:, np.newaxis] - mu_uniq) / sigma_uniq,
        )
        self.rows = mass[xi_inv]  # candidates x distinct kernels
        self.norm = log_gauss_mass(
            (d.adapted_low - mu_uniq) / sigma_uniq, (d.adapted_high - mu_uniq) / sigma_uniq
        )

    def add_to(self, block: np.ndarray, buf: np.ndarray, lo: int, hi: int) -> None:
        inv = self.inv[lo:hi]
        block += np.take(self.rows, inv, axis=1, out=buf)
        block -= self.norm[inv]


class _Continuous:
    """The continuous parameters' truncated-normal log densities, summed over the parameters.

    As ``_truncnorm.logpdf``: (-(z**2) / 2.0 - log sqrt(2 pi)) - log mass - log sigma, z the
    candidate standardised by the kernel; -inf outside the bounds, NaN for an empty range.
    """

    def __init__(self, mixture: Mixture, x: np.ndarray, columns: list[int]) -> None:
        # The truncated normals of these columns (no categorical among them).
        dists: list[Any] = [mixture.distributions[i] for i in columns]
        # Optuna's own per-kernel arrays (kernels x parameters), computed as it computes them.
        self.mus = np.asarray([d.mu for d in dists]).T
        self.sigmas = np.asarray([d.sigma for d in dists]).T
        lows = np.asarray([d.adapted_low for d in dists])
        highs = np.asarray([d.adapted_high for d in dists])
        self.a = (lows - self.mus) / self.sigmas
        self.b = (highs - self.mus) / self.sigmas
        self.log_mass = log_gauss_mass(self.a, self.b)
        self.log_sigma = np.log(self.sigmas)
        self.empty = self.a == self.b
        self.x = [
            np.log(x[:, i]) if d.is_log else x[:, i] for i, d in zip(columns, dists, strict=True)
        ]
        # A candidate within the bounds is within every kernel's standardised bounds too
        # (rounding is monotonic): only one outside needs Optuna's comparisons.
        self.outside = [
            ~((xj >= lo) & (xj <= hi)) for xj, lo, hi in zip(self.x, lows, highs, strict=True)
        ]
        n = min(_BLOCK, len(self.mus))
        self.term = np.empty((len(x), n))
        self.total = np.empty((len(x), n))
        # numpy sums up to 7 terms in order from 0.0, and 8 or more pairwise: those on
        # Optuna's layout, by numpy itself.
        self.stacked = np.empty((len(x), n, len(columns))) if len(columns) >= 8 else None

    def block(self, lo: int, hi: int) -> np.ndarray:
        """The sum over the parameters for kernels lo..hi (a buffer, valid until the next)."""
        total = self.total[:, : hi - lo]
        total[...] = 0.0
        for j, xj in enumerate(self.x):
            term = self.term[:, : hi - lo]
            np.subtract(xj[:, np.newaxis], self.mus[lo:hi, j], out=term)
            term /= self.sigmas[lo:hi, j]  # z
            outside = self.outside[j]
            below, above = self.a[lo:hi, j], self.b[lo:hi, j]
            out_of_range = (term[outside] < below) | (term[outside] > above)
            np.square(term, out=term)
            term *= -0.5  # -(z**2) / 2.0: halving and negating are exact
            term -= NORM_PDF_LOG_C
            term -= self.log_mass[lo:hi, j]
            term -= self.log_sigma[lo:hi, j]
            if out_of_range.any():
                term[outside] = np.where(out_of_range, -np.inf, term[outside])
            term[:, self.empty[lo:hi, j]] = np.nan
            if self.stacked is not None:
                self.stacked[:, : hi - lo, j] = term
            else:
                total += term
        if self.stacked is not None:
            return self.stacked[:, : hi - lo].sum(axis=-1)
        return total
