"""hpo's incremental TPE and Hyperband decide exactly as Optuna's own, trial for trial.

Each test drives two studies through the same history, one with Optuna's class and one with
hpo's, and compares every sample and every pruning decision. Trials finish out of order, some
stay running (the constant liar sees them), pruned trials report NaN or nothing, and ties in
value are common, so every rule of Optuna's split and of its bracket assignment is exercised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights
from optuna.trial import FrozenTrial, TrialState

from hpo.search._hyperband import HyperbandPruner
from hpo.search._parzen import log_pdf
from hpo.search._tpe import IncrementalTPESampler
from hpo.storage import WorkerStorage
from hpo.storage._ordered import InOrder

SPACE = {
    "x": FloatDistribution(-5, 5),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "units": IntDistribution(8, 512, log=True),
    "q": FloatDistribution(0, 1, step=0.25),
    "act": CategoricalDistribution(["relu", "tanh", "gelu"]),
}


def _drive(
    make_sampler: Callable[[], optuna.samplers.BaseSampler],
    make_pruner: Callable[[], optuna.pruners.BasePruner],
    direction: str,
    n_trials: int,
    seed: int,
    storage: optuna.storages.BaseStorage | None = None,
) -> list[tuple[Any, ...]]:
    """Run a scripted study and return what the sampler and the pruner decided."""
    study = optuna.create_study(
        direction=direction,
        sampler=make_sampler(),
        pruner=make_pruner(),
        study_name="s",
        storage=storage,
    )
    script = random.Random(seed)  # the same script for both studies: it never sees a decision
    running: list[tuple[optuna.Trial, float, int]] = []  # a trial, its fate, its next step
    log: list[tuple[Any, ...]] = []
    for i in range(n_trials):
        trial = study.ask(SPACE)
        log.append(("params", i, tuple(sorted(trial.params.items()))))
        fate = script.random()
        if fate < 0.25:
            # Finishes later, out of order; some report a few steps first, reaching rungs
            # that the trials after them compete with while they run.
            fate, first = script.random(), script.choice([0, 2, 5, 5])
            if not _report(study, trial, fate, range(first), log):
                running.append((trial, fate, first))
            continue
        _finish(study, trial, fate, log=log)
        if running and script.random() < 0.25:
            _finish(study, *running.pop(0), log=log)
    return log


def _finish(
    study: optuna.Study, trial: optuna.Trial, fate: float, first: int = 0, *, log: list[Any]
) -> None:
    """Report the trial's steps from ``first`` on, asking the pruner after each, and tell."""
    if fate < 0.2 and first == 0:
        study.tell(trial, state=TrialState.PRUNED)  # pruned before any report
        return
    if not _report(study, trial, fate, range(first, 9), log):
        study.tell(trial, _base(trial))


def _report(
    study: optuna.Study, trial: optuna.Trial, fate: float, steps: range, log: list[Any]
) -> bool:
    """Report these steps, asking the pruner after each; True if it pruned (trial told)."""
    for step in steps:
        value = math.nan if fate > 0.95 and step == 3 else _base(trial) / (step + 1)
        trial.report(value, step)
        pruned = trial.should_prune()
        log.append(("prune", trial.number, step, pruned))
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            return True
    return False


def _base(trial: optuna.Trial) -> float:
    return round(abs(trial.params["x"]) + (0.0, 0.5, 1.0)[trial.number % 3], 1)  # many ties


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize(
    "options",
    [
        {"constant_liar": True, "multivariate": True},
        {"constant_liar": False, "multivariate": False},
        {
            "constant_liar": True,
            "multivariate": True,
            "n_startup_trials": 3,
            "gamma": lambda n: n // 2,
        },
    ],
    ids=["liar-multivariate", "independent", "half-below"],
)
def test_incremental_tpe_samples_what_optuna_samples(
    direction: str, options: dict[str, Any]
) -> None:
    def pruner() -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9)

    ours = _drive(lambda: IncrementalTPESampler(seed=3, **options), pruner, direction, 120, 7)
    theirs = _drive(
        lambda: optuna.samplers.TPESampler(seed=3, **options), pruner, direction, 120, 7
    )
    assert [e for e in ours if e[0] == "prune" and e[3]], "the script prunes nothing"
    assert ours == theirs


@pytest.mark.parametrize(
    "options",
    [
        {"min_resource": 1, "max_resource": 9},
        {"min_resource": 2, "max_resource": 9, "reduction_factor": 2},
        {"min_resource": 1, "max_resource": "auto", "reduction_factor": 3},
    ],
)
def test_hyperband_prunes_what_optuna_prunes(options: dict[str, Any]) -> None:
    def sampler() -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=5)

    ours = _drive(sampler, lambda: HyperbandPruner(**options), "minimize", 300, 0)
    theirs = _drive(sampler, lambda: optuna.pruners.HyperbandPruner(**options), "minimize", 300, 0)
    decisions = [e for e in ours if e[0] == "prune"]
    assert any(e[3] for e in decisions) and not all(e[3] for e in decisions)
    assert ours == theirs


