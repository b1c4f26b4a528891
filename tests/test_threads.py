"""Threads per trial process: the user's setting respected, the host's cores never
oversubscribed by hpo's own workers, ``--threads`` to choose.

Each trial records what it saw inside its process (``toy_objectives.threads_probe``):
torch's thread count and OMP_NUM_THREADS.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import hpo_env, write_spec

SPEC = """\
name: threads
objective: toy_objectives:threads_probe
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
fixed: {{sleep: {sleep}}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: {n_trials}}}
retry: {{heartbeat_interval: 1, grace_period: 3}}
checkpoint_dir: {ckpt}
"""


def cores() -> int:
    return len(os.sched_getaffinity(0))


def spec_file(tmp_path: Path, *, n_trials: int, sleep: float) -> Path:
    text = SPEC.format(n_trials=n_trials, sleep=sleep, ckpt=tmp_path / "ckpt")
    return write_spec(tmp_path / "threads.yaml", text)


def env(**extra: str) -> dict[str, str]:
    """The test's environment without any thread setting of its own, plus ``extra``."""
    out = hpo_env(**extra)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name not in extra:
            out.pop(name, None)
    return out


def hpo(*args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", *args],
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    ts = optuna.load_study(study_name="threads", storage=url).get_trials()
    assert ts and all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    return ts


def seen(t: optuna.trial.FrozenTrial) -> tuple[int, str | None]:
    return t.user_attrs["torch_threads"], t.user_attrs["omp_num_threads"]


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_default_shares_the_hosts_cores_among_the_slots(
    tmp_path: Path, sqlite_url: str, slots: int
) -> None:
    spec = spec_file(tmp_path, n_trials=2 * slots, sleep=0.3)
    finish(hpo("run", str(spec), "--workers", str(slots), "--storage", sqlite_url))
    share = max(1, cores() // slots)
    ts = trials(sqlite_url)
    assert len({t.user_attrs["pid"] for t in ts}) == slots  # every slot ran trials
    assert {seen(t) for t in ts} == {(share, str(share))}


def test_two_workers_on_one_host_share_its_cores(tmp_path: Path, sqlite_url: str) -> None:
    """The second worker counts the first one's slots in the fleet table; the first one
    recounts as the second arrives, so its later trials get half as many threads."""
    spec = spec_file(tmp_path, n_trials=16, sleep=1.0)
    create = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "create", str(spec), "--storage", sqlite_url],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert create.returncode == 0, create.stderr
    first = hpo("worker", "threads", "--processes", "1", HPO_STORAGE=sqlite_url)
    study = optuna.load_study(study_name="threads", storage=sqlite_url)
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    while not [t for t in study.get_trials() if t.state.is_finished()]:
        assert dt.datetime.now() < deadline, "the first worker ran no trial"
        time.sleep(0.1)
    second = hpo("worker", "threads", "--processes", "1", HPO_STORAGE=sqlite_url)
    finish(first)
    finish(second)

    ts = trials(sqlite_url)
    by_first = sorted(
        (t for t in ts if t.user_attrs["worker"].split("/")[0].endswith(f":{first.pid}")),
        key=lambda t: t.datetime_start,
    )
    by_second = [t for t in ts if t not in by_first]
    assert by_first and by_second
    alone, shared = max(1, cores()), max(1, cores() // 2)
    assert seen(by_first[0]) == (alone, str(alone))  # alone on the host
    assert {seen(t) for t in by_second} == {(shared, str(shared))}
    # a recount each heartbeat (1 s), and one trial sent ahead with the old count
    joined = min(t.datetime_start for t in by_second) + dt.timedelta(seconds=3)
    later = [t for t in by_first if t.datetime_start > joined]
    assert later and {seen(t) for t in later} == {(shared, str(shared))}


@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        ({"OMP_NUM_THREADS": "1"}, [], (1, "1")),  # the user's setting stays (it became 2)
        ({"OMP_NUM_THREADS": "2"}, ["--threads", "1"], (1, "1")),  # the option wins
        ({"HPO_THREADS": "1"}, [], (1, "1")),
    ],
    ids=["user-omp", "option-over-user", "env-var"],
)
def test_the_users_setting_and_the_option(
    tmp_path: Path,
    sqlite_url: str,
    extra: dict[str, str],
    args: list[str],
    expected: tuple[int, str],
) -> None:
    spec = spec_file(tmp_path, n_trials=2, sleep=0.0)
    finish(hpo("run", str(spec), *args, "--storage", sqlite_url, **extra))
    assert {seen(t) for t in trials(sqlite_url)} == {expected}


def test_only_mkl_set_by_the_user_is_left_alone(tmp_path: Path, sqlite_url: str) -> None:
    spec = spec_file(tmp_path, n_trials=1, sleep=0.0)
    finish(hpo("run", str(spec), "--storage", sqlite_url, MKL_NUM_THREADS="1"))
    (t,) = trials(sqlite_url)
    assert t.user_attrs["mkl_num_threads"] == "1" and t.user_attrs["omp_num_threads"] is None
