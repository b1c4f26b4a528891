"""Trials packed on one GPU: aggregate training samples/s and GPU utilisation, K = 1, 2, 4.

Each K runs the same study (the built-in ``cnn`` objective on 8x8 digits: small trials, the
case packing is for; fixed epochs, no pruning, random sampler) through the real worker,
``hpo worker STUDY --gpus 0 --per-gpu K``, on a fresh SQLite file, while ``nvidia-smi``
samples utilisation every 200 ms. Samples/s counts training samples over all trials
(epochs run x training-set size) divided by the worker's wall time, start-up included.

    python benchmarks/gpu_packing.py --packs 1 2 4 --trials 16 --out packing.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: packing
objective: {objective}
metric: val_accuracy
direction: maximize
search_space:
  lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.4}}
fixed: {{epochs: {epochs}, batch_size: {batch_size}}}
sampler: {{type: random, seed: 0}}
budget: {{n_trials: {trials}}}
checkpoint_dir: {ckpt}
"""


def sample_utilisation(stop: threading.Event, out: list[float]) -> None:
    if shutil.which("nvidia-smi") is None:
        return
    proc = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            "200",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if stop.is_set():
            break
        if line.strip().isdigit():
            out.append(float(line))
    proc.kill()


def run_one(k: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    spec = workdir / f"packing-{k}.yaml"
    spec.write_text(
        SPEC.format(
            objective=args.objective,
            epochs=args.epochs,
            batch_size=args.batch_size,
            trials=args.trials,
            ckpt=workdir / f"ckpt-{k}",
        )
    )
    url = f"sqlite:///{workdir / f'packing-{k}.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    hpo = [sys.executable, "-m", "hpo.cli"]
    subprocess.run([*hpo, "create", str(spec), "--storage", url], check=True, env=env)
    util: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_utilisation, args=(stop, util), daemon=True)
    sampler.start()
    slots = (
        ["--gpus", args.gpu, "--per-gpu", str(k)]
        if args.device == "cuda"
        else ["--gpus", "none", "--processes", str(k)]
    )
    start = time.perf_counter()
    subprocess.run(
        [*hpo, "worker", "packing", "--storage", url, *slots],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    stop.set()
    trials = optuna.load_study(study_name="packing", storage=url).get_trials()
    import importlib

    n_train = (
        importlib.import_module(f"hpo.objectives.{args.objective}").load_data().x_train.shape[0]
    )
    epochs = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)
    busy = [u for u in util if u > 0]
    return {
        "per_gpu": k,
        "trials": len(trials),
        "wall_s": round(wall, 2),
        "epochs": epochs,
        "samples_per_s": round(epochs * n_train / wall, 1) if n_train else float("nan"),
        "gpu_util_mean": round(sum(util) / len(util), 1) if util else float("nan"),
        "gpu_util_busy_mean": round(sum(busy) / len(busy), 1) if busy else float("nan"),
        "device": trials[0].user_attrs.get("device", "?"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--objective", default="cnn")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--gpu", default="0")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(k, args, Path(tmp)) for k in args.packs]
    base = rows[0]["samples_per_s"]
    print(
        f"{'per_gpu':>7} {'trials':>6} {'wall_s':>7} {'samples/s':>10} {'vs 1':>5} "
        f"{'util %':>6} {'device'}"
    )
    for r in rows:
        print(
            f"{r['per_gpu']:>7} {r['trials']:>6} {r['wall_s']:>7} {r['samples_per_s']:>10} "
            f"{r['samples_per_s'] / base:>5.2f} {r['gpu_util_mean']:>6} {r['device']}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
