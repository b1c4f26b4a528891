"""The adapter for Optuna's storage internals: the only module of hpo that names them.

hpo's worker storage (``hpo.storage.WorkerStorage``) batches its trials' writes into Optuna's
RDB tables and serves reads from Optuna's trial cache. For that it relies on, per name below:

- ``optuna.storages._CachedStorage``: Optuna's trial cache over ``RDBStorage``, the class
  ``optuna.storages.get_storage`` wraps every RDB storage in. Both of hpo's storages subclass
  it: the write-through fallback only for its public methods (and so for the heartbeat
  interface, which Optuna's stale-trial check requires), the worker storage also for the
  private state that :class:`CachedRDB` names (``_CACHE_ATTRS``: its backend, lock, per-study
  trials and distributions, trial-id index, incremental read and cache hook);
- ``optuna.storages._cached_storage._StudyInfo``: the cache's per-study record, only to check
  that it still has the two fields read (``trials``, ``param_distribution``);
- ``optuna.storages._rdb.models``: the SQLAlchemy tables of the RDB schema (one per trial
  field) and their stored representation of infinite and NaN values;
- ``FrozenTrial._trial_id``: a trial's database id (no public accessor exists).

Whether they may be used at all is decided once per open storage by :func:`storage_supported`:
the Optuna release must be one hpo was tested with (``hpo._optuna.internals_supported``), the
names must be there, and the database's schema must be one hpo was tested with. Otherwise hpo
uses its write-through storage, which needs none of the internals.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

# Optuna's trial cache (see the module docstring). Exported in optuna.storages.__all__ and
# built by optuna.storages.get_storage for every RDB URL, so it is what plain Optuna runs on.
from optuna.storages import _CachedStorage as CachedStorage
from optuna.trial import FrozenTrial

from hpo._optuna import internals_supported

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import RDBStorage

try:
    # The cache's per-study record: only to check it still has the fields CachedRDB reads.
    from optuna.storages._cached_storage import _StudyInfo

    # The RDB schema's tables and their value encodings (inf, -inf, nan as separate types).
    from optuna.storages._rdb import models
except ImportError:  # an Optuna without them: storage_supported() says False
    models = _StudyInfo = None  # type: ignore[assignment,misc]

__all__ = [
    "TESTED_ALEMBIC",
    "TESTED_SCHEMA",
    "CachedRDB",
    "CachedStorage",
    "Tables",
    "copy_trial",
    "intermediate_row",
    "storage_supported",
    "trial_id",
    "value_row",
]

log = logging.getLogger("hpo")

#: RDB schemas hpo's batched writes were tested on: ``version_info.schema_version`` and the
#: alembic revision (Optuna 5.1's). A database at another one gets the write-through storage.
TESTED_SCHEMA: tuple[int, ...] = (12,)
TESTED_ALEMBIC: tuple[str, ...] = ("v3.2.0.a",)

# _CachedStorage's private state that CachedRDB reads: (attribute, what hpo relies on).
_CACHE_ATTRS = (
    ("_backend", "the RDBStorage it wraps"),
    ("_lock", "the lock around its cache"),
    ("_studies", "study id -> _StudyInfo (.trials: number -> FrozenTrial; .param_distribution)"),
    ("_trial_id_to_study_id_and_number", "trial id -> (study id, number) of cached trials"),
    ("_read_trials_from_remote_storage", "reads the trials that changed since the last read"),
    ("_add_trials_to_cache", "called with every trial read or created"),
)
_MODELS = (
    "TrialModel",
    "TrialParamModel",
    "TrialUserAttributeModel",
    "TrialSystemAttributeModel",
    "TrialIntermediateValueModel",
    "TrialValueModel",
    "TrialHeartbeatModel",
    "VersionInfoModel",
)

_said: set[str] = set()
_said_lock = threading.Lock()


def trial_id(trial: FrozenTrial) -> int:
    """A frozen trial's database id (``FrozenTrial._trial_id``: no public accessor)."""
    return trial._trial_id


