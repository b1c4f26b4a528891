"""Checkpoints belong to one study: never found by another study of the same name."""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy as sa
from conftest import run_hpo, write_spec
from optuna.trial import TrialState

import hpo
from hpo.storage import STUDY_UID_ATTR

SPEC = """\
name: ckpt
objective: toy_objectives:sleeper
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
fixed: {{steps: 3, step_s: 0.01}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: {n_trials}}}
checkpoint_dir: {ckpt}
"""


def spec_file(tmp_path: Path, n_trials: int = 3) -> Path:
    text = SPEC.format(n_trials=n_trials, ckpt=tmp_path / "ckpt")
    return write_spec(tmp_path / "ckpt.yaml", text)


def resumed_from(url: str) -> list[int]:
    trials = optuna.load_study(study_name="ckpt", storage=url).get_trials()
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)
    return [t.user_attrs["resumed_from"] for t in trials]


def study_dirs(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "ckpt").iterdir())


def test_same_name_in_two_storages_never_shares_checkpoints(
    tmp_path: Path, sqlite_url: str, pg_url: str
) -> None:
    """The reported case: one spec run against SQLite, then against PostgreSQL, with one
    checkpoint directory. The second study must start every trial afresh."""
    spec = hpo.load_spec(spec_file(tmp_path))
    hpo.run(spec, storage=sqlite_url)
    assert resumed_from(sqlite_url) == [0, 0, 0]
    hpo.run(spec, storage=pg_url)
    assert resumed_from(pg_url) == [0, 0, 0]  # not the other study's finished trials
    dirs = study_dirs(tmp_path)
    assert len(dirs) == 2 and all(d.startswith("ckpt-") for d in dirs)


def test_deleted_and_recreated_study_starts_afresh_and_delete_removes_checkpoints(
    tmp_path: Path, sqlite_url: str
) -> None:
    spec = spec_file(tmp_path)
    assert run_hpo("run", str(spec), "--storage", sqlite_url).returncode == 0
    (first,) = study_dirs(tmp_path)
    assert (tmp_path / "ckpt" / first / "trial-000000" / "progress").exists()

    res = run_hpo("delete", "ckpt", "--yes", "--storage", sqlite_url)
    assert res.returncode == 0, res.stderr
    assert f"removed checkpoints at {tmp_path / 'ckpt' / first}" in res.stdout
    assert "this machine" in res.stdout
    assert study_dirs(tmp_path) == []

    # a leftover directory of the deleted study (another machine's copy on a shared mount,
    # say) is never picked up by the new study of the same name
    (tmp_path / "ckpt" / first / "trial-000000").mkdir(parents=True)
    (tmp_path / "ckpt" / first / "trial-000000" / "progress").write_text("3")
    assert run_hpo("run", str(spec), "--storage", sqlite_url).returncode == 0
    assert resumed_from(sqlite_url) == [0, 0, 0]
    assert len(study_dirs(tmp_path)) == 2


def test_identity_is_made_once_and_kept_when_resumed(tmp_path: Path, any_url: str) -> None:
    spec = hpo.load_spec(spec_file(tmp_path))
    uid = hpo.create_study(spec, any_url).budget.uid()
    assert uid and len(uid) == 32
    assert hpo.create_study(spec, any_url).budget.uid() == uid  # resumed: the same study
    with hpo.load_study("ckpt", any_url).budget.turn() as view:
        assert view.uid == uid  # what workers read, under the lock


def test_study_from_before_identities_keeps_its_checkpoint_path(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A study an older hpo created has no identity: its checkpoints stay at
    <root>/<name>/, where its running trials' retries look for them, and delete keeps them
    (another study of the same name, in another storage, may use them)."""
    spec = spec_file(tmp_path, n_trials=2)
    study = hpo.create_study(hpo.load_spec(spec), sqlite_url)
    with study.budget.engine.begin() as con:  # as hpo before this change left it
        con.execute(
            sa.text("DELETE FROM study_system_attributes WHERE key = :k"), {"k": STUDY_UID_ATTR}
        )
    assert run_hpo("run", str(spec), "--storage", sqlite_url).returncode == 0
    assert study_dirs(tmp_path) == ["ckpt"]
    res = run_hpo("delete", "ckpt", "--yes", "--storage", sqlite_url)
    assert res.returncode == 0, res.stderr
    assert f"kept checkpoints at {tmp_path / 'ckpt' / 'ckpt'}" in res.stdout
    assert study_dirs(tmp_path) == ["ckpt"]
