"""The spec's typed model: frozen dataclasses, a leaf that imports nothing of hpo."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PARAM_TYPES = ("float", "int", "categorical")
# A grid larger than this is almost always a typo (a float step of 1e-6, say) and would
# only fill the database with WAITING rows.
MAX_GRID_POINTS = 100_000
# Fixed params and sampler/pruner options are stored with the study; more is a mistake.
MAX_PLAIN_ITEMS = 10_000
Scalar = None | bool | int | float | str


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()
    values: tuple[Scalar, ...] = ()

    def grid_count(self) -> int:
        """How many points :meth:`grid_values` has, without building them."""
        if self.values or self.type == "categorical":
            return len(self.values or self.choices)
        low, _, step = self._grid_range()
        return int((Decimal(str(self.high)) - low) // step) + 1

    def grid_values(self) -> tuple[Scalar, ...]:
        """The points a grid search visits for this parameter."""
        if self.values or self.type == "categorical":
            return self.values or self.choices
        low, cast, step = self._grid_range()
        # Decimal arithmetic, as Optuna's FloatDistribution uses to adjust `high`, so every
        # point is exactly low + i * step and lies inside the distribution.
        return tuple(cast(low + i * step) for i in range(self.grid_count()))

    def _grid_range(self) -> tuple[Decimal, Callable[[Decimal], Scalar], Decimal]:
        assert self.low is not None and self.high is not None  # guaranteed by validation
        step = Decimal(str(self.step if self.step is not None else 1))
        return Decimal(str(self.low)), int if self.type == "int" else float, step


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None


@dataclass(frozen=True)
class BudgetSpec:
    n_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None


@dataclass(frozen=True)
class RetrySpec:
    """How killed trials are detected and retried."""

    max_retries: int = 2
    heartbeat_interval: int = 10
    grace_period: int = 30


#: The objective a command spec runs in the trial process: it starts the command and reads
#: what it reports (``hpo.script``).
COMMAND_OBJECTIVE = "hpo.script:run_command"
#: Placeholders a command may use besides each parameter's name, and what each stands for.
PLACEHOLDERS = {
    "config": "the trial's copy of the base config, with its parameters written in",
    "trial_dir": "the trial's directory (shared by the retries of one logical trial)",
    "checkpoint_dir": "where the script writes checkpoints: {trial_dir}/checkpoints",
    "resume": "the checkpoint to resume from; it and the flag before it drop out when none",
    "gpus": "how many GPUs the trial's slot has (env HPO_SLOT_GPUS, else 1)",
    "args": "every parameter as a --name=value argument",
    "args_json_file": "a JSON file holding every parameter",
}
#: Katib's default metrics regex, with named groups: every `name=value` on a line.
KATIB_REGEX = r"(?P<name>[\w|-]+)\s*=\s*(?P<value>[+-]?\d*(?:\.\d+)?(?:[Ee][+-]?\d+)?)"


@dataclass(frozen=True)
class CommandSpec:
    """A spec's command: an existing training script, run once per trial.

    Paths are absolute (resolved against the spec file's directory at load), so the spec
    stored with the study means the same files to a worker started anywhere.
    """

    argv: tuple[str, ...]  # the template: placeholders not yet filled in
    workdir: str  # where the command runs: the spec file's directory unless `script.workdir`
    config: str | None = None  # the base config, YAML or JSON
    config_new_keys: bool = False  # dotted names the base config lacks are added, not errors
    stdout_regex: str | None = None  # read metrics from output lines with it, besides [hpo] lines
    value: str = "best"  # the trial's value: the best reported epoch's metric, or the last
    resume_file: str | None = None  # in {checkpoint_dir}; None: the newest file there
    kill_grace_s: float = 10.0  # SIGTERM to SIGKILL, and a pruned script's time to exit

    def to_dict(self) -> dict[str, Any]:
        script: dict[str, Any] = {"workdir": self.workdir}
        if self.config_new_keys:
            script["config_new_keys"] = True
        if self.stdout_regex is not None:
            script["stdout_regex"] = self.stdout_regex
        if self.value != "best":
            script["value"] = self.value
        if self.resume_file is not None:
            script["resume_file"] = self.resume_file
        script["kill_grace_s"] = self.kill_grace_s
        out: dict[str, Any] = {"command": list(self.argv)}
        if self.config is not None:
            out["config"] = self.config
        out["script"] = script
        return out


@dataclass(frozen=True)
class StudySpec:
    name: str
    objective: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    search_space: tuple[ParamSpec, ...]
    fixed: Mapping[str, Any]
    sampler: SamplerSpec
    pruner: PrunerSpec
    budget: BudgetSpec
    retry: RetrySpec
    storage: str | None
    checkpoint_dir: str
    description: str = ""
    source: str = "<spec>"
    command: CommandSpec | None = None  # set: ``objective`` is COMMAND_OBJECTIVE

    @property
    def is_grid(self) -> bool:
        return self.sampler.type == "grid"

    @property
    def n_trials(self) -> int | None:
        """The study-wide budget; a grid defaults to its size."""
        if self.budget.n_trials is not None:
            return self.budget.n_trials
        return self.grid_size() if self.is_grid else None

    def trial_seed(self, logical_number: int) -> int:
        """A trial's seed: the same for its retries and its retrain, distinct across trials."""
        return (self.sampler.seed or 0) * 1_000_003 + logical_number

    def grid_size(self) -> int:
        return math.prod(p.grid_count() for p in self.search_space)

    def to_dict(self) -> dict[str, Any]:
        """The normalized spec, as stored with the study and compared on resume."""
        space: dict[str, Any] = {}
        for p in self.search_space:
            entry: dict[str, Any] = {"type": p.type}
            if p.type == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry.update(low=p.low, high=p.high, log=p.log)
                if p.step is not None:
                    entry["step"] = p.step
            if p.values:
                entry["values"] = list(p.values)
            space[p.name] = entry
        return {
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            **(
                self.command.to_dict()
                if self.command is not None
                else {"objective": self.objective}
            ),
            "metrics": list(self.metrics),
            "directions": list(self.directions),
            "search_space": space,
            "fixed": dict(self.fixed),
            "sampler": {
                "type": self.sampler.type,
                "seed": self.sampler.seed,
                **self.sampler.options,
            },
            "pruner": pruner_dict(self.pruner),
            "budget": {
                "n_trials": self.budget.n_trials,
                "timeout": self.budget.timeout,
                "trial_timeout": self.budget.trial_timeout,
            },
            "retry": {
                "max_retries": self.retry.max_retries,
                "heartbeat_interval": self.retry.heartbeat_interval,
                "grace_period": self.retry.grace_period,
            },
            "checkpoint_dir": self.checkpoint_dir,
        }


def pruner_dict(p: PrunerSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"type": p.type, **p.options}
    if p.wrapped is not None:
        d["wrapped"] = pruner_dict(p.wrapped)
    return d
