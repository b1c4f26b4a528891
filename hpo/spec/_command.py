"""A spec's ``command:``: the template, its placeholders, the base config and how the script's
metrics are read, all checked at load. The helpers that fill a template and write a config
are here too, so the trial process (``hpo.script``) uses the very rules load checked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import SpecError
from hpo.spec._model import COMMAND_OBJECTIVE, KATIB_REGEX, PLACEHOLDERS, CommandSpec, ParamSpec
from hpo.spec._validate import Validator, dot, one_line, suggest

_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Placeholders a ``fixed`` string may use (in a command spec): paths known per trial.
FIXED_PLACEHOLDERS = ("trial_dir", "checkpoint_dir")
_SCRIPT_KEYS = (
    "workdir",
    "config_new_keys",
    "stdout_regex",
    "value",
    "resume_file",
    "kill_grace_s",
)


class TemplateError(ValueError):
    """A stray brace in a command argument."""


def template_names(arg: str) -> list[str]:
    """The placeholder names in ``arg``, in order; ``{{`` and ``}}`` are literal braces."""
    names = []
    for m in _BRACES.finditer(arg):
        if m.group(0) in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"unmatched {m.group(0)!r}; write {m.group(0) * 2!r} for a brace")
        names.append(m.group(1))
    return names


def fill(arg: str, values: Mapping[str, str]) -> str:
    """``arg`` with each ``{name}`` replaced by ``values[name]`` and doubled braces undone."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        return values[m.group(1)]

    return _BRACES.sub(sub, arg)


def format_value(value: Any) -> str:
    """A parameter as a command-line word: numbers and strings as written, others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value)


def read_config(path: str | Path) -> dict[str, Any]:
    """The base config as a mapping; ValueError says what is wrong with it."""
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"must be a YAML (.yaml, .yml) or JSON (.json) file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {one_line(e)}") from None
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path} is not valid {kind}: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top, not {type(data).__name__}")
    return data


def write_config(data: Mapping[str, Any], path: Path) -> None:
    """Write a config as its base was written: JSON for .json, else YAML (keys in order)."""
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)
    path.write_text(text, encoding="utf-8")


def has_key(config: Mapping[str, Any], dotted: str) -> bool:
    return _value_at(config, dotted, _MISSING) is not _MISSING


_MISSING = object()


def _value_at(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """The value at a dotted key, or ``default`` where there is none."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key, creating the mappings on its way (only new keys need that)."""
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if part in node:
                raise ValueError(f"{dotted}: {part!r} holds {child!r}, not a mapping")
            child = node[part] = {}
        node = child
    node[last] = value


