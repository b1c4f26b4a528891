"""The sequence objective's on-disk, memory-mapped windows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from hpo.objectives._windows import rhythm_windows

SMALL = {"n_samples": 300, "n_channels": 3, "seq_len": 16, "n_classes": 4, "noise": 1.0}


def test_generated_once_deterministic_and_standardized(tmp_path: Path) -> None:
    a = rhythm_windows(tmp_path / "a", **SMALL, seed=0)
    (directory,) = (tmp_path / "a").iterdir()
    stamp = (directory / "x_train.npy").stat().st_mtime_ns
    again = rhythm_windows(tmp_path / "a", **SMALL, seed=0)
    assert (directory / "x_train.npy").stat().st_mtime_ns == stamp  # read, not regenerated
    b = rhythm_windows(tmp_path / "b", **SMALL, seed=0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [180, 60, 60]
    x_a, y_a = a["val"].__getitems__(list(range(60)))[7]
    x_b, y_b = b["val"][7]
    assert torch.equal(x_a, x_b) and int(y_a) == int(y_b) and x_a.shape == (3, 16)
    assert torch.equal(again["train"][5][0], a["train"][5][0])
    # a batch read in shuffled order returns the windows in that order
    batch = a["train"].__getitems__([9, 2, 5])
    assert torch.equal(batch[1][0], a["train"][2][0])
    train = torch.stack([a["train"][i][0] for i in range(180)])
    np.testing.assert_allclose(train.mean(dim=(0, 2)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(dim=(0, 2)).numpy(), 1, atol=1e-2)


def test_a_dataset_larger_than_the_memory_limit_streams_from_disk(tmp_path: Path) -> None:
    """120 MB of windows, generated and read for an epoch under a 48 MB allowance.

    RLIMIT_DATA counts the heap and private writable mappings, not read-only file mappings,
    so loading the set into memory (or generating it in one piece) fails; memory-mapping it
    does not.
    """
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        import numpy as np
        import torch
        from torch.utils.data import DataLoader
        from hpo.objectives._windows import rhythm_windows

        def vm_data() -> int:
            for line in open("/proc/self/status"):
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
            raise RuntimeError("no VmData")

        allowance = 48 * 2**20
        limit = vm_data() + allowance
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        splits = rhythm_windows(
            Path({str(tmp_path)!r}), n_samples=60_000, n_channels=8, seq_len=64, n_classes=5,
            noise=1.0, seed=0,
        )
        nbytes = sum(p.stat().st_size for p in Path({str(tmp_path)!r}).rglob("x_*.npy"))
        assert nbytes > 2 * allowance, nbytes
        seen = 0
        for x, y in DataLoader(splits["train"], batch_size=512, shuffle=True):
            seen += len(y)
        assert seen == len(splits["train"]) == 36_000
        try:
            np.load(Path({str(tmp_path)!r}).glob("*/x_train.npy").__next__())
        except MemoryError:
            print("in-memory load refused")
        print("streamed", seen)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "streamed 36000" in out.stdout
    assert "in-memory load refused" in out.stdout  # the limit would have caught a full load