def test_same_decisions_through_the_workers_storage(tmp_path: Path) -> None:
    """hpo's classes on the worker's storage (its cached, batched view of a real database)
    decide as Optuna's own classes on Optuna's own storage."""

    def storage(name: str) -> optuna.storages.BaseStorage:
        rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / name}.db")
        return WorkerStorage(rdb) if name == "ours" else rdb

    def tpe(cls: type[optuna.samplers.TPESampler]) -> Callable[[], optuna.samplers.BaseSampler]:
        return lambda: cls(seed=3, constant_liar=True, multivariate=True, n_startup_trials=5)

    ours = _drive(
        tpe(IncrementalTPESampler),
        lambda: HyperbandPruner(min_resource=1, max_resource=9),
        "minimize",
        60,
        7,
        storage("ours"),
    )
    theirs = _drive(
        tpe(optuna.samplers.TPESampler),
        lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9),
        "minimize",
        60,
        7,
        storage("theirs"),
    )
    assert [e for e in ours if e[0] == "prune" and e[3]], "the script prunes nothing"
    assert ours == theirs


WIDE_SPACE = {
    "x": FloatDistribution(-5, 5),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "units": IntDistribution(8, 512, log=True),
    "layers": IntDistribution(1, 6),
    "q": FloatDistribution(0, 1, step=0.25),
    "act": CategoricalDistribution(["relu", "tanh", "gelu"]),
    **{f"w{i}": FloatDistribution(0, i + 1) for i in range(7)},  # 9 continuous in all
}


@pytest.mark.parametrize("n_continuous", [0, 1, 2, 7, 9])
@pytest.mark.parametrize(
    "parameters",
    [
        _ParzenEstimatorParameters(1.0, True, False, default_weights, True),
        _ParzenEstimatorParameters(0.5, False, True, default_weights, True),
    ],
    ids=["defaults", "no-clip-endpoints"],
)
def test_log_pdf_is_optunas_to_the_bit(
    n_continuous: int, parameters: _ParzenEstimatorParameters
) -> None:
    """hpo's log density of the candidates is Optuna's, bit for bit, whatever the space: the
    acquisition's argmax (the sample) cannot differ."""
    continuous = [n for n, d in WIDE_SPACE.items() if isinstance(d, FloatDistribution)]
    continuous = [n for n in continuous if WIDE_SPACE[n].step is None][:n_continuous]
    space = {n: d for n, d in WIDE_SPACE.items() if n in continuous or n not in _CONTINUOUS}
    rng = np.random.RandomState(n_continuous)
    for n_obs in (0, 1, 30, 700):
        # Many repeated values: ties in the kernels' centres, as in a long study.
        observations = {
            name: np.array([d.to_internal_repr(_draw(d, rng)) for _ in range(n_obs)], dtype=float)
            for name, d in space.items()
        }
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                observations[name] = observations[name].astype(np.int64)
        estimator = _ParzenEstimator(observations, space, parameters)
        samples = estimator.sample(rng, 24)
        for name in continuous[:1]:  # some candidates outside the bounds: -inf there
            d = space[name]
            samples[name][:3] = [d.low - 1.0, d.high + 1.0, d.high]
        ours, theirs = log_pdf(estimator, samples), estimator.log_pdf(samples)
        assert ours.tobytes() == theirs.tobytes(), (n_obs, ours - theirs)


_CONTINUOUS = {
    n for n, d in WIDE_SPACE.items() if isinstance(d, FloatDistribution) and d.step is None
}


def _draw(d: Any, rng: np.random.RandomState) -> Any:
    if isinstance(d, CategoricalDistribution):
        return d.choices[rng.randint(len(d.choices))]
    if isinstance(d, IntDistribution):
        return int(rng.randint(d.low, d.high + 1))
    if d.step is not None:
        return d.low + d.step * rng.randint(round((d.high - d.low) / d.step) + 1)
    if d.log:
        return float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
    return round(float(rng.uniform(d.low, d.high)), 1)  # rounded: ties


