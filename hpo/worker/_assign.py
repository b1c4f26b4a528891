"""Taking trials for idle slots: from the study's queue or newly sampled, under the lock,
and what a trial process is sent to run one."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json

from hpo._optuna._study import frozen_trial, sample_ahead, study_id, trial_id
from hpo.context import TrialContext
from hpo.search import make_sampler
from hpo.storage import logical_trial_number, study_checkpoint_dir, this_host
from hpo.worker._protocol import TrialJob

if TYPE_CHECKING:
    from hpo.storage import WorkerStorage
    from hpo.study import Study
    from hpo.worker._ahead import AheadSpace


@dataclass(frozen=True)
class Taken:
    trials: list[optuna.Trial]
    budget_spent: bool  # no new trial may be created: the budget is spent or the study stopped
    uid: str | None  # the study's identity, as read under the lock
    # per trial: define-by-run parameters sampled ahead, name -> (value, distribution)
    ahead: list[dict[str, tuple[Any, BaseDistribution]]]


def take_trials(
    study: Study,
    storage: WorkerStorage,
    dists: Mapping[str, BaseDistribution],
    grid: Sequence[Mapping[str, Any]] | None,
    wanted: int,
    ahead: AheadSpace | None = None,
    *,
    first: bool = False,
) -> Taken:
    """Up to ``wanted`` trials, taken from the queue or created, in one turn of the lock;
    with ``ahead``, each also gets the define-by-run parameters finished trials show.
    ``first``: this worker's first turn, when its sampler gets its own stream."""
    ostudy = study.optuna
    trials: list[optuna.Trial] = []
    spent = False
    with study.budget.turn() as budget:
        logical, waiting = budget.logical, budget.waiting
        if first:
            own_stream(study, logical + waiting)
        while len(trials) < wanted:
            if not waiting:  # queued trials (retries, grid points) are taken first
                if budget.stop or (budget.n_trials is not None and logical >= budget.n_trials):
                    spent = True
                    break
                if grid is not None:
                    # The k-th logical trial of a grid is its k-th point; skip_if_exists
                    # guards against a point enqueued twice, and needs a fresh view.
                    storage.sync(study_id(ostudy))
                    ostudy.enqueue_trial(dict(grid[logical]), skip_if_exists=True)
                    logical, waiting = logical + 1, waiting + 1
            spent = False
            popped = storage.popped
            # Under the lock: ask() pops the oldest queued trial, or creates a new one (and
            # with the queue known empty it does not read the queue).
            with storage.queue_empty(not waiting):
                trials.append(ostudy.ask(dict(dists)))
            if storage.popped > popped:
                waiting = max(0, waiting - 1)
            else:
                logical += 1
    # Outside the lock: other workers need not wait while this one samples for its slots.
    space = ahead.of(ostudy) if ahead is not None and trials else {}
    sampled = [sample_ahead(t, space) if space else {} for t in trials]
    pairs = [{k: (v, space[k]) for k, v in values.items()} for values in sampled]
    return Taken(trials, spent, budget.uid, pairs)


def own_stream(study: Study, trials_before: int) -> None:
    """Give a seeded sampler a stream of its own when its worker joins a study that has trials.

    Every worker builds its sampler from the spec's seed, so two workers started together,
    or one started again after a crash, would draw the very parameters of the trials already
    there (a random sampler; TPE's start-up trials): budget spent twice on one point, with
    nothing to say so. Called under the study's lock, before this worker samples anything: a
    lone worker on a fresh study keeps the seed, so its trials are Optuna's seeded sequence;
    a later one reseeds from the seed, the trials the study holds and its own identity.
    """
    sampler = study.spec.sampler
    if sampler.seed is None or trials_before == 0:
        return
    key = f"{sampler.seed}:{trials_before}:{this_host()}:{os.getpid()}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
    spec = dataclasses.replace(study.spec, sampler=dataclasses.replace(sampler, seed=seed))
    study.optuna.sampler = make_sampler(spec)


def trial_job(
    study: Study,
    trial: optuna.Trial,
    *,
    checkpoint_root: str,
    uid: str | None,
    threads: int | None,
    ahead: Mapping[str, tuple[Any, BaseDistribution]] | None = None,
) -> TrialJob:
    """What the trial process needs to run ``trial``: it never reads the database itself."""
    spec = study.spec
    frozen = frozen_trial(trial)
    logical = logical_trial_number(frozen)
    ckpt = study_checkpoint_dir(checkpoint_root, spec.name, uid) / f"trial-{logical:06d}"
    ctx = TrialContext(
        params={**spec.fixed, **frozen.params},
        metrics=spec.metrics,
        directions=spec.directions,
        checkpoint_dir=ckpt,
        seed=spec.trial_seed(logical),
        # a command spec's objective (hpo.script) runs the command this describes
        extra={"command": spec.command} if spec.command is not None else {},
    )
    return TrialJob(
        trial_id=trial_id(trial),
        number=trial.number,
        params=dict(frozen.params),
        distributions={k: distribution_to_json(v) for k, v in frozen.distributions.items()},
        user_attrs=dict(frozen.user_attrs),
        system_attrs=dict(frozen.system_attrs),
        context=ctx,
        datetime_start=frozen.datetime_start,
        threads=threads,
        ahead={k: (v, distribution_to_json(d)) for k, (v, d) in (ahead or {}).items()},
    )
