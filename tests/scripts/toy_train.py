"""A training script as people write them, for tests/test_script.py: a nested YAML/JSON
config, a checkpoint per epoch, ``--resume``. It trains nothing: the "loss" of epoch e is
``(x - 3) ** 2 + 1 / e``. Standard library and PyYAML only.

--report: client (hpo.report), json ([hpo] lines), text (val_loss=... lines), none.
--crash-at E: exit 1 after epoch E, unless resuming.   --fork N: start N children that
sleep (a DataLoader's workers).   --ignore-prune: go on when hpo.report says stop.
--sleep S: seconds per epoch.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

import hpo

p = argparse.ArgumentParser()
p.add_argument("--config")
p.add_argument("--resume")
p.add_argument("--report", default="client")
p.add_argument("--crash-at", type=int, default=0)
p.add_argument("--fork", type=int, default=0)
p.add_argument("--ignore-prune", action="store_true")
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--x", type=float)
p.add_argument("--epochs", type=int)
args, rest = p.parse_known_args()

config = {"model": {"x": 0.0}, "training": {"epochs": 3, "checkpoint_dir": "ckpt"}}
if args.config:
    text = Path(args.config).read_text()
    config = json.loads(text) if args.config.endswith(".json") else yaml.safe_load(text)
x = args.x if args.x is not None else config["model"]["x"]
epochs = args.epochs or config["training"]["epochs"]
ckpt_dir = Path(config["training"]["checkpoint_dir"])
ckpt_dir.mkdir(parents=True, exist_ok=True)

start = 1
if args.resume:
    start = json.loads(Path(args.resume).read_text())["epoch"] + 1
    print(f"resumed from {args.resume} at epoch {start}", flush=True)

children = []
for _ in range(args.fork):
    pid = os.fork()
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    children.append(pid)
if children:
    Path(os.environ.get("HPO_TRIAL_DIR", "."), "children.json").write_text(json.dumps(children))

for epoch in range(start, epochs + 1):
    time.sleep(args.sleep)
    loss = (x - 3) ** 2 + 1 / epoch
    (ckpt_dir / "last.json").write_text(json.dumps({"epoch": epoch}))
    if args.report == "client":
        if hpo.report(epoch, val_loss=loss, val_acc=1 / (1 + loss)) and not args.ignore_prune:
            print(f"pruned at epoch {epoch}", flush=True)
            sys.exit(0)
    elif args.report == "json":
        print("[hpo] " + json.dumps({"epoch": epoch, "val_loss": loss}))
    elif args.report == "text":
        print(f"Epoch {epoch}/{epochs}")
        print(f"train_loss={loss + 0.5:.6f} val_loss={loss:.6f}")
    if args.crash_at == epoch and not args.resume:
        print("RuntimeError: CUDA out of memory (simulated)", file=sys.stderr)
        sys.exit(1)
print("done", flush=True)
