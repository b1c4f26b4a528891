"""The study spec: YAML in, frozen typed objects out, validated once.

Every error is a :class:`SpecError` whose message names the file, the dotted key and the
offending value, so the CLI can print it on one line and exit 2 without a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import SpecError
from hpo.search import (
    PRUNERS,
    SAMPLERS,
    check_pruner_options,
    check_sampler_options,
    make_pruner,
    make_sampler,
)
from hpo.spec._command import command_spec
from hpo.spec._foreign import metric_hint, param_hint
from hpo.spec._model import (
    COMMAND_OBJECTIVE,
    MAX_GRID_POINTS,
    PARAM_TYPES,
    BudgetSpec,
    CommandSpec,
    ParamSpec,
    PrunerSpec,
    RetrySpec,
    SamplerSpec,
    StudySpec,
    pruner_dict,
)
from hpo.spec._objective import check_accepts, resolve_objective
from hpo.spec._validate import Validator, dot, one_line

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # fullmatch


def load_spec(path: str | Path, *, check_objective: bool = True) -> StudySpec:
    """Read and validate a YAML study spec file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), None, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), None, None, f"cannot read: {e}") from None
    return parse_spec(text, source=str(path), check_objective=check_objective)


def parse_spec(text: str, *, source: str = "<spec>", check_objective: bool = True) -> StudySpec:
    """Validate a spec from YAML text; ``source`` names it in errors."""
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: no !!python/ tags
    except _DuplicateKeyError as e:
        raise SpecError(source, e.key, None, e.problem or "duplicate key") from None
    except yaml.MarkedYAMLError as e:
        where = _at(e.problem_mark) if e.problem_mark else "?"
        problem = e.problem or e.context or "invalid YAML"
        raise SpecError(source, None, None, f"YAML syntax error at {where}: {problem}") from None
    except yaml.YAMLError as e:
        raise SpecError(source, None, None, f"invalid YAML: {one_line(e)}") from None
    except (ValueError, OverflowError) as e:  # a bad timestamp (2024-13-01), a huge int
        raise SpecError(source, None, None, f"invalid YAML value: {one_line(e)}") from None
    except RecursionError:
        raise SpecError(source, None, None, "YAML nested too deeply") from None
    return spec_from_dict(data, source=source, check_objective=check_objective)


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem=problem)
        self.key = key


