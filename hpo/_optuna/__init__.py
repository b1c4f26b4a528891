"""The only place hpo imports Optuna's private names: one adapter module per concern.

hpo's incremental TPE sampler, its Hyperband pruner and the worker's batching storage build on
Optuna internals (the Parzen estimator, successive halving's rung helpers, the RDB models and
``_CachedStorage``). Those change between Optuna releases without notice, so they are used only
on the releases this module lists, each of which CI has run Optuna's own tests for these classes
against (``make optuna-contract``). On any other release, or with ``HPO_OPTUNA_INTERNALS=off``,
hpo uses Optuna's stock ``TPESampler``, ``HyperbandPruner`` and plain write-through
``RDBStorage`` instead: slower at large studies, with every guarantee (exact budget, retries)
intact, since those live in hpo's own tables and locks, not in the internals.
"""

from __future__ import annotations

import functools
import logging
import os

import optuna

__all__ = ["INTERNALS_ENV", "TESTED_OPTUNA", "internals_supported", "optuna_release"]

#: The Optuna releases (major.minor) whose internals hpo was tested against.
TESTED_OPTUNA: tuple[str, ...] = ("5.1",)
#: Set to "off" to use Optuna's stock classes whatever the release.
INTERNALS_ENV = "HPO_OPTUNA_INTERNALS"

log = logging.getLogger("hpo")


def optuna_release(version: str | None = None) -> str:
    """``major.minor`` of an Optuna version string (the installed one by default)."""
    parts = (version or optuna.__version__).split(".")
    return ".".join(parts[:2])


@functools.cache
def internals_supported() -> bool:
    """Whether hpo may use its subclasses of Optuna internals; says once in the log if not."""
    if os.environ.get(INTERNALS_ENV, "").lower() == "off":
        log.info("%s=off: using Optuna's stock TPE, Hyperband and storage", INTERNALS_ENV)
        return False
    if optuna_release() not in TESTED_OPTUNA:
        log.warning(
            "Optuna %s is not one hpo was tested with (%s): using Optuna's stock TPE, Hyperband "
            "and storage; results are the same, large studies slower",
            optuna.__version__,
            ", ".join(TESTED_OPTUNA),
        )
        return False
    return True
