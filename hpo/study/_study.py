"""Creating, resuming, inspecting and deleting studies: the library behind the CLI."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo._optuna._study import storage_of
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
    study_checkpoint_dir,
    study_storage,
)
from hpo.study._summary import RATE_WINDOW_S, StudySummary, summarize

if TYPE_CHECKING:
    import optuna

SPEC_ATTR = "spec"  # study user attribute: shown by optuna-dashboard, read back by workers


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
    from optuna.study import StudyDirection

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
            directions=[StudyDirection[d.upper()] for d in spec.directions],
            sampler=_sampler(spec),
            pruner=_pruner(spec),
            load_if_exists=True,
        )
    ostudy.set_user_attr(SPEC_ATTR, spec.to_dict())
    # Named axes in optuna-dashboard and Optuna's plots; also set on resume, for studies
    # created before hpo set them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ostudy.set_metric_names(list(spec.metrics))
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


@dataclass(frozen=True)
class Deleted:
    """What ``delete_study`` did with the study's checkpoints on this machine."""

    checkpoints: Path  # where they are (or were)
    removed: bool
    note: str  # one line for the user: what was removed or kept, and why


def delete_study(
    name: str, storage: str | None = None, *, checkpoint_dir: str | None = None
) -> Deleted:
    """Delete the study, and its checkpoints under ``checkpoint_dir`` (default: the spec's).

    The checkpoint directory is per machine (or a mount several share): only what this
    machine sees is removed. A study created before studies had an identity kept its
    checkpoints under its bare name, which a study of the same name in another storage may
    share: those are kept, and the note says where they are.
    """
    import shutil

    import optuna

    study = load_study(name, storage)
    uid = study.budget.uid()
    where = study_checkpoint_dir(checkpoint_dir or study.spec.checkpoint_dir, name, uid)
    study.budget.delete()
    optuna.delete_study(study_name=name, storage=storage_of(study.optuna))
    if uid is None:
        note = (
            f"kept checkpoints at {where}: the study predates per-study checkpoint "
            "directories, and another study of the same name may use them"
        )
        return Deleted(where, False, note if where.exists() else f"no checkpoints at {where}")
    if not where.exists():
        return Deleted(where, False, f"no checkpoints at {where} on this machine")
    shutil.rmtree(where, ignore_errors=True)
    note = f"removed checkpoints at {where} (on this machine; other machines keep their own)"
    return Deleted(where, True, note)


def request_stop(name: str, storage: str | None = None, *, now: bool = False) -> Study:
    """Ask every worker of the study, on every machine, to stop."""
    study = load_study(name, storage)
    study.budget.request_stop("now" if now else "graceful")
    return study


@dataclass(frozen=True)
class Status:
    """What `hpo status` shows: the study summary and the worker fleet."""

    summary: StudySummary
    workers: tuple[Mapping[str, Any], ...]


def status(study: Study) -> Status:
    return Status(
        summary=study_summary(study, window_s=None),
        workers=tuple(
            fleet(study.budget.engine, study.budget.study_id, grace_s=study.spec.retry.grace_period)
        ),
    )


def best_params(study: Study) -> dict[str, Any]:
    """The best trial as a document that can be fed back as ``fixed:`` or to retrain."""
    s = study_summary(study, window_s=None)
    if not s.best_trials:
        raise UsageError(f"study {study.name!r} has no completed trial yet")
    if s.best is not None:
        t = s.best
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
            for t in s.best_trials
        ],
        "fixed": dict(study.spec.fixed),
    }