def copy_trial(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose every mutable field (params, attributes, reports, values) is its own.

    The field values themselves are shared: a write replaces a value, never changes it.
    """
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=dict(trial.user_attrs),
        system_attrs=dict(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial_id(trial),
    )


def _internals_present(rdb: RDBStorage) -> str | None:
    """None if every internal name hpo relies on is there; else the first one missing."""
    if models is None or _StudyInfo is None:
        return "optuna.storages._rdb.models"
    for name in _MODELS:
        if not hasattr(models, name):
            return f"models.{name}"
    try:
        probe, info = CachedStorage(rdb), _StudyInfo()
    except Exception:
        return "_CachedStorage(backend)"
    for attr, _ in _CACHE_ATTRS:
        if not hasattr(probe, attr):
            return f"_CachedStorage.{attr}"
    for attr in ("trials", "param_distribution"):
        if not hasattr(info, attr):
            return f"_StudyInfo.{attr}"
    return None


def storage_supported(rdb: RDBStorage) -> bool:
    """Whether the worker storage may batch into this database; says why not once."""
    if not internals_supported():
        return False  # hpo._optuna said why
    missing = _internals_present(rdb)
    if missing is not None:
        _say_once(f"Optuna {_version()} has no {missing}: using Optuna's write-through storage")
        return False
    version, revision = _schema(rdb)
    if version not in TESTED_SCHEMA or revision not in TESTED_ALEMBIC:
        _say_once(
            f"the database's Optuna schema (version {version}, revision {revision}) is not one "
            f"hpo was tested with (version {TESTED_SCHEMA[-1]}, revision {TESTED_ALEMBIC[-1]}): "
            "using Optuna's write-through storage"
        )
        return False
    return True


def _schema(rdb: RDBStorage) -> tuple[int | None, str | None]:
    """(``version_info.schema_version``, alembic revision) of the database."""
    assert models is not None
    info = models.VersionInfoModel.__table__
    with rdb.engine.connect() as con:
        version = con.execute(sa.select(info.c.schema_version)).scalar()
    try:
        revision: str | None = rdb.get_current_version()
    except Exception:  # no alembic table: a schema hpo was not tested with
        revision = None
    return version, revision


def _version() -> str:
    import optuna

    return optuna.__version__


def _say_once(message: str) -> None:
    with _said_lock:
        if message in _said:
            return
        _said.add(message)
    log.warning("%s", message)


class Tables:
    """Optuna's RDB tables that the worker storage writes (``models.*Model.__table__``)."""

    def __init__(self) -> None:
        assert models is not None
        self.trials: sa.Table = models.TrialModel.__table__
        self.params: sa.Table = models.TrialParamModel.__table__
        self.user_attrs: sa.Table = models.TrialUserAttributeModel.__table__
        self.system_attrs: sa.Table = models.TrialSystemAttributeModel.__table__
        self.intermediate: sa.Table = models.TrialIntermediateValueModel.__table__
        self.values: sa.Table = models.TrialValueModel.__table__
        self.heartbeats: sa.Table = models.TrialHeartbeatModel.__table__


def value_row(trial_id: int, objective: int, value: float) -> dict[str, Any]:
    """A ``trial_values`` row, with Optuna's encoding of infinities."""
    assert models is not None
    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
    return {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}


def intermediate_row(trial_id: int, step: int, value: float) -> dict[str, Any]:
    """A ``trial_intermediate_values`` row, with Optuna's encoding of infinities and NaN."""
    assert models is not None
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    return {
        "trial_id": trial_id,
        "step": step,
        "intermediate_value": stored,
        "intermediate_value_type": kind,
    }


class CachedRDB(CachedStorage):
    """Optuna's trial cache, with its private state (``_CACHE_ATTRS``) under hpo's names.

    Subclasses see every trial the cache takes in through :meth:`_cached`.
    """

    @property
    def rdb(self) -> RDBStorage:
        return self._backend

    @property
    def cache_lock(self) -> threading.Lock:
        return self._lock

    def cached_trials(self, study_id: int) -> dict[int, FrozenTrial]:
        """The cache's own trials of a study, by number (the dict itself, not a copy)."""
        return self._studies[study_id].trials

    def cached_distributions(self, study_id: int) -> dict[str, BaseDistribution]:
        """The distribution each parameter was first stored with, as far as this process knows."""
        return self._studies[study_id].param_distribution

    def cached_key(self, trial_id: int) -> tuple[int, int] | None:
        """(study id, number) of a cached trial."""
        return self._trial_id_to_study_id_and_number.get(trial_id)

    def known_study_ids(self) -> list[int]:
        return list(self._studies)

    def read_changed(self, study_id: int) -> None:
        """Read the trials that changed since the last read into the cache."""
        self._read_trials_from_remote_storage(study_id)

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        super()._add_trials_to_cache(study_id, trials)
        self._cached(study_id, trials)

    def _cached(self, study_id: int, trials: list[FrozenTrial]) -> None:
        """Called (under the cache lock) with the trials the cache took in."""

    def replace_cached(self, study_id: int, trial: FrozenTrial) -> None:
        """Put ``trial`` in the cache in place of the cached trial with its number."""
        self._studies[study_id].trials[trial.number] = trial