def test_hyperband_with_odd_rung_values_prunes_what_optuna_prunes() -> None:
    """Rung values the pruner never writes itself (NaN, from another tool) sort by their place:
    hpo then collects them as Optuna does."""

    def run(pruner: optuna.pruners.BasePruner) -> list[bool]:
        study = optuna.create_study(pruner=pruner, study_name="s")
        script = random.Random(1)
        for _ in range(150):
            value = script.random()
            rung = math.nan if script.random() < 0.2 else round(value, 1)
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.PRUNED,
                    params={"x": 0.0},
                    distributions={"x": SPACE["x"]},
                    system_attrs={"completed_rung_0": rung},
                    intermediate_values={1: value},
                )
            )
        decisions = []
        for _ in range(100):
            trial = study.ask({"x": SPACE["x"]})
            trial.report(round(script.random(), 1), 1)
            decisions.append(trial.should_prune())
            study.tell(trial, state=TrialState.PRUNED)
        return decisions

    ours = run(HyperbandPruner(min_resource=1, max_resource=9))
    theirs = run(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9))
    assert any(ours) and not all(ours)
    assert ours == theirs


def test_worker_storage_lists_trials_as_the_cache_holds_them() -> None:
    """The worker's lists by state, kept up to date, are the cache's trials sorted by number and
    filtered, after trials arrive out of order, finish, and are read in again."""
    source: dict[int, FrozenTrial] = {}
    ordered = InOrder(source)
    script = random.Random(3)
    pending = list(range(200))
    script.shuffle(pending)
    states = [None, (TrialState.COMPLETE, TrialState.PRUNED), (TrialState.RUNNING,)]
    for step in range(600):
        if pending and script.random() < 0.5:  # a trial read in or created, numbers with gaps
            number = pending.pop()
            trial = _frozen(number, TrialState.RUNNING)
        else:  # a running trial finishes in place, or a trial is read in again (a fresh copy)
            number = script.choice(sorted(source)) if source else 0
            if number not in source:
                continue
            old = source[number]
            if old.state == TrialState.RUNNING and script.random() < 0.6:
                old.state = script.choice([TrialState.COMPLETE, TrialState.PRUNED])
                continue
            trial = _frozen(number, old.state)
        source[number] = trial
        ordered.put(trial)
        for s in states:
            expected = [source[n] for n in sorted(source)]
            expected = [t for t in expected if s is None or t.state in s]
            assert [id(t) for t in ordered.get(s)] == [id(t) for t in expected], step


def _frozen(number: int, state: TrialState) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


class _FinishesATrialAfterARead(optuna.storages.InMemoryStorage):
    """Optuna's in-memory storage, on which another worker finishes a running trial right after
    the sampler's first read of the study's trials by state (a race, made to happen every time).
    (An RDBStorage would do, but create_study puts its cache in front of it.)"""

    finish: tuple[int, float] | None = None  # (trial id, value) to finish after the next read

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if self.finish is not None and states is not None and TrialState.COMPLETE in states:
            trial_id, value = self.finish
            self.finish = None
            self.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
        return trials


@pytest.mark.parametrize("seed", range(4))
def test_tpe_sees_a_trial_that_finishes_during_the_ask(seed: int) -> None:
    """A trial that finishes while another worker asks is seen once, as running or as
    finished, as Optuna's one read sees it; never missed."""

    def ask_during_race(cls: type[optuna.samplers.TPESampler]) -> dict[str, Any]:
        storage = _FinishesATrialAfterARead()
        sampler = cls(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=5)
        study = optuna.create_study(storage=storage, sampler=sampler, study_name="s")
        script = random.Random(seed)
        for _ in range(12):
            study.enqueue_trial({"x": script.uniform(-5, 5)})
            trial = study.ask({"x": SPACE["x"]})
            study.tell(trial, abs(trial.params["x"] - 1.0))
        # A trial close to the best, still running when the next ask starts.
        study.enqueue_trial({"x": 1.0 + script.uniform(-0.5, 0.5)})
        racing = study.ask({"x": SPACE["x"]})
        storage.finish = (racing._trial_id, 0.0)
        return study.ask({"x": SPACE["x"]}).params

    ours = ask_during_race(IncrementalTPESampler)
    theirs = ask_during_race(optuna.samplers.TPESampler)
    assert ours == theirs


def _reads_the_bracket(study: optuna.Study) -> None:
    """What a sampler or callback may do with the study Hyperband hands it."""
    assert isinstance(study.trials, list)
    assert isinstance(study.get_trials(deepcopy=False), list)


class _SamplerReadingTheStudy(optuna.samplers.RandomSampler):
    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, dist: Any
    ) -> Any:
        _reads_the_bracket(study)
        return super().sample_independent(study, trial, name, dist)