def leaf_keys(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_keys(value, f"{name}.")
        else:
            yield name


def metrics_regex(raw: str) -> str:
    """The regex a spec's ``stdout_regex`` means (``katib`` is Katib's name=value default)."""
    return KATIB_REGEX if raw == "katib" else raw


def resolve_program(program: str, workdir: str) -> str | None:
    """The command's program as it will run: on PATH, or a file relative to ``workdir``."""
    if os.sep not in program:
        found = shutil.which(program)
        if found:
            return program
    path = Path(workdir, program)
    if path.is_file() and os.access(path, os.X_OK):
        # absolute, not resolved: a virtual environment's python is a link that must stay one
        return os.path.abspath(path)
    return None


def objective_or_command(
    v: Validator,
    data: Mapping[str, Any],
    *,
    space: tuple[ParamSpec, ...],
    fixed: Mapping[str, Any],
    metrics: tuple[str, ...],
    check_files: bool,
) -> tuple[str, CommandSpec | None]:
    """The spec's Python objective, or the command it runs instead; ``check_files`` reads
    what a command names (the program, the base config)."""
    if "command" not in data:
        if isinstance(data.get("config"), Mapping):
            raise SpecError(
                v.source,
                "config",
                data["config"],
                "names a command's base config file; Ray Tune's `config` is `search_space:` "
                "(or `fixed:` for constant values)",
            )
        for key in ("config", "script"):
            if key in data:
                raise SpecError(v.source, key, data[key], "only goes with command:")
        if "objective" not in data:
            raise SpecError(
                v.source, "objective", None, "is required (or command: to run a script)"
            )
        return v.string(data, "objective"), None
    if "objective" in data:
        raise SpecError(
            v.source, "command", data["command"], "give either objective or command, not both"
        )
    return COMMAND_OBJECTIVE, _command_spec(v, data, space, fixed, metrics, check_files)


def _command_spec(
    v: Validator,
    data: Mapping[str, Any],
    space: tuple[ParamSpec, ...],
    fixed: Mapping[str, Any],
    metrics: tuple[str, ...],
    check_files: bool,
) -> CommandSpec:
    """Validate ``command``, ``config`` and ``script``; ``check_files`` reads what they name."""
    base = _spec_dir(v.source)
    argv = _argv(v, data["command"])
    script = data.get("script") or {}
    if not isinstance(script, Mapping):
        raise SpecError(v.source, "script", script, "must be a mapping")
    v.keys(script, "script", required=(), optional=_SCRIPT_KEYS)
    workdir = str((base / v.string(script, "workdir")).resolve()) if "workdir" in script else ""
    workdir = workdir or str(base)
    params = [p.name for p in space] + list(fixed)
    for name in params:
        if name in PLACEHOLDERS:
            section = "fixed" if name in fixed else "search_space"
            raise SpecError(
                v.source, dot(section, name), None, f"clashes with the placeholder {{{name}}}"
            )
    used = _placeholders(v, argv, params)
    _fixed_placeholders(v, fixed)
    config = _config_path(v, data, base, used)
    new_keys = script.get("config_new_keys", False)
    if not isinstance(new_keys, bool):
        raise SpecError(v.source, "script.config_new_keys", new_keys, "must be true or false")
    regex = _regex(v, script, metrics)
    value = v.choice(script.get("value", "best"), "script.value", ("best", "last"))
    resume_file = v.string(script, "resume_file") if "resume_file" in script else None
    grace = float(v.number(script.get("kill_grace_s", 10.0), "script.kill_grace_s"))
    if grace <= 0:
        raise SpecError(v.source, "script.kill_grace_s", grace, "must be > 0 seconds")
    if check_files:
        argv = _check_program(v, argv, workdir)
        if config is not None:
            _check_config(v, config, params, used, fixed, new_keys)
    return CommandSpec(
        argv=tuple(argv),
        workdir=workdir,
        config=config,
        config_new_keys=new_keys,
        stdout_regex=regex,
        value=value,
        resume_file=resume_file,
        kill_grace_s=grace,
    )


def _spec_dir(source: str) -> Path:
    path = Path(source)
    return path.resolve().parent if path.is_file() else Path.cwd()


# Shell syntax in the string form of a command: hpo runs no shell, so each would be an argument.
_SHELL_SYNTAX = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1", "&>"})


def _argv(v: Validator, raw: Any) -> list[str]:
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as e:
            raise SpecError(v.source, "command", raw, f"cannot split it: {one_line(e)}") from None
        shell = [a for a in argv if a in _SHELL_SYNTAX or a.startswith(("2>", ">", "<"))]
        if shell:
            raise SpecError(
                v.source,
                "command",
                raw,
                f"runs without a shell, so {shell[0]!r} would reach the program as an argument; "
                "hpo keeps the output in the trial's logs already (for shell syntax: "
                "[sh, -c, '...'])",
            )
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        argv = list(raw)
    else:
        raise SpecError(v.source, "command", raw, "must be a list of strings (or one string)")
    if not argv or not argv[0].strip():
        raise SpecError(v.source, "command", raw, "must name a program")
    return argv


def _placeholders(v: Validator, argv: list[str], params: list[str]) -> set[str]:
    known = [*PLACEHOLDERS, *params]
    used: set[str] = set()
    for i, arg in enumerate(argv):
        try:
            names = template_names(arg)
        except TemplateError as e:
            raise SpecError(v.source, f"command.{i}", arg, str(e)) from None
        for name in names:
            if name not in known:
                hint = suggest(name, known)
                tip = f"did you mean {{{hint[0]}}}?" if hint else f"known: {', '.join(known)}"
                raise SpecError(
                    v.source, f"command.{i}", arg, f"unknown placeholder {{{name}}}; {tip}"
                )
            if name == "args" and arg != "{args}":
                raise SpecError(
                    v.source, f"command.{i}", arg, "{args} must be an argument of its own"
                )
        if i == 0 and names:
            raise SpecError(v.source, "command.0", arg, "the program cannot be a placeholder")
        used.update(names)
    return used


def _fixed_placeholders(v: Validator, fixed: Mapping[str, Any]) -> None:
    for key, value in fixed.items():
        if not isinstance(value, str):
            continue
        try:
            names = template_names(value)
        except TemplateError as e:
            raise SpecError(v.source, dot("fixed", key), value, str(e)) from None
        for name in names:
            if name not in FIXED_PLACEHOLDERS:
                allowed = ", ".join(f"{{{n}}}" for n in FIXED_PLACEHOLDERS)
                raise SpecError(
                    v.source,
                    dot("fixed", key),
                    value,
                    f"unknown placeholder {{{name}}}; a fixed value may use {allowed}",
                )


def _config_path(v: Validator, data: Mapping[str, Any], base: Path, used: set[str]) -> str | None:
    if "config" not in data:
        if "config" in used:
            raise SpecError(
                v.source, "command", None, "uses {config} but the spec names no base config:"
            )
        return None
    raw = data["config"]
    if isinstance(raw, Mapping):
        raise SpecError(
            v.source,
            "config",
            raw,
            "names the script's base config file; searched values go under search_space:",
        )
    path = v.string(data, "config")
    if "config" not in used:
        raise SpecError(
            v.source, "config", path, "the command never passes it: add {config} to command"
        )
    if Path(path).suffix.lower() not in CONFIG_SUFFIXES:
        raise SpecError(v.source, "config", path, "must be a .yaml, .yml or .json file")
    return str((base / path).resolve())


def _regex(v: Validator, script: Mapping[str, Any], metrics: tuple[str, ...]) -> str | None:
    if script.get("stdout_regex") is None:
        return None
    raw = v.string(script, "stdout_regex")
    regex = metrics_regex(raw)
    try:
        groups = re.compile(regex).groupindex
    except re.error as e:
        raise SpecError(v.source, "script.stdout_regex", raw, f"invalid regex: {e}") from None
    if {"name", "value"} <= set(groups):
        return regex
    for metric in metrics:
        if metric not in groups:
            raise SpecError(
                v.source,
                "script.stdout_regex",
                raw,
                f"has no group for the metric {metric!r}: write (?P<{metric}>...), or name "
                "and value groups as Katib's name=value regex has (stdout_regex: katib)",
            )
    return regex


def _check_program(v: Validator, argv: list[str], workdir: str) -> list[str]:
    program = resolve_program(argv[0], workdir)
    if program is None:
        where = Path(workdir, argv[0])
        why = "is not executable" if where.is_file() else "is not on PATH nor a file"
        raise SpecError(v.source, "command.0", argv[0], f"{why} (looked in PATH and {workdir})")
    # python src/train.py: the script itself, when no placeholder hides it
    if (
        Path(argv[0]).name.startswith("python")
        and len(argv) > 1
        and argv[1].endswith(".py")
        and not template_names(argv[1])
        and not Path(workdir, argv[1]).is_file()
    ):
        raise SpecError(v.source, "command.1", argv[1], f"no such file in {workdir}")
    return [program, *argv[1:]]


def _check_config(
    v: Validator,
    path: str,
    params: list[str],
    used: set[str],
    fixed: Mapping[str, Any],
    new_keys: bool,
) -> None:
    try:
        config = read_config(path)
    except ValueError as e:
        raise SpecError(v.source, "config", path, str(e)) from None
    if new_keys:
        return
    leaves = list(leaf_keys(config))
    for name in params:
        section = "fixed" if name in fixed else "search_space"
        node = _value_at(config, name)
        if isinstance(node, Mapping) and node and not isinstance(fixed.get(name), Mapping):
            # Writing one value there would drop the whole section (the keys under it)
            inner = [k for k in leaves if k.startswith(f"{name}.")]
            raise SpecError(
                v.source,
                dot(section, name),
                None,
                f"is a section of the base config {Path(path).name}, not a value: name one of "
                f"its keys ({', '.join(repr(k) for k in inner[:4])})",
            )
        if name in used or has_key(config, name):
            continue  # a parameter its own placeholder passes need not be in the config
        hint = suggest(name, leaves)
        tip = f"; did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(
            v.source,
            dot(section, name),
            None,
            f"the base config {Path(path).name} has no such key{tip} "
            "(script: {config_new_keys: true} adds keys it lacks)",
        )
