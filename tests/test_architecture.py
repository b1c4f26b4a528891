"""The package layout's rules, checked on the source: no import cycles, Optuna's private names
only in the adapters of ``hpo._optuna``, the public API whole."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hpo"
# A private Optuna name: any dotted path through a module or attribute with a leading underscore.
_PRIVATE = re.compile(r"\boptuna(\.\w+)*\._(?!_)\w+")
# Private attributes of Optuna's objects (a Study, a Trial, a FrozenTrial) that a module path
# does not show: read them through hpo._optuna._study.
_PRIVATE_ATTRS = re.compile(
    r"\.(_study_id|_trial_id|_get_latest_trial|_cached_frozen_trial|_suggest)\b"
    r"|\b(ostudy|optuna|study)\._storage\b"
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(path: Path, module: str, known: set[str]) -> Iterator[str]:
    """Every hpo module ``module`` imports: at the top, inside functions and for type checking
    alike, since a lazy import only hides a cycle."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from pkg import submodule` depends on the submodule, else on pkg itself.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        yield from (n for n in names if n in known)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        # hpo/__init__ is the lazy facade over everything, imported by name on first use.
        if name == "hpo":
            continue
        graph[name] = {d for d in _imports(path, name, known) if d != name and d != "hpo"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_back() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    graph = _graph()
    graph["hpo.storage._rdb"] = {*graph["hpo.storage._rdb"], "hpo.worker._loop"}
    assert _cycle(graph) is not None


def test_optuna_private_names_appear_only_in_hpo_optuna() -> None:
    offenders = []
    for name, path in _modules().items():
        if name.startswith("hpo._optuna"):
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            private = _PRIVATE.search(code) and ("import" in code or "optuna." in code)
            if private or (_PRIVATE_ATTRS.search(code) and "self._suggest" not in code):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{lineno}: {line.strip()}")
    assert not offenders, "private Optuna names outside hpo/_optuna:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "module",
    [
        "hpo.spec",
        "hpo.search",
        "hpo.storage",
        "hpo.worker",
        "hpo.study",
        "hpo.training",
        "hpo.objectives",
        "hpo.reporting",
        "hpo.cli",
        "hpo.cluster",
        "hpo._optuna",
    ],
)
def test_each_package_exports_what_its_all_names(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing


def test_public_api_functions_are_not_shadowed_by_modules() -> None:
    import hpo

    for name in hpo.__all__:
        importlib.import_module("hpo.worker")  # importing a package must not rebind hpo.<name>
        value = getattr(hpo, name)
        assert not isinstance(value, type(hpo)), f"hpo.{name} is a module"
    assert callable(hpo.run) and callable(hpo.join)


def test_no_top_level_objectives_package_is_installed() -> None:
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    assert 'include = ["hpo*"]' in pyproject
    assert not (ROOT.parent / "objectives").exists()
