"""Creating, resuming, inspecting and deleting studies: the library behind the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import NoDatabase, SpecError, StorageError, StudyNotFound, UsageError
from hpo.spec import StudySpec, spec_from_dict
from hpo.storage import (
    Budget,
    StaleTrialRetry,
    fleet,
    logical_trial_number,
    mask,
    open_storage,
    resolve_url,
    state_counts,
    study_storage,
)

if TYPE_CHECKING:
    import optuna

SPEC_ATTR = "spec"  # study user attribute: shown by optuna-dashboard, read back by workers
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass
class Study:
    """An hpo study: its spec, its Optuna study and its budget, on one storage."""

    spec: StudySpec
    url: str
    optuna: optuna.Study
    budget: Budget

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def masked_url(self) -> str:
        return mask(self.url)


def create_study(spec: StudySpec, storage: str | None = None, *, force: bool = False) -> Study:
    """Create the study, or resume it when the stored spec matches (``force`` overwrites it).

    Resuming keeps every finished trial and counts it against the budget.
    """
    import optuna

    url = resolve_url(storage, spec.storage)
    rdb = _open(url, create=True)
    stored = _stored_spec(rdb, spec.name)
    new = _comparable(spec.to_dict())
    if stored is not None:
        diff = _diff(_comparable(stored), new)
        if diff and not force:
            raise SpecError(
                spec.source,
                None,
                None,
                f"study {spec.name!r} exists with a different spec ({'; '.join(diff[:5])}); "
                "use --force to replace the stored spec",
            )
        ostudy = optuna.load_study(
            study_name=spec.name,
            storage=study_storage(rdb),
            sampler=_sampler(spec),
            pruner=_pruner(spec),
        )
        if len(ostudy.directions) != len(spec.directions):
            raise SpecError(
                spec.source, "directions", list(spec.directions), "differs from the stored study"
            )
    else:
        ostudy = optuna.create_study(
            study_name=spec.name,
            storage=study_storage(rdb),
            directions=list(spec.directions),
            sampler=_sampler(spec),
            pruner=_pruner(spec),
            load_if_exists=True,
        )
    ostudy.set_user_attr(SPEC_ATTR, spec.to_dict())
    study = _study(spec, url, rdb, ostudy)
    study.budget.ensure(spec.n_trials)
    return study


def load_study(name: str, storage: str | None = None) -> Study:
    """Open an existing study by name, with the spec it was created with."""
    import optuna

    url = resolve_url(storage)
    try:
        rdb = _open(url)
    except NoDatabase:
        raise StudyNotFound(name, mask(url)) from None
    stored = _stored_spec(rdb, name)
    if stored is None:
        raise StudyNotFound(name, mask(url))
    try:
        spec = spec_from_dict(stored, source=f"study {name!r}", check_objective=False)
    except SpecError as e:
        raise UsageError(f"the spec stored with study {name!r} is invalid: {e}") from None
    spec = _with_storage(spec, url)
    ostudy = optuna.load_study(
        study_name=name, storage=study_storage(rdb), sampler=_sampler(spec), pruner=_pruner(spec)
    )
    return _study(spec, url, rdb, ostudy)


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    import optuna

    url = resolve_url(storage)
    rdb = _open(url)
    out = []
    for s in optuna.get_all_study_summaries(rdb, include_best_trial=False):
        out.append(
            {
                "name": s.study_name,
                "directions": [d.name.lower() for d in s.directions],
                "trials": s.n_trials,
                "created": s.datetime_start.isoformat(timespec="seconds")
                if s.datetime_start
                else None,
                "hpo": SPEC_ATTR in s.user_attrs,
            }
        )
    return out


def delete_study(name: str, storage: str | None = None) -> None:
    import optuna

    study = load_study(name, storage)
    study.budget.delete()
    optuna.delete_study(study_name=name, storage=study.optuna._storage)


def request_stop(name: str, storage: str | None = None, *, now: bool = False) -> Study:
    """Ask every worker of the study, on every machine, to stop."""
    study = load_study(name, storage)
    study.budget.request_stop("now" if now else "graceful")
    return study


@dataclass(frozen=True)
class Status:
    name: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    n_trials: int | None
    counts: Mapping[str, int]
    best: optuna.trial.FrozenTrial | None
    best_trials: tuple[optuna.trial.FrozenTrial, ...]
    running: tuple[optuna.trial.FrozenTrial, ...]
    workers: tuple[Mapping[str, Any], ...]
    stop: str | None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED)


def status(study: Study) -> Status:
    from optuna.trial import TrialState

    trials = study.optuna.get_trials(deepcopy=False)
    counts = state_counts(trials)
    n_trials, _, stop = study.budget.state()
    best_trials: tuple[optuna.trial.FrozenTrial, ...] = ()
    best = None
    if counts.get("COMPLETE"):
        if len(study.spec.directions) == 1:
            best = study.optuna.best_trial
            best_trials = (best,)
        else:
            best_trials = tuple(study.optuna.best_trials)
    return Status(
        name=study.name,
        metrics=study.spec.metrics,
        directions=study.spec.directions,
        n_trials=n_trials,
        counts=dict(counts),
        best=best,
        best_trials=best_trials,
        running=tuple(t for t in trials if t.state == TrialState.RUNNING),
        workers=tuple(fleet(study.budget.engine, study.budget.study_id)),
        stop=stop,
    )


def best_params(study: Study) -> dict[str, Any]:
    """The best trial as a document that can be fed back as ``fixed:`` or to retrain."""
    st = status(study)
    if not st.best_trials:
        raise UsageError(f"study {study.name!r} has no completed trial yet")
    if st.best is not None:
        t = st.best
        return {
            "study": study.name,
            "trial": t.number,
            study.spec.metrics[0]: t.value,
            "params": dict(t.params),
            "fixed": dict(study.spec.fixed),
        }
    return {
        "study": study.name,
        "pareto_front": [
            {
                "trial": t.number,
                "values": dict(zip(study.spec.metrics, t.values, strict=True)),
                "params": dict(t.params),
            }
            for t in st.best_trials
        ],
        "fixed": dict(study.spec.fixed),
    }


def trial_rows(study: Study) -> Iterator[dict[str, Any]]:
    """One flat, JSON-ready row per trial: the export format."""
    for t in study.optuna.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration is not None else None
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "values": t.values,
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "duration_s": duration,
            "epochs_run": t.user_attrs.get("epochs_run", len(t.intermediate_values) or None),
            "params": dict(t.params),
            "user_attrs": dict(t.user_attrs),
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
            "retry_of": t.system_attrs.get("failed_trial"),
        }
        yield json.loads(json.dumps(row, default=str, allow_nan=True))


def retrain_trial(
    study: Study,
    *,
    number: int | None = None,
    params: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    device: str | None = None,
) -> Path:
    """Train one configuration of the study to completion; returns its manifest's path.

    By default the best trial's; ``number`` picks another trial, ``params`` (as written by
    ``hpo best``) a configuration of your own. The model checkpoints and ``manifest.json``
    go to ``out_dir`` (default ``runs/<study>/trial-<n>``).
    """
    from hpo.spec import resolve_objective
    from hpo.study._retrain import retrain

    spec = study.spec
    logical = 0
    if params is None:
        if number is None:
            trial = _best_single(study)
        else:
            trials = study.optuna.get_trials(deepcopy=False)
            if not 0 <= number < len(trials):
                raise UsageError(f"study {study.name!r} has no trial {number}")
            trial = trials[number]
        logical = logical_trial_number(trial)
        params = dict(trial.params)
        number = trial.number
    merged = {**spec.fixed, **params}
    default_dir = (
        Path("runs") / study.name / (f"trial-{number}" if number is not None else "custom")
    )
    return retrain(
        resolve_objective(spec.objective, source=f"study {study.name!r}"),
        merged,
        metrics=spec.metrics,
        directions=spec.directions,
        out_dir=Path(out_dir) if out_dir is not None else default_dir,
        manifest_extra={"study": study.name, "trial": number, "spec": spec.to_dict()},
        device=device,
        seed=spec.trial_seed(logical),
    )


def _best_single(study: Study) -> optuna.trial.FrozenTrial:
    st = status(study)
    if st.best is None:
        if st.best_trials:
            raise UsageError(
                f"study {study.name!r} has several objectives; pick a Pareto trial with --trial"
            )
        raise UsageError(f"study {study.name!r} has no completed trial yet")
    return st.best


# ---------------------------------------------------------------------------------------


def _open(url: str, *, create: bool = False) -> optuna.storages.RDBStorage:
    return open_storage(url, create=create)


def _study(
    spec: StudySpec, url: str, rdb: optuna.storages.RDBStorage, ostudy: optuna.Study
) -> Study:
    budget = Budget(rdb.engine, rdb.get_study_id_from_name(spec.name))
    # Heartbeats are configured from the spec, which is only known once the study is read,
    # so they are set on the open storage rather than passed to its constructor.
    rdb.heartbeat_interval = spec.retry.heartbeat_interval
    rdb.grace_period = spec.retry.grace_period
    rdb.heartbeat_stale_trial_callback = StaleTrialRetry(spec.retry.max_retries)
    rdb.failed_trial_callback = rdb.heartbeat_stale_trial_callback
    return Study(spec=spec, url=url, optuna=ostudy, budget=budget)


def _stored_spec(rdb: optuna.storages.RDBStorage, name: str) -> dict[str, Any] | None:
    try:
        study_id = rdb.get_study_id_from_name(name)
    except KeyError:
        return None
    except Exception as e:
        raise StorageError(f"cannot read {mask(rdb.url)!r}: {type(e).__name__}") from None
    attrs = rdb.get_study_user_attrs(study_id)
    if SPEC_ATTR not in attrs:
        raise UsageError(f"study {name!r} exists but was not created by hpo; use a different name")
    return attrs[SPEC_ATTR]


def _with_storage(spec: StudySpec, url: str) -> StudySpec:
    from dataclasses import replace

    return replace(spec, storage=url)


def _comparable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("storage",)}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: added {new[k]!r}")
            elif k not in new:
                out.append(f"{key}: removed (was {old[k]!r})")
            else:
                out.extend(_diff(old[k], new[k], key))
        return out
    if _same(old, new):
        return []
    return [f"{prefix}: {old!r} -> {new!r}"]


def _same(a: Any, b: Any) -> bool:
    # JSON round trips turn tuples into lists and 1.0 into 1; compare by value.
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    from hpo.search import make_sampler

    return make_sampler(spec)


def _pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    from hpo.search import make_pruner

    return make_pruner(spec.pruner)
