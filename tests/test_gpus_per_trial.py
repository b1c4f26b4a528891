"""``--gpus-per-trial N``: slots of N GPUs, each trial told how many (``HPO_SLOT_GPUS``,
``{gpus}`` in a command) and which (``CUDA_VISIBLE_DEVICES``); on a CPU-only host, N CPU
processes per trial; values that cannot be met are one-line errors, exit 2, nothing written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from conftest import run_hpo, write_spec

from hpo.errors import UsageError
from hpo.worker import Slot, default_slots, spread_slots

SPEC = """\
name: slots
objective: slot_objectives:slot_probe
metric: loss
direction: minimize
search_space:
  x: {type: float, low: 0, high: 1}
sampler: {type: random, seed: 0}
budget: {n_trials: 4}
"""


def test_slots_are_groups_of_n_gpus_and_say_how_many() -> None:
    slots = default_slots(1, ["0", "1", "2", "3"], gpus_per_trial=2)
    assert [s.gpu for s in slots] == ["0,1", "2,3"]
    assert slots[1].env() == {"CUDA_VISIBLE_DEVICES": "2,3", "HPO_SLOT_GPUS": "2"}
    # --per-gpu packs several trials onto each group; hpo run deals its workers over them
    assert [s.gpu for s in default_slots(1, ["0", "1"], 2, gpus_per_trial=2)] == ["0,1"] * 2
    assert [s.gpu for s in spread_slots(3, list("0123"), gpus_per_trial=2)] == [
        "0,1",
        "2,3",
        "0,1",
    ]
    assert Slot(0, gpu="3").env()["HPO_SLOT_GPUS"] == "1"
    assert [Slot(0, gpu=",".join(map(str, range(8)))).label, Slot(0, gpu="4,6").label] == [
        "0-7",
        "4,6",
    ]
    # no GPU: N CPU processes per trial (torchrun's gloo ranks), sharing the cores
    cpu = default_slots(2, [], gpus_per_trial=3)
    assert [(s.gpu, s.env()["HPO_SLOT_GPUS"]) for s in cpu] == [(None, "3"), (None, "3")]
    assert default_slots(1)[0].env() == {"CUDA_VISIBLE_DEVICES": "", "HPO_SLOT_GPUS": "1"}


@pytest.mark.parametrize(
    ("gpus", "n", "message"),
    [
        (["0", "1", "2"], 2, "--gpus-per-trial 2 does not divide the 3 GPUs 0,1,2"),
        (["0"], 2, "--gpus-per-trial 2: only 1 GPU to use (0)"),
        (["0", "1"], 0, "--gpus-per-trial must be at least 1 (got 0)"),
    ],
)
def test_gpus_that_cannot_be_cut_evenly_are_refused(gpus: list[str], n: int, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        default_slots(1, gpus, gpus_per_trial=n)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("run", ["--gpus", "0,1,2", "--gpus-per-trial", "2"], "e.g. --gpus 0,1"),
        ("worker", ["--gpus", "0,1,2", "--gpus-per-trial", "2"], "e.g. --gpus 0,1"),
    ],
)
def test_bad_gpus_per_trial_exits_2_and_writes_nothing(
    tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    spec = write_spec(tmp_path / "slots.yaml", SPEC)
    db = tmp_path / "study.db"
    r = run_hpo(command, str(spec), "--storage", f"sqlite:///{db}", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not db.exists()


def test_each_trial_runs_on_its_group_and_is_told_its_size(tmp_path: Path) -> None:
    """Four GPU indices in groups of two on this (CPU) machine: each trial process sees its
    group as CUDA_VISIBLE_DEVICES, HPO_SLOT_GPUS=2, and the trial records the group."""
    spec = write_spec(tmp_path / "slots.yaml", SPEC)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    r = run_hpo(
        "run", str(spec), "--storage", url, "-w", "2", "--gpus", "0,1,2,3",
        "--gpus-per-trial", "2", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="slots", storage=url).trials
    assert len(trials) == 4
    seen = {(t.user_attrs["cuda_visible_devices"], t.user_attrs["gpu"]) for t in trials}
    assert seen == {("0,1", "0,1"), ("2,3", "2,3")}
    assert {t.user_attrs["slot_gpus"] for t in trials} == {"2"}


TORCHRUN_SPEC = """\
name: ddp
command: [{torchrun}, --standalone, --nproc-per-node, "{{gpus}}", {script}, "{{x}}",
          "{{trial_dir}}"]
metric: loss
direction: minimize
search_space:
  x: {{type: float, low: 0, high: 1}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: 1}}
"""


def test_torchrun_starts_gpus_per_trial_ranks_and_rank_0_reports(tmp_path: Path) -> None:
    """A real ``torchrun --nproc-per-node {gpus}`` script, two gloo processes on the CPU per
    trial, through ``hpo create`` and ``hpo worker --gpus-per-trial 2``: the ranks all-reduce,
    only rank 0's metrics reach the trial, every rank hears the same verdict."""
    torchrun = Path(sys.executable).parent / "torchrun"
    script = Path(__file__).resolve().parent / "ddp_script.py"
    text = TORCHRUN_SPEC.format(torchrun=json.dumps(str(torchrun)), script=json.dumps(str(script)))
    spec = write_spec(tmp_path / "ddp.yaml", text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert run_hpo("create", str(spec), "--storage", url, cwd=tmp_path).returncode == 0
    r = run_hpo(
        "worker", "ddp", "--storage", url, "--gpus", "none", "--gpus-per-trial", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "each trial's {gpus} is 2 CPU processes" in r.stderr
    trials = optuna.load_study(study_name="ddp", storage=url).trials
    [t] = trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    # rank 0's losses (rank 1's are 1 higher), and the best of them as the value
    expected = [(t.params["x"] - 0.3) ** 2 + 1.0 / (e + 1) for e in range(3)]
    assert [t.intermediate_values[e] for e in range(3)] == pytest.approx(expected)
    assert t.value == pytest.approx(min(expected))
    [d] = {p.parent for p in tmp_path.rglob("rank0.json")}
    ranks = [json.loads((d / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(s["world"], s["sums"], s["stopped"]) for s in ranks] == [(2, [3.0] * 3, None)] * 2
    assert {(s["slot_gpus"], s["cuda_visible_devices"]) for s in ranks} == {("2", "")}
