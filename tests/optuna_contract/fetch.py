"""Fetch the installed Optuna's own tests from its source distribution; print where they are.

``make optuna-contract`` runs Optuna's tests for what hpo replaces (its TPE sampler, its
Hyperband pruner, its worker storage) against hpo's classes. The tests must be those of the
Optuna that is installed, so they are taken at run time from that release's source distribution
on the package index (``pip download``), never from a copy kept in this repository. Only the
sdist's ``tests/`` and ``pyproject.toml`` are extracted, into ``.optuna-src/optuna-<version>/``
(ignored by git; ``HPO_OPTUNA_SRC`` moves it), so that ``import optuna`` in those tests still
finds the installed package, not the sdist's copy of it. A second run reuses the extraction.

Usage: ``python tests/optuna_contract/fetch.py`` prints the extracted directory (the rootdir
to run pytest in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("HPO_OPTUNA_SRC", ROOT / ".optuna-src"))
# What the contract runs from the sdist: its tests (with their conftest) and its pytest options.
WANTED = ("tests/", "pyproject.toml")


def fetch(version: str, cache: Path = CACHE) -> Path:
    """The directory holding Optuna ``version``'s ``tests/``, downloaded if not there yet."""
    target = cache / f"optuna-{version}"
    if (target / "tests" / "conftest.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"optuna=={version}",
                "--dest",
                tmp,
            ],
            check=True,
            stdout=sys.stderr,  # stdout carries only the path
        )
        (sdist,) = Path(tmp).glob(f"optuna-{version}.tar.gz")
        staging = Path(tmp) / "staging"
        prefix = f"optuna-{version}/"
        with tarfile.open(sdist) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(WANTED)
            ]
            tar.extractall(staging, members=members, filter="data")
        # Moved into place whole, so an interrupted fetch never looks complete.
        shutil.rmtree(target, ignore_errors=True)
        (staging / f"optuna-{version}").rename(target)
    return target


def main() -> None:
    print(fetch(metadata.version("optuna")))


if __name__ == "__main__":
    main()
