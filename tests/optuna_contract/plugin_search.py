"""pytest plugin: Optuna's own TPE and Hyperband tests, run against hpo's classes.

Loaded with ``-p plugin_search`` (this directory on ``PYTHONPATH``) by ``make optuna-contract``,
in the directory ``fetch.py`` extracted the installed Optuna's tests to. Before any of Optuna's
test modules is imported, it puts hpo's classes where those tests take Optuna's from:

- ``optuna.samplers.TPESampler`` is :class:`hpo.search._tpe.IncrementalTPESampler`;
- ``optuna.pruners.HyperbandPruner`` is :class:`hpo.search._hyperband.HyperbandPruner`;
- ``_MixtureOfProductDistribution.log_pdf`` is :func:`hpo.search._parzen.mixture_log_pdf`, so
  Optuna's tests of the Parzen estimator and its distributions check hpo's log density.

The few tests that cannot hold for hpo's classes by design are deselected here, from the one
list :data:`DESELECTED`; ``EXCEPTIONS.md`` gives the reason for each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import optuna.pruners
import optuna.samplers
import optuna.samplers._tpe
import pytest
from optuna.samplers._tpe.probability_distributions import _MixtureOfProductDistribution

from hpo.search._hyperband import HyperbandPruner
from hpo.search._parzen import mixture_log_pdf
from hpo.search._tpe import IncrementalTPESampler

#: Node ids (relative to the extracted sdist) of Optuna tests that do not apply to hpo's
#: classes, each explained in EXCEPTIONS.md.
DESELECTED: tuple[str, ...] = ()


def _log_pdf(self: _MixtureOfProductDistribution, x: np.ndarray) -> np.ndarray:
    return mixture_log_pdf(self, x)


def _substitute() -> None:
    optuna.samplers.TPESampler = IncrementalTPESampler  # type: ignore[misc]
    optuna.samplers._tpe.TPESampler = IncrementalTPESampler  # type: ignore[misc,attr-defined]
    # Some tests patch ``optuna.samplers.<type(sampler).__name__>.<method>``: hpo's class by
    # its own name there too.
    optuna.samplers.IncrementalTPESampler = IncrementalTPESampler  # type: ignore[attr-defined]
    optuna.pruners.HyperbandPruner = HyperbandPruner  # type: ignore[misc]
    for name, cls in (("TPESampler", IncrementalTPESampler), ("HyperbandPruner", HyperbandPruner)):
        if hasattr(optuna, name):  # a top-level alias, should a release add one
            setattr(optuna, name, cls)
    _MixtureOfProductDistribution.log_pdf = _log_pdf  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _substitute()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"optuna-contract: Optuna {optuna.__version__}'s tests against hpo's "
        f"{IncrementalTPESampler.__name__}, {HyperbandPruner.__name__} and Parzen log density"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    kept: list[Any] = []
    dropped: list[Any] = []
    for item in items:
        (dropped if item.nodeid in DESELECTED else kept).append(item)
    missing = set(DESELECTED) - {item.nodeid for item in dropped}
    selected_files = {item.nodeid.split("::")[0] for item in items}
    # A listed test that no longer exists (renamed in a new release) is an error: the list
    # must stay exact, or it would hide nothing and explain nothing.
    stale = [n for n in missing if n.split("::")[0] in selected_files]
    if stale:
        raise pytest.UsageError(f"DESELECTED names tests Optuna no longer has: {stale}")
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
