"""A spec's command: an existing training script tuned as it is, over real processes.

One study runs every behaviour of tests/scripts/toy_train.py (a grid point each) on SQLite
and PostgreSQL: the client, [hpo] lines and a regex; pruning told through the client, and
by signal; a crash retried that resumes; a failure; a script that reports nothing.
"""

from __future__ import annotations

import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import hpo_env, run_hpo, write_spec

from hpo.script import INTERRUPT_GRACE_S, LineParser, log_paths, prepare
from hpo.script._process import ScriptProcess
from hpo.script._server import ReportServer
from hpo.spec import KATIB_REGEX, load_spec
from hpo.worker._protocol import END_GRACE_S

REPO = Path(__file__).resolve().parent.parent
TOY = Path(__file__).resolve().parent / "scripts" / "toy_train.py"
CASES = [
    "client",
    "client-prune",
    "ignore-prune",
    "json",
    "json-prune",
    "text",
    "crash",
    "fail",
    "trap",
]
BASE = "model: {x: 0.0, hidden: 4}\ntraining: {epochs: 3, checkpoint_dir: ckpt, lr: 0.1}\n"


def _spec(tmp_path: Path, cases: list[str], extra: str = "", name: str = "toy") -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    return write_spec(
        tmp_path / "study.yaml",
        f"name: {name}\n"
        f"command: [{sys.executable}, {TOY}, --config, '{{config}}', --case, '{{case}}',"
        " --resume, '{resume}']\n"
        "config: base.yaml\n"
        "metric: val_loss\n"
        f"search_space:\n  case: {{type: categorical, choices: {json.dumps(cases)}}}\n"
        "fixed: {training.checkpoint_dir: '{checkpoint_dir}', model.x: 2.0}\n"
        "sampler: {type: grid}\n"
        "pruner: {type: threshold, upper: 50}\n"
        "script: {stdout_regex: katib, kill_grace_s: 1}\n" + extra,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


# -- one study, every behaviour ------------------------------------------------------------
def test_a_command_study_reports_prunes_retries_and_fails_as_its_script_does(
    tmp_path: Path, any_url: str
) -> None:
    spec = _spec(tmp_path, CASES)
    res = run_hpo("run", str(spec), "--workers", "2", "--storage", any_url, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name="toy", storage=any_url)
    by_case: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in study.trials:
        by_case.setdefault(t.params["case"], []).append(t)
    S = optuna.trial.TrialState

    def one(case: str) -> optuna.trial.FrozenTrial:
        assert len(by_case[case]) == 1, by_case[case]
        return by_case[case][0]

    curve = {1: 2.0, 2: 1.5, 3: pytest.approx(4 / 3, abs=1e-6)}
    for case in ("client", "json", "text"):  # the three ways to report
        t = one(case)
        assert t.state == S.COMPLETE and t.intermediate_values == curve, case
        assert t.value == pytest.approx(4 / 3, abs=1e-6)  # the best epoch's
        assert t.user_attrs["best_epoch"] == 3 and t.user_attrs["stop_reason"] == "completed"
    assert one("client").user_attrs["val_acc"] == pytest.approx(1 / (1 + 4 / 3))
    for case in ("client-prune", "ignore-prune", "json-prune", "trap"):
        t = one(case)
        assert t.state == S.PRUNED and t.intermediate_values == {1: 100.0}, case
        assert t.user_attrs["stop_reason"] == "pruned"
    assert one("client-prune").user_attrs["exit_code"] == 0  # it stopped when told
    assert one("ignore-prune").user_attrs["exit_code"] == -15  # SIGTERM
    assert one("json-prune").user_attrs["exit_code"] == -15  # reported on stdout: SIGTERM
    assert one("trap").user_attrs["exit_code"] == -9  # ignored SIGTERM: SIGKILL after 1 s
    dirs = {c: Path(ts[0].user_attrs["trial_dir"]) for c, ts in by_case.items()}
    # a torchrun rank other than 0 got rank 0's verdict
    assert json.loads((dirs["client-prune"] / "rank1-epoch1.json").read_text()) is True
    # what json-prune forked died with it
    assert _wait_dead(json.loads((dirs["json-prune"] / "children.json").read_text())) == []
    # a crash after progress is retried in the same directory, and resumes
    first, retry = sorted(by_case["crash"], key=lambda t: t.number)
    assert (
        first.state == S.FAIL
        and "CUDA out of memory (simulated)" in (first.user_attrs["fail_reason"])
    )
    assert retry.state == S.COMPLETE and retry.system_attrs["failed_trial"] == first.number
    assert retry.user_attrs["trial_dir"] == first.user_attrs["trial_dir"]
    assert retry.user_attrs["resumed_from"].endswith("checkpoints/last.json")
    assert retry.intermediate_values == curve  # epochs 1-2 re-reported from the first attempt
    out, _ = log_paths(dirs["crash"], retry.number)
    assert "resumed from" in out.read_text() and "at epoch 3" in out.read_text()
    # a failure before any report is not retried; its reason is the end of its stderr
    fail = one("fail")
    assert fail.state == S.FAIL and "exited with code 3" in fail.user_attrs["fail_reason"]
    assert "ValueError: boom" in fail.user_attrs["fail_reason"]
    # the script ran in the spec's directory with the trial's environment
    seen = json.loads((dirs["client"] / f"seen-{one('client').number}.json").read_text())
    assert seen["cwd"] == str(tmp_path.resolve())
    assert seen["argv"][:4] == ["--config", str(dirs["client"] / "config.yaml"), "--case", "client"]
    assert "--resume" not in seen["argv"]  # nothing to resume: the flag went with it
    assert seen["ignored"] == []  # the trial process ignores SIGINT and SIGUSR1; not the script
    env = seen["env"]
    assert env["HPO_TRIAL_NUMBER"] == str(one("client").number)
    assert env["HPO_TRIAL_DIR"] == str(dirs["client"])
    assert env["HPO_CHECKPOINT_DIR"] == str(dirs["client"] / "checkpoints")
    assert json.loads(env["HPO_PARAMS"])["case"] == "client"
    assert "HPO_SEED" in env and "HPO_REPORT_SOCKET" in env
    # hpo logs: stdout to stdout, stderr to stderr
    logs = run_hpo("logs", "toy", str(first.number), "--storage", any_url, cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert '[hpo] {"epoch": 2' in logs.stdout and "CUDA out of memory" in logs.stderr
    assert f"other attempts of this trial: {retry.number}" in logs.stderr  # the retry's
    # hpo retrain runs the command once more, in its own directory
    from hpo.study import load_study, retrain_trial

    out = tmp_path / "retrained"
    done = retrain_trial(load_study("toy", any_url), number=one("client").number, out_dir=out)
    manifest = json.loads(done.manifest.read_text())
    assert (
        manifest["values"] == [pytest.approx(4 / 3)]
        and "checkpoints/last.json" in (manifest["checkpoints"])
    )
    assert json.loads((out / "seen-0.json").read_text())["argv"][1] == str(out / "config.yaml")


def test_a_script_that_never_reports_stops_the_study_after_one_trial(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Exiting 0 without a report is how the script reports (or the regex misses its lines):
    every trial would fail the same way, so the first one stops the study, saying what the
    script printed that nothing read."""
    spec = _spec(tmp_path, ["silent", "client"])  # grid order: silent runs first
    res = run_hpo("run", str(spec), "--storage", sqlite_url, cwd=tmp_path)
    assert res.returncode != 0
    (trial,) = optuna.load_study(study_name="toy", storage=sqlite_url).trials
    reason = trial.user_attrs["fail_reason"]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "exited 0 without reporting 'val_loss'" in reason and "it printed 'done'" in reason
    assert "without reporting 'val_loss'" in res.stderr  # the stop says why


# -- no orphans, however the trial ends -------------------------------------------------------
def test_trial_timeout_ends_the_script_and_what_it_forked(tmp_path: Path, sqlite_url: str) -> None:
    spec = _spec(tmp_path, ["hang"], extra="budget: {trial_timeout: 1.5}\n")
    res = run_hpo("run", str(spec), "--storage", sqlite_url, cwd=tmp_path)
    study = optuna.load_study(study_name="toy", storage=sqlite_url)
    trial = study.trials[0]
    assert "trial_timeout" in trial.user_attrs["fail_reason"], res.stderr
    pids = json.loads(Path(trial.user_attrs["trial_dir"], "children.json").read_text())
    assert len(pids) == 3 and _wait_dead(pids, timeout=1) == []
    # hpo logs, for a trial directory this machine does not have, says where it is
    os.rename(trial.user_attrs["trial_dir"], tmp_path / "moved")
    gone = run_hpo("logs", str(spec), "0", "--storage", sqlite_url, cwd=tmp_path)
    where = f"logs are on {trial.user_attrs['host']}, in {trial.user_attrs['trial_dir']}/logs"
    assert gone.returncode == 1 and where in gone.stderr


def test_stop_now_ends_the_script_and_what_it_forked(tmp_path: Path, sqlite_url: str) -> None:
    spec = _spec(tmp_path, ["hang"])
    follow: subprocess.Popen[str] | None = None
    run = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "run", str(spec), "--storage", sqlite_url],
        cwd=tmp_path,
        env=hpo_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        found: list[Path] = []
        while not found and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
            found = list(tmp_path.glob("checkpoints/*/trial-*/children.json"))
        assert found, run.stderr.read() if run.stderr else ""
        pids = json.loads(found[0].read_text())
        follow = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "logs", "toy", "0", "-f", "--storage", sqlite_url],
            env=hpo_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert run_hpo("stop", "toy", "--now", "--storage", sqlite_url).returncode == 0
        run.wait(timeout=30)
        out, err = follow.communicate(timeout=30)  # it ends when the trial does
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert _wait_dead(pids, timeout=1) == []
    assert follow is not None and follow.returncode == 0 and out == "hanging\n", err
    missing = run_hpo("logs", "toy", "7", "--storage", sqlite_url)
    assert missing.returncode == 2 and "has no trial 7" in missing.stderr


def test_ending_a_script_ends_every_process_of_its_group(tmp_path: Path) -> None:
    """Children that ignore SIGTERM, and one the script left behind when it exited."""
    code = (
        "import os, signal, sys, time\n"
        "pids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        time.sleep(60); os._exit(0)\n"
        "    pids.append(pid)\n"
        "print(*pids, flush=True)\n"
        "time.sleep(0.3 if sys.argv[1] == 'exits' else 60)\n"
    )
    for how in ("exits", "runs"):
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        launch = prepare_plain(tmp_path, [sys.executable, "-c", code, how])
        proc = ScriptProcess(launch, lines.put)
        pids = [int(p) for p in lines.get(timeout=10).split()]
        if how == "exits":
            proc.popen.wait(timeout=10)
        start = time.monotonic()
        proc.end(grace=0.5)
        assert time.monotonic() - start < 3
        assert _wait_dead([proc.popen.pid, *pids], timeout=1) == [], how
        assert proc.output_done(2)


def test_a_script_dies_with_its_trial_process_killed_by_sigkill(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a worker SIGKILLed takes its trial processes, and so their scripts."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from hpo.script import Launch, log_paths\n"
        "from hpo.script._process import ScriptProcess\n"
        "tmp = Path(sys.argv[1])\n"
        "out, err = log_paths(tmp, 0); out.parent.mkdir(exist_ok=True)\n"
        "argv = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "proc = ScriptProcess(Launch(argv, dict(os.environ), str(tmp), tmp, out, err, None),"
        " lambda line: None)\n"
        "print(proc.popen.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    trial = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        env=hpo_env(PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert trial.stdout is not None
        script = int(trial.stdout.readline())
        assert _alive(script)
        trial.kill()
        trial.wait(timeout=10)
        assert _wait_dead([script], timeout=5) == []
    finally:
        if trial.poll() is None:
            trial.kill()


def prepare_plain(tmp_path: Path, argv: list[str]) -> object:
    from hpo.script import Launch

    out, err = log_paths(tmp_path, 0)
    out.parent.mkdir(exist_ok=True)
    return Launch(argv, dict(os.environ), str(tmp_path), tmp_path, out, err, None)


def test_the_script_group_ends_well_before_the_worker_kills_the_trial_process() -> None:
    assert INTERRUPT_GRACE_S + 2 <= END_GRACE_S


# -- the trial's files and command line ------------------------------------------------------
def _command_spec(tmp_path: Path, argv: list[str], *, config: str = "base.yaml", script: str = ""):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "base.json").write_text(json.dumps(json.loads(json.dumps({"model": {"x": 1}}))))
    text = (
        "name: t\n"
        f"command: {json.dumps(argv)}\n"
        + (f"config: {config}\n" if config else "")
        + "metric: val_loss\n"
        "search_space:\n  model.x: {type: float, low: 0, high: 1}\n"
        "fixed: {training.lr: 0.5, training.checkpoint_dir: '{checkpoint_dir}/c'}\n" + script
    )
    return load_spec(write_spec(tmp_path / "s.yaml", text)).command


def test_every_placeholder_is_filled_and_the_config_keeps_every_other_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    argv = [
        sys.executable,
        "--config={config}",
        "{trial_dir}",
        "{checkpoint_dir}",
        "--gpus",
        "{gpus}",
        "--lr={training.lr}",
        "{model.x}",
        "{args}",
        "{args_json_file}",
        "--resume",
        "{resume}",
        "{{literal}}",
    ]
    spec = _command_spec(tmp_path, argv)
    monkeypatch.setenv("HPO_SLOT_GPUS", "2")
    trial_dir = tmp_path / "trial-000004"
    params = {"model.x": 0.25, "training.lr": 0.5, "training.checkpoint_dir": "{checkpoint_dir}/c"}
    launch = prepare(spec, params, searched={"model.x"}, number=7, seed=11, trial_dir=trial_dir)
    ckpt = trial_dir / "checkpoints"
    assert launch.argv == [
        sys.executable,
        f"--config={trial_dir / 'config.yaml'}",
        str(trial_dir),
        str(ckpt),
        "--gpus",
        "2",
        "--lr=0.5",
        "0.25",
        "--model.x=0.25",
        "--training.lr=0.5",
        f"--training.checkpoint_dir={ckpt}/c",
        str(trial_dir / "params.json"),
        "{literal}",
    ]  # nothing to resume: --resume and {resume} are gone
    config = yaml.safe_load((trial_dir / "config.yaml").read_text())
    assert config == {
        "model": {"x": 0.25, "hidden": 4},
        "training": {"epochs": 3, "checkpoint_dir": f"{ckpt}/c", "lr": 0.5},
    }
    assert json.loads((trial_dir / "params.json").read_text())["model.x"] == 0.25
    assert launch.env["HPO_TRIAL_NUMBER"] == "7" and launch.env["HPO_SEED"] == "11"
    assert json.loads(launch.env["HPO_PARAMS"])["training.lr"] == 0.5
    assert launch.cwd == str(tmp_path.resolve())
    # a retry: the newest checkpoint, or the one the spec names
    (ckpt / "old.pt").write_text("")
    os.utime(ckpt / "old.pt", (0, 0))
    (ckpt / "best.pt").write_text("")
    again = prepare(spec, params, searched={"model.x"}, number=9, seed=11, trial_dir=trial_dir)
    assert again.argv[-3:] == ["--resume", str(ckpt / "best.pt"), "{literal}"]
    named = _command_spec(tmp_path, argv, script="script: {resume_file: old.pt}\n")
    old = prepare(named, params, searched={"model.x"}, number=9, seed=11, trial_dir=trial_dir)
    assert old.argv[-2] == str(ckpt / "old.pt")


def test_a_json_base_config_gets_a_json_copy_and_new_keys_when_allowed(tmp_path: Path) -> None:
    spec = _command_spec(
        tmp_path,
        [sys.executable, "{config}"],
        config="base.json",
        script="script: {config_new_keys: true}\n",
    )
    launch = prepare(
        spec,
        {"model.x": 0.5, "training.lr": 0.1},
        searched={"model.x"},
        number=0,
        seed=0,
        trial_dir=tmp_path / "t",
    )
    assert launch.argv[1].endswith("config.json")
    assert json.loads(Path(launch.argv[1]).read_text()) == {
        "model": {"x": 0.5},
        "training": {"lr": 0.1},
    }


def test_output_lines_become_reports() -> None:
    json_lines = LineParser(None)
    r = json_lines.parse('[rank0]: [hpo] {"epoch": 4, "val_loss": 0.5, "note": "x"}')
    assert r is not None and (r.epoch, r.metrics) == (4, {"val_loss": 0.5})
    assert json_lines.parse("val_loss=0.3") is None  # no regex: only [hpo] lines
    assert json_lines.parse("[hpo] not json") is None and json_lines.problems
    katib = LineParser(KATIB_REGEX)
    assert katib.parse("Epoch 7/60") is None  # no metric: the epoch for the lines after
    r = katib.parse("train_loss=0.9 val_loss = 1.5e-1")
    assert r is not None and (r.epoch, r.metrics) == (7, {"train_loss": 0.9, "val_loss": 0.15})
    named = LineParser(r"step (?P<step>\d+).*loss (?P<val_loss>[\d.]+)")
    r = named.parse("step 12 | loss 0.25")
    assert r is not None and (r.epoch, r.metrics) == (12, {"val_loss": 0.25})
    counted = LineParser(r"loss (?P<val_loss>[\d.]+)")
    assert [counted.parse(f"loss {v}").epoch for v in (3, 2)] == [1, 2]  # type: ignore[union-attr]


# -- the client --------------------------------------------------------------------------
def test_the_client_needs_only_the_standard_library_and_does_nothing_outside_hpo() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import hpo\n"
        "assert hpo.report(1, val_loss=0.5) is False\n"
        "heavy = {'optuna', 'torch', 'sqlalchemy', 'yaml', 'numpy', 'click'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    res = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr


def test_a_report_is_one_fast_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    import hpo._client as client

    events: queue.SimpleQueue = queue.SimpleQueue()
    with ReportServer(events) as server:
        seen = []

        def trial_side() -> None:  # the trial's main thread: prune at epoch 50
            while True:
                report = events.get()
                if report is None:
                    return
                seen.append((report.epoch, report.metrics))
                report.reply(report.epoch >= 50)

        thread = threading.Thread(target=trial_side, daemon=True)
        thread.start()
        monkeypatch.setenv(client.SOCKET_ENV, server.path)
        monkeypatch.setattr(client, "_conn", None)
        times, verdicts = [], []
        for epoch in range(60):
            start = time.perf_counter()
            verdicts.append(client.report(epoch, val_loss=1.0 / (epoch + 1)))
            times.append(time.perf_counter() - start)
        events.put(None)
        client._conn = None
    assert verdicts == [False] * 50 + [True] * 10
    assert seen[3] == (3, {"val_loss": 0.25})
    assert statistics.median(times) < 0.005, f"median round trip {statistics.median(times)} s"


# -- bad input: one line naming file, key and value, at load --------------------------------
BASE_BAD = "model: {dropout: 0.1}\n"
GOOD = (
    "name: bad\n"
    f"command: [{sys.executable}, train.py, --config, '{{config}}']\n"
    "config: base.yaml\n"
    "metric: val_loss\n"
    "search_space:\n  model.dropout: {type: float, low: 0, high: 0.5}\n"
)
BAD = [
    ("[no-such-program-x1, '{{config}}']", {}, "command.0: is not on PATH nor a file"),
    ("[./train.sh, '{{config}}']", {}, "command.0: is not executable"),
    ("[{python}, missing.py, '{{config}}']", {}, "command.1: no such file in"),
    ("[{python}, '{{config}}', '{{confg}}']", {}, "unknown placeholder {confg}; did you mean"),
    ("[{python}, '{{config}}', 'a{{b']", {}, "unmatched '{'; write '{{' for a brace"),
    ("[{python}, '{{config}}', '--x={{args}}']", {}, "{args} must be an argument of its own"),
    ("[{python}, '{{trial_dir}}', --config, '{{config}}']", {"bad.yaml": "a: ["}, ""),  # fine
    ("'{python} train.py --config {{config}}'", {}, ""),  # a string is split with shlex
    ('"{python} \'unterminated"', {}, "command: cannot split it"),
    ("['{{trial_dir}}/run']", {}, "the program cannot be a placeholder"),
    ("'{python} train.py --config {{config}} > out.txt'", {}, "runs without a shell, so '>'"),
    ("'{python} train.py --config {{config}} 2>&1'", {}, "runs without a shell, so '2>&1'"),
]


CONFIG_BAD = [
    ("config: missing.yaml", {}, "config: no such file:"),
    ("config: base.txt", {"base.txt": "a: 1"}, "config: must be a .yaml, .yml or .json file"),
    ("config: base.yaml", {"base.yaml": "model: [1,"}, "is not valid YAML"),
    ("config: base.json", {"base.json": "{model: 1}"}, "is not valid JSON"),
    ("config: base.yaml", {"base.yaml": "- 1\n- 2\n"}, "must hold a mapping at the top, not list"),
    (
        "config: base.yaml",
        {"base.yaml": "model: {droput: 0.1}\n"},
        "search_space.model.dropout: the base config base.yaml has no such key; did you mean "
        "'model.droput'? (script:",
    ),
    (
        "config: base.yaml",
        {"base.yaml": "model: {dropout: {p: 0.1, inplace: false}}\n"},
        "search_space.model.dropout: is a section of the base config base.yaml, not a value: "
        "name one of its keys ('model.dropout.p', 'model.dropout.inplace')",
    ),
    ("config: {model: 1}", {}, "config: names the script's base config file"),
    ("config: base.yaml\nobjective: m:f", {}, "command: give either objective or command"),
    ("config: base.yaml\nscript: {stdout_regex: 'loss=(\\d+)'}", {}, "has no group for the metric"),
    ("config: base.yaml\nscript: {stdout_regex: '(?P<val_loss>'}", {}, "invalid regex"),
    ("config: base.yaml\nscript: {value: mean}", {}, "script.value: must be one of best, last"),
    ("config: base.yaml\nscript: {regex: x}", {}, "script.regex: unknown key"),
    ("config: base.yaml\nscript: {kill_grace_s: 0}", {}, "script.kill_grace_s: must be > 0"),
    ("config: base.yaml\nfixed: {a: '{config}'}", {}, "a fixed value may use {trial_dir}"),
    ("config: base.yaml\nfixed: {config: 1}", {}, "fixed.config: clashes with the placeholder"),
]


COMMAND_LINE = f"[{sys.executable}, train.py, --config, '{{config}}']"
CASES_BAD = [(COMMAND_LINE, c.format(python=sys.executable), f, m) for c, f, m in BAD] + [
    ("config: base.yaml", *case) for case in CONFIG_BAD
]


@pytest.mark.parametrize(("line", "new", "files", "match"), CASES_BAD)
def test_bad_command_input_is_one_spec_error_naming_file_and_key(
    tmp_path: Path, line: str, new: str, files: dict[str, str], match: str
) -> None:
    from hpo.errors import SpecError

    for name, text in {"train.py": "", "train.sh": "", "base.yaml": BASE_BAD, **files}.items():
        (tmp_path / name).write_text(text)
    text = GOOD.replace(line, new)
    path = write_spec(tmp_path / "s.yaml", text)
    if not match:  # the controls: the same files, a good spec
        command = load_spec(path).command
        assert command is not None and command.argv[-2:] == ("--config", "{config}")
        return
    with pytest.raises(SpecError, match=re.escape(match)) as e:
        load_spec(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_config_and_its_placeholder_go_together(tmp_path: Path) -> None:
    from hpo.errors import SpecError

    (tmp_path / "train.py").write_text("")
    (tmp_path / "base.yaml").write_text("model: {dropout: 0.1}\n")
    text = GOOD
    never = text.replace(", --config, '{config}'", "")
    with pytest.raises(SpecError, match="config: the command never passes it"):
        load_spec(write_spec(tmp_path / "s.yaml", never))
    unnamed = text.replace("config: base.yaml\n", "")
    with pytest.raises(SpecError, match=re.escape("uses {config} but the spec names no base")):
        load_spec(write_spec(tmp_path / "s.yaml", unnamed))
    lone = text.replace("command:", "script: {}\nobjective: m:f\n#")
    with pytest.raises(SpecError, match="config: only goes with command:"):
        load_spec(write_spec(tmp_path / "s.yaml", lone))


def test_a_stored_command_spec_reads_back_the_same(tmp_path: Path) -> None:
    from hpo.spec import spec_from_dict

    (tmp_path / "train.py").write_text("")
    (tmp_path / "base.yaml").write_text("model: {dropout: 0.1}\n")
    spec = load_spec(write_spec(tmp_path / "s.yaml", GOOD))
    stored = json.loads(json.dumps(spec.to_dict()))
    assert "objective" not in stored and stored["config"] == str(tmp_path / "base.yaml")
    again = spec_from_dict(stored, source="study 'bad'", check_objective=False)
    assert again.command == spec.command and again.to_dict() == spec.to_dict()
