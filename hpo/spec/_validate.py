"""Typed accessors for the spec's validation: each raises a SpecError naming file, key, value."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpo.errors import SpecError
from hpo.search import (
    OptionError,
)
from hpo.spec._foreign import key_hint, value_hint
from hpo.spec._model import (
    MAX_PLAIN_ITEMS,
)


def dot(where: str, *keys: Any) -> str:
    """A dotted key; a key that is not a plain printable string shows as its repr."""
    shown = [k if isinstance(k, str) and k.isprintable() and k.strip() else repr(k) for k in keys]
    return ".".join([where, *shown] if where else shown)


def suggest(word: str, allowed: Sequence[str]) -> list[str]:
    """The allowed word closest to ``word``, a transposition (lgo: log) first."""
    same_letters = [a for a in allowed if sorted(a) == sorted(word)]
    return same_letters[:1] or difflib.get_close_matches(word, allowed, n=1)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class Validator:
    """Small typed accessors that raise SpecError naming the file, key and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def keys(
        self, d: Mapping[str, Any], where: str, *, required: Sequence[str], optional: Sequence[str]
    ) -> None:
        allowed = (*required, *optional)
        for k in d:
            if k not in allowed:
                key = dot(where, k)
                foreign = key_hint(where, k, d[k])
                hint = suggest(str(k), allowed)
                msg = f"unknown key; did you mean {hint[0]!r}?" if hint else "unknown key"
                msg += f" (allowed: {', '.join(allowed)})" if not hint else ""
                msg = f"unknown key; {foreign}" if foreign else msg
                raise SpecError(self.source, key, d[k], msg)
        for k in required:
            if k not in d:
                key = dot(where, k)
                raise SpecError(self.source, key, None, "is required")

    def string(self, d: Mapping[str, Any], key: str) -> str:
        val = d.get(key)
        if not isinstance(val, str) or not val.strip():
            raise SpecError(self.source, key, val, "must be a non-empty string")
        return val

    def string_list(self, d: Mapping[str, Any], key: str) -> list[str]:
        val = d.get(key)
        if not isinstance(val, list) or not val or not all(isinstance(x, str) and x for x in val):
            raise SpecError(self.source, key, val, "must be a non-empty list of strings")
        return val

    def choice(self, val: Any, key: str, allowed: Sequence[str]) -> str:
        if val not in allowed or not isinstance(val, str):
            hint = suggest(val, allowed) if isinstance(val, str) else []
            msg = f"did you mean {hint[0]!r}?" if hint else f"must be one of {', '.join(allowed)}"
            msg = value_hint(key, val) or msg  # sampler.type: bayes is W&B's tpe, not cmaes
            raise SpecError(self.source, key, val, msg)
        return val

    def number(self, val: Any, key: str, *, integer: bool = False) -> Any:
        """An int (``integer``) or a finite float; true/false are not numbers here."""
        if integer:
            if isinstance(val, float) and val.is_integer():
                val = int(val)
            if not isinstance(val, int) or isinstance(val, bool):
                raise SpecError(self.source, key, val, "must be an integer")
            return val
        if not isinstance(val, int | float) or isinstance(val, bool):
            raise SpecError(self.source, key, val, "must be a number")
        try:
            val = float(val)
        except OverflowError:
            raise SpecError(self.source, key, val, "is too large") from None
        if not math.isfinite(val):
            raise SpecError(self.source, key, val, "must be finite")
        return val

    def options(self, opts: Mapping[Any, Any], where: str, check: Callable[[], None]) -> None:
        """Plain data, then ``check`` (hpo.search's) names the option Optuna would reject."""
        for k, val in opts.items():
            self.plain(val, dot(where, k))
        try:
            check()
        except OptionError as e:
            message = e.message
            foreign = key_hint(where.split(".")[0], e.option) if e.unknown else None
            if foreign:  # eta, grace_period, min_iter, ...: another tool's name for an option
                message = f"unknown option; {foreign}"
            raise SpecError(self.source, dot(where, e.option), e.value, message) from None

    def plain(self, val: Any, key: str) -> None:
        """YAML's plain data only (what JSON can store with the study), floats finite.

        Iterative and bounded: a deep value cannot overflow the stack, and aliases nested
        in aliases (a "billion laughs") stop at MAX_PLAIN_ITEMS.
        """
        todo: list[tuple[Any, frozenset[int]]] = [(val, frozenset())]
        for _ in range(MAX_PLAIN_ITEMS):
            if not todo:
                return
            x, inside = todo.pop()
            if isinstance(x, dict) and not all(isinstance(k, str) for k in x):
                raise SpecError(self.source, key, x, "mapping keys must be strings")
            if isinstance(x, list | dict):
                if id(x) in inside:
                    raise SpecError(self.source, key, x, "must not contain itself")
                inside |= {id(x)}
                todo += [(y, inside) for y in (x.values() if isinstance(x, dict) else x)]
            elif not isinstance(x, None | bool | int | float | str):
                raise SpecError(
                    self.source, key, x, "must be null, bool, number, string, list or map"
                )
            else:
                self.finite(x, key)
        raise SpecError(self.source, key, None, f"has more than {MAX_PLAIN_ITEMS} items")

    def finite(self, val: Any, key: str) -> None:
        if isinstance(val, float) and not math.isfinite(val):
            raise SpecError(self.source, key, val, "must be finite")