@pytest.mark.parametrize("pruner_class", [HyperbandPruner, optuna.pruners.HyperbandPruner])
def test_hyperband_bracket_study_can_be_read_before_the_pruner_starts(
    pruner_class: type[optuna.pruners.HyperbandPruner],
) -> None:
    """Before the first trial completes (max_resource auto), samplers already get a bracket
    study; reading its trials works, as in Optuna, and so it does after."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(4):
            trial.report(x / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study = optuna.create_study(sampler=_SamplerReadingTheStudy(seed=0), pruner=pruner_class())
    study.optimize(objective, n_trials=12)
    assert len(study.trials) == 12


@pytest.mark.parametrize("pruner_class", [HyperbandPruner, optuna.pruners.HyperbandPruner])
def test_hyperband_bracket_study_allows_only_what_a_pruner_reads(
    pruner_class: type[optuna.pruners.HyperbandPruner],
) -> None:
    """Optuna's guard: a bracket study is a read-only view for its pruner; optimizing it or
    writing its attributes is an AttributeError, not a write to the real study."""
    pruner = pruner_class(min_resource=1, max_resource=9)
    study = optuna.create_study(pruner=pruner)
    for _ in range(3):
        trial = study.ask({"x": SPACE["x"]})
        trial.report(1.0, 1)
        trial.should_prune()
        study.tell(trial, 1.0)
    bracket = pruner._create_bracket_study(study, 0)
    for name in ("optimize", "set_user_attr", "user_attrs", "system_attrs", "trials_dataframe"):
        with pytest.raises(AttributeError):
            getattr(bracket, name)
    _reads_the_bracket(bracket)
    assert bracket.direction == study.direction and bracket.study_name == study.study_name


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_incremental_tpe_splits_infeasible_trials_as_optuna(direction: str) -> None:
    """Trials with a positive constraint violation (``trial.set_constraint``) form Optuna's
    third group, filled into "below" after the complete and pruned ones, least violation
    first; ties are common, some trials stay running."""

    def run(cls: type[optuna.samplers.TPESampler]) -> list[tuple[Any, ...]]:
        sampler = cls(seed=4, constant_liar=True, multivariate=True, n_startup_trials=4)
        study = optuna.create_study(direction=direction, sampler=sampler)
        script = random.Random(2)
        log: list[tuple[Any, ...]] = []
        running: list[optuna.Trial] = []
        for _ in range(70):
            trial = study.ask(SPACE)
            log.append(tuple(sorted(trial.params.items())))
            trial.set_constraint("c", script.choice([-1.0, 0.0, 0.5, 1.0, 2.0]))
            if script.random() < 0.2:
                running.append(trial)
                continue
            if script.random() < 0.3:
                trial.report(_base(trial), 1)
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, _base(trial))
            if running and script.random() < 0.3:
                late = running.pop(0)
                study.tell(late, _base(late))
        return log

    assert run(IncrementalTPESampler) == run(optuna.samplers.TPESampler)


class _CountingReads(list):  # type: ignore[type-arg]
    """A study's read that counts how many of its trials are looked at."""

    looked = 0

    def __getitem__(self, i: Any) -> Any:
        _CountingReads.looked += 1
        return super().__getitem__(i)

    def __iter__(self) -> Any:
        raise AssertionError("the whole read walked")


def test_tpe_looks_only_at_new_trials_per_ask() -> None:
    """At each ask TPE's history looks at the trials from the first one running at the last
    read on, and at the few new ones below it: never at the whole study again."""
    from hpo.search._tpe import _History

    def done(number: int) -> FrozenTrial:
        t = _frozen(number, TrialState.COMPLETE)
        t.value, t.params, t.distributions = float(number % 7), {"x": 0.0}, {"x": SPACE["x"]}
        return t

    history = _History({"x": SPACE["x"]}, maximize=False)
    # Trial 4900 waits (enqueued: not in a read of finished and running trials), 4990 runs.
    trials = [done(n) for n in range(5000) if n != 4900]
    trials[4989] = _frozen(4990, TrialState.RUNNING)
    assert history.catch_up(_CountingReads(trials)) == [trials[4989]]
    assert len(history.number) == 4998
    # Then 4900 ran and finished, behind 4990 (the first one running at the last read), and
    # 4990 and one more finished, and another one runs.
    trials.insert(4900, done(4900))
    trials[4990] = done(4990)
    trials += [done(5000), _frozen(5001, TrialState.RUNNING)]
    _CountingReads.looked = 0
    running = history.catch_up(_CountingReads(trials))
    assert running == [trials[-1]] and len(history.number) == 4998 + 3
    assert _CountingReads.looked < 200  # about 90 down to 4900, a dozen up from 4990
    # And it holds what a history that read the study once, now, holds.
    fresh = _History({"x": SPACE["x"]}, maximize=False)
    assert fresh.catch_up(trials) == running
    for ours, theirs in zip(history.split(700), fresh.split(700), strict=True):
        assert history.number[ours].tolist() == fresh.number[theirs].tolist()
