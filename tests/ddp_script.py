"""A data-parallel script as torchrun starts it: gloo ranks that all-reduce each epoch, and
hpo's client called by every rank (rank 0's metrics are the ones reported).

    torchrun --standalone --nproc-per-node {gpus} ddp_script.py {x} {trial_dir}

Each rank writes what it saw to ``{trial_dir}/rank{RANK}.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import hpo

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x, trial_dir = float(sys.argv[1]), Path(sys.argv[2])
sums, stopped = [], None
for epoch in range(3):
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # 1 + 2 + ... + world on every rank: the ranks talk
    sums.append(total.item())
    # rank 0's loss is the one hpo records; other ranks' calls only wait for its verdict
    loss = (x - 0.3) ** 2 + 1.0 / (epoch + 1) + rank
    if hpo.report(epoch, loss=loss):
        stopped = epoch
        break
seen = {
    "rank": rank,
    "world": world,
    "sums": sums,
    "stopped": stopped,
    "slot_gpus": os.environ.get("HPO_SLOT_GPUS"),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
}
(trial_dir / f"rank{rank}.json").write_text(json.dumps(seen))
dist.destroy_process_group()
