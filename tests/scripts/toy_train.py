"""A training script as people write them, for tests/test_script.py: a nested YAML or JSON
config, a checkpoint per epoch, ``--resume``. It trains nothing: epoch e's "loss" is
``(x - 3) ** 2 + 1 / e``. The standard library and PyYAML only.

``--case`` picks a behaviour (one study runs them all, one per grid point):
client: reports with hpo.report.   client-prune: reports a loss of 100 and stops when told
(a forked RANK=1 process asks for the same verdict).   ignore-prune: reports 100, goes on.
json: prints [hpo] lines.   json-prune: prints 100 slowly, forks 2 children (a DataLoader's
workers).   text: prints val_loss=... (the spec's katib regex).   crash: exits 1 after
epoch 2 unless resuming.   fail: exits 3 at once.   silent: reports nothing.
trap: ignores SIGTERM, prints 100 slowly.   hang: forks 2 children, then sleeps (for
trial_timeout and stop --now).
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml

import hpo

p = argparse.ArgumentParser()
p.add_argument("--config")
p.add_argument("--resume")
p.add_argument("--case", default="client")
p.add_argument("--x", type=float)
args, rest = p.parse_known_args()

trial_dir = Path(os.environ.get("HPO_TRIAL_DIR", "."))
number = os.environ.get("HPO_TRIAL_NUMBER", "0")
seen = {"argv": sys.argv[1:], "cwd": os.getcwd()}
seen["env"] = {k: v for k, v in os.environ.items() if k.startswith("HPO_") or k == "RANK"}
# What a terminal's Ctrl-C and Slurm's USR1 would do to it: as when run by hand, not ignored
seen["ignored"] = [
    s.name for s in (signal.SIGINT, signal.SIGUSR1) if signal.getsignal(s) is signal.SIG_IGN
]
(trial_dir / f"seen-{number}.json").write_text(json.dumps(seen))

config = {"model": {"x": 0.0}, "training": {"epochs": 3, "checkpoint_dir": "ckpt"}}
if args.config:
    text = Path(args.config).read_text()
    config = json.loads(text) if args.config.endswith(".json") else yaml.safe_load(text)
x = args.x if args.x is not None else config["model"]["x"]
epochs = config["training"]["epochs"]
ckpt_dir = Path(config["training"]["checkpoint_dir"])
ckpt_dir.mkdir(parents=True, exist_ok=True)
case = args.case
slow = case in ("json-prune", "trap")
if slow:
    epochs = 100
if case == "fail":
    print("Traceback (most recent call last):\nValueError: boom", file=sys.stderr)
    sys.exit(3)
if case == "trap":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if case in ("json-prune", "hang"):
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children.append(pid)
    (trial_dir / "children.json").write_text(json.dumps([os.getpid(), *children]))
    if case == "hang":
        print("hanging", flush=True)
        time.sleep(120)

start = 1
if args.resume:
    start = json.loads(Path(args.resume).read_text())["epoch"] + 1
    print(f"resumed from {args.resume} at epoch {start}", flush=True)


def other_rank_asks(epoch: int) -> None:
    """A torchrun rank other than 0: its report waits for rank 0's verdict."""
    if os.fork() == 0:
        os.environ["RANK"] = "1"
        stop = hpo.report(epoch)
        (trial_dir / f"rank1-epoch{epoch}.json").write_text(json.dumps(stop))
        os._exit(0)


for epoch in range(start, epochs + 1):
    loss = 100.0 if "prune" in case or case == "trap" else (x - 3) ** 2 + 1 / epoch
    (ckpt_dir / "last.json").write_text(json.dumps({"epoch": epoch}))
    if slow:
        time.sleep(0.2)
    if case.startswith("client") or case == "ignore-prune":
        if case == "client-prune":
            other_rank_asks(epoch)
        stop = hpo.report(epoch, val_loss=loss, val_acc=1 / (1 + loss))
        if stop and case != "ignore-prune":
            print(f"pruned at epoch {epoch}", flush=True)
            time.sleep(0.3)  # the forked rank writes its verdict
            sys.exit(0)
        if case == "ignore-prune":
            time.sleep(0.6)  # past kill_grace_s (1 s) after the verdict at epoch 1
    elif case in ("json", "json-prune", "crash", "trap"):
        print("[hpo] " + json.dumps({"epoch": epoch, "val_loss": loss}))
    elif case == "text":
        print(f"Epoch {epoch}/{epochs}")
        print(f"train_loss={loss + 0.5:.6f} val_loss={loss:.6f}")
    if case == "crash" and epoch == 2 and not args.resume:
        print("RuntimeError: CUDA out of memory (simulated)", file=sys.stderr)
        sys.exit(1)
print("done", flush=True)