class _SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice instead of keeping the last one."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node  # to name a duplicate key by its dotted path
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then an override is YAML's way to extend a mapping
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: super() reports it
            if first is not key_node:
                path = dot("", *_node_path(self._root, node), key)
                again, before = _at(key_node.start_mark), _at(first.start_mark)
                raise _DuplicateKeyError(path, f"duplicate key at {again} (first at {before})")
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 1e-5 and 3e3 as strings (its floats need a dot and a signed exponent);
# a spec means numbers.
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _node_path(root: yaml.Node, target: yaml.Node) -> list[Any]:
    """The keys leading from ``root`` to ``target`` (searched breadth-first, aliases once)."""
    queue: list[tuple[yaml.Node, list[Any]]] = [(root, [])]
    seen: set[int] = set()
    while queue:
        node, path = queue.pop(0)
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            queue += [(v, [*path, k.value]) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            queue += [(v, [*path, str(i)]) for i, v in enumerate(node.value)]
    return []


def spec_from_dict(data: Any, *, source: str = "<spec>", check_objective: bool = True) -> StudySpec:
    """Validate an already-parsed spec mapping (as stored with a study)."""
    try:
        return _spec_from_dict(data, source, check_objective)
    except RecursionError:  # a patient pruner wrapping one wrapping one ...
        raise SpecError(source, None, None, "spec nested too deeply") from None


def _spec_from_dict(data: Any, source: str, check_objective: bool) -> StudySpec:
    v = Validator(source)
    if not isinstance(data, Mapping):
        raise SpecError(source, None, data, "a spec must be a YAML mapping")
    v.keys(
        data,
        "",
        required=("name",),
        optional=(
            "objective",
            "command",
            "config",
            "script",
            "description",
            "metric",
            "metrics",
            "direction",
            "directions",
            "search_space",
            "fixed",
            "sampler",
            "pruner",
            "budget",
            "retry",
            "storage",
            "checkpoint_dir",
        ),
    )
    name = v.string(data, "name")
    if not _NAME_RE.fullmatch(name):
        raise SpecError(source, "name", name, "must be 1-128 letters, digits, '_', '.' or '-'")
    metrics, directions = _metrics_and_directions(v, data)
    space = _search_space(v, data.get("search_space", {}))
    fixed = _fixed(v, data.get("fixed", {}), space)
    objective, command = _objective_or_command(v, data, space, fixed, metrics, check_objective)
    sampler = _sampler(v, data.get("sampler", {"type": "tpe"}), len(directions))
    pruner = _pruner(v, data.get("pruner", {"type": "none"}), "pruner")
    budget = _budget(v, data.get("budget", {}))
    retry = _retry(v, data.get("retry", {}))
    storage = data.get("storage")
    if storage is not None:
        storage = v.string(data, "storage")
    checkpoint_dir = v.string(data, "checkpoint_dir") if "checkpoint_dir" in data else "checkpoints"
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError(source, "description", description, "must be a string")

    spec = StudySpec(
        name=name,
        objective=objective,
        metrics=metrics,
        directions=directions,
        search_space=space,
        fixed=fixed,
        sampler=sampler,
        pruner=pruner,
        budget=budget,
        retry=retry,
        storage=storage,
        checkpoint_dir=checkpoint_dir,
        description=description,
        source=source,
        command=command,
    )
    if spec.is_grid:
        _check_grid(v, spec)
    if pruner.type != "none" and len(directions) > 1:
        raise SpecError(source, "pruner.type", pruner.type, "pruning needs a single objective")
    _build_optuna_objects(v, spec)
    if check_objective and command is None:
        check_accepts(spec, resolve_objective(spec.objective, source=source))
    return spec


def _objective_or_command(
    v: Validator,
    data: Mapping[str, Any],
    space: tuple[ParamSpec, ...],
    fixed: Mapping[str, Any],
    metrics: tuple[str, ...],
    check_files: bool,
) -> tuple[str, CommandSpec | None]:
    """The spec's Python objective, or the command it runs instead (checked at load)."""
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
    command = command_spec(
        v, data, space=space, fixed=fixed, metrics=metrics, check_files=check_files
    )
    return COMMAND_OBJECTIVE, command


def _fixed(v: Validator, raw: Any, space: tuple[ParamSpec, ...]) -> dict[str, Any]:
    fixed = {} if raw is None else raw
    if not isinstance(fixed, Mapping):
        raise SpecError(v.source, "fixed", fixed, "must be a mapping of name: value")
    for key, val in fixed.items():
        if not isinstance(key, str):
            raise SpecError(v.source, "fixed", key, "keys must be strings")
        v.plain(val, dot("fixed", key))
        if key in {p.name for p in space}:
            raise SpecError(v.source, dot("fixed", key), val, "is also in search_space")
    return dict(fixed)


# Metrics whose better side the name says: a spec may leave their direction out, and may not
# give the opposite one (maximizing a loss, minimizing accuracy: a wrong answer, silently).
_LOWER_IS_BETTER = re.compile(
    r"(^|_)(loss|mse|rmse|mae|mape|error|err|nll|perplexity|latency|time|n_params)$"
)
_HIGHER_IS_BETTER = re.compile(
    r"(^|_)(accuracy|acc|f1|precision|recall|r2|auc|auroc|ap|map|iou|dice|bleu|rouge)(_\d+)?$"
)
_BETTER = {"minimize": "lower", "maximize": "higher"}


def known_direction(metric: str) -> str | None:
    """``"minimize"``/``"maximize"`` when the metric's name says which side is better."""
    if _LOWER_IS_BETTER.search(metric):
        return "minimize"
    if _HIGHER_IS_BETTER.search(metric):
        return "maximize"
    return None


def _implied_direction(v: Validator, metric: str, several: bool) -> str:
    known = known_direction(metric)
    if known is None:
        key = "directions" if several else "direction"
        raise SpecError(
            v.source,
            key,
            None,
            f"is required for {metric!r}: say whether to minimize or maximize it",
        )
    return known


def _metrics_and_directions(v: Validator, data: Mapping[str, Any]) -> tuple[tuple, tuple]:
    if "metric" in data and "metrics" in data:
        raise SpecError(v.source, "metrics", data["metrics"], "give either metric or metrics")
    if "direction" in data and "directions" in data:
        raise SpecError(
            v.source, "directions", data["directions"], "give either direction or directions"
        )
    if "metrics" in data:
        metrics = tuple(v.string_list(data, "metrics"))
    else:
        hint = metric_hint(data.get("metric"))
        if hint:
            raise SpecError(v.source, "metric", data["metric"], hint)
        metrics = (v.string(data, "metric"),) if "metric" in data else ("val_loss",)
    if "directions" in data:
        raw = data["directions"]
        if not isinstance(raw, list) or not raw:
            raise SpecError(v.source, "directions", raw, "must be a non-empty list")
        directions = tuple(v.choice(d, "directions", ("minimize", "maximize")) for d in raw)
    elif "direction" in data:
        directions = (v.choice(data["direction"], "direction", ("minimize", "maximize")),)
    else:
        directions = tuple(_implied_direction(v, m, "metrics" in data) for m in metrics)
    for metric, direction in zip(metrics, directions, strict=False):
        known = known_direction(metric)
        if known is not None and known != direction:
            key = "directions" if "directions" in data else "direction"
            raise SpecError(
                v.source, key, direction, f"{metric!r} is better {_BETTER[known]}: {known} it"
            )
    if len(metrics) != len(directions):
        raise SpecError(
            v.source,
            "directions",
            list(directions),
            f"needs one direction per metric ({len(metrics)} metrics: {list(metrics)})",
        )
    if len(set(metrics)) != len(metrics):
        raise SpecError(v.source, "metrics", list(metrics), "has duplicates")
    return metrics, directions


def _search_space(v: Validator, raw: Any) -> tuple[ParamSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise SpecError(v.source, "search_space", raw, "must be a mapping of name: parameter")
    params = []
    for name, p in raw.items():
        key = dot("search_space", name)
        if not isinstance(name, str) or not name:
            raise SpecError(v.source, "search_space", name, "parameter names must be strings")
        if not isinstance(p, Mapping):
            raise SpecError(v.source, key, p, "must be a mapping with a 'type'")
        params.append(_param(v, name, p, key))
    return tuple(params)


def _param(v: Validator, name: str, p: Mapping[str, Any], key: str) -> ParamSpec:
    hint = param_hint(p)
    if hint:
        raise SpecError(v.source, key, dict(p), hint)
    ptype = v.choice(p.get("type"), f"{key}.type", PARAM_TYPES)
    if ptype == "categorical":
        return _categorical(v, name, p, key)
    v.keys(p, key, required=("type",), optional=("low", "high", "log", "step", "values"))
    values = _grid_values(v, p, key, ptype)
    low = min(values) if "low" not in p and values else _bound(v, p, f"{key}.low", ptype)
    high = max(values) if "high" not in p and values else _bound(v, p, f"{key}.high", ptype)
    log = p.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(v.source, f"{key}.log", log, "must be true or false")
    step = None
    if p.get("step") is not None:
        step = v.number(p["step"], f"{key}.step", integer=ptype == "int")
        if step <= 0:
            raise SpecError(v.source, f"{key}.step", step, "must be > 0")
    if low > high:
        raise SpecError(v.source, f"{key}.low", low, f"must be <= high ({high})")
    if log and low <= 0:
        raise SpecError(v.source, f"{key}.low", low, "must be > 0 on a log scale")
    if log and step is not None and not (ptype == "int" and step == 1):
        raise SpecError(v.source, f"{key}.step", step, "cannot be combined with log: true")
    for x in values:
        if not low <= x <= high:
            raise SpecError(v.source, f"{key}.values", x, f"is outside [{low}, {high}]")
    return ParamSpec(name=name, type=ptype, low=low, high=high, log=log, step=step, values=values)


def _categorical(v: Validator, name: str, p: Mapping[str, Any], key: str) -> ParamSpec:
    v.keys(p, key, required=("type", "choices"), optional=())
    choices = p["choices"]
    if not isinstance(choices, list) or not choices:
        raise SpecError(v.source, f"{key}.choices", choices, "must be a non-empty list")
    for c in choices:
        if not isinstance(c, None | bool | int | float | str):
            raise SpecError(
                v.source, f"{key}.choices", c, "choices must be null, bool, int, float or str"
            )
        v.finite(c, f"{key}.choices")
    # By equality, as Optuna finds a choice's index: 1, 1.0 and true are one choice.
    if len(set(choices)) != len(choices):
        raise SpecError(v.source, f"{key}.choices", choices, "has duplicate choices")
    return ParamSpec(name=name, type="categorical", choices=tuple(choices))


def _grid_values(v: Validator, p: Mapping[str, Any], key: str, ptype: str) -> tuple[Any, ...]:
    if "values" not in p:
        return ()
    raw = p["values"]
    if not isinstance(raw, list) or not raw:
        raise SpecError(v.source, f"{key}.values", raw, "must be a non-empty list")
    values = tuple(v.number(x, f"{key}.values", integer=ptype == "int") for x in raw)
    if len(set(values)) != len(values):
        raise SpecError(v.source, f"{key}.values", list(values), "has duplicate values")
    return values


def _bound(v: Validator, p: Mapping[str, Any], key: str, ptype: str) -> float | int:
    name = key.rpartition(".")[2]
    if p.get(name) is None:
        raise SpecError(v.source, key, None, "is required")
    val = v.number(p[name], key, integer=ptype == "int")
    if ptype == "int" and abs(val) > 2**53:  # Optuna stores every parameter as a float
        raise SpecError(v.source, key, val, "must be within +-2**53")
    return val


def _sampler(v: Validator, raw: Any, n_objectives: int) -> SamplerSpec:
    if raw is None:
        raw = {"type": "tpe"}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(v.source, "sampler", raw, "must be a mapping with a 'type'")
    stype = v.choice(raw.get("type", "tpe"), "sampler.type", SAMPLERS)
    seed = raw.get("seed")
    if seed is not None and not (type(seed) is int and 0 <= seed < 2**32):
        raise SpecError(v.source, "sampler.seed", seed, "must be an integer in [0, 2**32)")
    options = {k: val for k, val in raw.items() if k not in ("type", "seed")}
    v.options(options, "sampler", lambda: check_sampler_options(stype, options))
    if stype == "cmaes" and n_objectives > 1:
        raise SpecError(v.source, "sampler.type", stype, "does not support several objectives")
    return SamplerSpec(type=stype, seed=seed, options=options)


def _pruner(v: Validator, raw: Any, key: str) -> PrunerSpec:
    if raw is None:
        raw = {"type": "none"}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(v.source, key, raw, "must be a mapping with a 'type'")
    ptype = v.choice(raw.get("type", "none"), f"{key}.type", PRUNERS)
    wrapped = None
    if ptype == "patient":
        if "wrapped" not in raw:
            raise SpecError(v.source, f"{key}.wrapped", None, "is required (a pruner, or none)")
        wrapped = _pruner(v, raw["wrapped"], f"{key}.wrapped")
    elif "wrapped" in raw:
        raise SpecError(
            v.source, f"{key}.wrapped", raw["wrapped"], "only the patient pruner wraps another"
        )
    options = {k: val for k, val in raw.items() if k not in ("type", "wrapped")}
    v.options(options, key, lambda: check_pruner_options(ptype, options))
    return PrunerSpec(type=ptype, options=options, wrapped=wrapped)


def _budget(v: Validator, raw: Any) -> BudgetSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(v.source, "budget", raw, "must be a mapping")
    v.keys(raw, "budget", required=(), optional=("n_trials", "timeout", "trial_timeout"))
    n_trials = raw.get("n_trials")
    if n_trials is not None:
        n_trials = v.number(n_trials, "budget.n_trials", integer=True)
        if n_trials < 1:
            raise SpecError(v.source, "budget.n_trials", n_trials, "must be >= 1")
    out: dict[str, float | None] = {}
    for k in ("timeout", "trial_timeout"):
        val = raw.get(k)
        if val is not None:
            val = float(v.number(val, f"budget.{k}"))
            if val <= 0:
                raise SpecError(v.source, f"budget.{k}", val, "must be > 0 seconds")
        out[k] = val
    return BudgetSpec(n_trials=n_trials, timeout=out["timeout"], trial_timeout=out["trial_timeout"])


def _retry(v: Validator, raw: Any) -> RetrySpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(v.source, "retry", raw, "must be a mapping")
    v.keys(
        raw, "retry", required=(), optional=("max_retries", "heartbeat_interval", "grace_period")
    )
    d = RetrySpec()
    max_retries = v.number(raw.get("max_retries", d.max_retries), "retry.max_retries", integer=True)
    if max_retries < 0:
        raise SpecError(v.source, "retry.max_retries", max_retries, "must be >= 0")
    interval = v.number(
        raw.get("heartbeat_interval", d.heartbeat_interval),
        "retry.heartbeat_interval",
        integer=True,
    )
    grace = v.number(raw.get("grace_period", d.grace_period), "retry.grace_period", integer=True)
    if interval < 1:
        raise SpecError(v.source, "retry.heartbeat_interval", interval, "must be >= 1 second")
    if grace <= interval:
        raise SpecError(
            v.source, "retry.grace_period", grace, f"must exceed heartbeat_interval ({interval})"
        )
    return RetrySpec(max_retries=max_retries, heartbeat_interval=interval, grace_period=grace)


def _check_grid(v: Validator, spec: StudySpec) -> None:
    if not spec.search_space:
        raise SpecError(v.source, "search_space", {}, "a grid needs at least one parameter")
    for p in spec.search_space:
        if p.type == "float" and not p.values and p.step is None:
            raise SpecError(
                v.source,
                dot("search_space", p.name),
                {"low": p.low, "high": p.high},
                "a continuous parameter in a grid needs 'values' or 'step'",
            )
    size = 1
    for p in spec.search_space:
        size *= p.grid_count()
        if size > MAX_GRID_POINTS:
            raise SpecError(
                v.source, "search_space", size, f"the grid has more than {MAX_GRID_POINTS} points"
            )
    n = spec.budget.n_trials
    if n is not None and n > size:
        raise SpecError(v.source, "budget.n_trials", n, f"exceeds the grid's {size} points")


def _build_optuna_objects(v: Validator, spec: StudySpec) -> None:
    """Build the sampler and pruner once so bad options fail at load time, not in a worker."""
    try:
        make_sampler(spec)
    except Exception as e:  # options are type-checked, but a constructor can reject values
        raise SpecError(v.source, "sampler", dict(spec.sampler.options), one_line(e)) from None
    try:
        make_pruner(spec.pruner)
    except Exception as e:
        raise SpecError(v.source, "pruner", pruner_dict(spec.pruner), one_line(e)) from None