def trial_rows(study: Study) -> Iterator[dict[str, Any]]:
    """One flat, JSON-ready row per trial: the export format."""
    s = study_summary(study, window_s=None)
    for t in s.trials:
        duration = t.duration.total_seconds() if t.duration is not None else None
        row: dict[str, Any] = {
            "number": t.number,
            "logical_trial": logical_trial_number(t),
            "outcome": s.outcomes[t.number],  # the word status and the report count it under
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


@dataclass(frozen=True)
class Retrained:
    """What :func:`retrain_trial` did, for the caller to tell the user."""

    manifest: Path
    trial: int | None  # the trial reproduced; None for a configuration of your own
    seed: int
    checkpoints: tuple[str, ...]  # model files beside the manifest
    plain: bool  # a plain Optuna objective f(trial): hpo cannot see or save its model
    notes: tuple[str, ...]  # what differs from what was asked, in one line each


def retrain_trial(
    study: Study,
    *,
    number: int | None = None,
    params: Mapping[str, Any] | None = None,
    named_trial: int | None = None,
    out_dir: str | Path | None = None,
    device: str | None = None,
) -> Retrained:
    """Train one configuration of the study to completion, with the model and a manifest.

    By default the best trial's; ``number`` picks another trial, ``params`` (as written by
    ``hpo best``) a configuration of your own. When ``params`` come from a trial
    (``named_trial``, the ``trial:`` key of ``hpo best``'s file) and equal its params, that
    trial is reproduced with its own seed; otherwise they train with the seed of a
    configuration of your own, and a note says why. The model checkpoints and
    ``manifest.json`` go to ``out_dir`` (default ``runs/<study>/trial-<n>``).
    """
    from hpo.spec import objective_arity, resolve_objective
    from hpo.study._retrain import retrain

    spec = study.spec
    notes: list[str] = []
    if params is None:
        trial: optuna.trial.FrozenTrial | None = _pick_trial(study, number)
    else:
        trial = _named_trial(study, params, named_trial, notes)
    if trial is not None:
        params, number = dict(trial.params), trial.number
    seed = spec.trial_seed(logical_trial_number(trial) if trial is not None else 0)
    if params is not None and trial is None and notes:
        notes[-1] += f"; trained as a configuration of your own, with seed {seed}"
    default_dir = Path("runs") / study.name / (f"trial-{number}" if trial is not None else "custom")
    out = Path(out_dir) if out_dir is not None else default_dir
    objective = resolve_objective(spec.objective, source=f"study {study.name!r}")
    manifest = retrain(
        objective,
        {**spec.fixed, **(params or {})},
        metrics=spec.metrics,
        directions=spec.directions,
        out_dir=out,
        manifest_extra={
            "study": study.name,
            "trial": None if trial is None else trial.number,
            "spec": spec.to_dict(),
        },
        device=device,
        seed=seed,
        extra={"command": spec.command} if spec.command is not None else None,
    )
    return Retrained(
        manifest=manifest,
        trial=None if trial is None else trial.number,
        seed=seed,
        checkpoints=tuple(json.loads(manifest.read_text())["checkpoints"]),
        plain=objective_arity(objective) == 1,
        notes=tuple(notes),
    )


def _pick_trial(study: Study, number: int | None) -> optuna.trial.FrozenTrial:
    if number is None:
        return _best_single(study)
    trials = study.optuna.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise UsageError(f"study {study.name!r} has no trial {number}")
    return trials[number]


def _named_trial(
    study: Study, params: Mapping[str, Any], number: int | None, notes: list[str]
) -> optuna.trial.FrozenTrial | None:
    """The trial ``params`` reproduce: trial ``number``, if its params are the same."""
    if number is None:
        return None
    trials = study.optuna.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        notes.append(f"study {study.name!r} has no trial #{number}")
        return None
    trial = trials[number]
    differ = sorted(
        k
        for k in {*params, *trial.params}
        if params.get(k, _MISSING) != trial.params.get(k, _MISSING)
    )
    if differ:
        notes.append(f"the params differ from trial #{number}'s ({', '.join(differ)})")
        return None
    return trial


_MISSING = object()


def _best_single(study: Study) -> optuna.trial.FrozenTrial:
    st = study_summary(study, window_s=None)
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


def study_summary(
    study: Study, *, now: dt.datetime | None = None, window_s: float | None = RATE_WINDOW_S
) -> StudySummary:
    """Read the study's trials and budget once and summarise them."""
    trials = study.optuna.get_trials(deepcopy=False)
    n_trials, _, stop = study.budget.state()
    return summarize(trials, study.spec, budget=n_trials, stop=stop, now=now, window_s=window_s)
