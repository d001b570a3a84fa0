"""Checking a JSON, YAML or environment value against a field's type hint, and converting it."""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["AtLeast", "Check", "Finite", "Invalid", "convert", "expected"]

# PyYAML reads YAML 1.1, where 1e-3 (no dot) is a string, as are numbers from environment
# variables read as text: with `numeric_strings`, a float field accepts such strings too.
_NUMERIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SCALARS: dict[Any, str] = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURALS: dict[Any, str] = {int: "integers", float: "numbers", str: "strings", bool: "true or false values"}
_BYTES = '{"bytes": <length>}'


class Invalid(Exception):
    """A value that does not fit its hint.

    `expected` says what would fit, as a phrase ("an integer of 0 or more"); `problem`, when
    set, is a whole sentence saying what else is wrong (a bytes payload missing or of another
    length), for messages to show instead of "expected …, got …".
    """

    def __init__(self, expected: str, problem: str | None = None) -> None:
        super().__init__(problem or f"expected {expected}")
        self.expected = expected
        self.problem = problem


@runtime_checkable
class Check(Protocol):
    """`Annotated` metadata that `convert` enforces after the base type: a test and its phrase."""

    @property
    def phrase(self) -> str: ...

    def test(self, value: Any) -> bool: ...


@dataclass(frozen=True, slots=True)
class AtLeast:
    """`Annotated[int, AtLeast(0)]`: the value is `minimum` or more ("an integer of 0 or more")."""

    minimum: float

    @property
    def phrase(self) -> str:
        return f"of {self.minimum:g} or more"

    def test(self, value: Any) -> bool:
        return bool(value >= self.minimum)


@dataclass(frozen=True, slots=True)
class Finite:
    """`Annotated[float, Finite()]`: not NaN nor ±infinity (what "a number" means to people: no phrase)."""

    @property
    def phrase(self) -> str:
        return ""

    def test(self, value: Any) -> bool:
        return math.isfinite(value)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union)


def _mapping_args(hint: Any) -> tuple[Any, Any] | None:
    """(key hint, value hint) of a dict or Mapping hint (Any, Any for a bare `dict`); None otherwise."""
    if hint is dict:
        return Any, Any
    if typing.get_origin(hint) in (dict, Mapping):
        key, value = typing.get_args(hint)
        return key, value
    return None


def expected(hint: Any) -> str:
    """What a value of `hint` looks like, as a phrase for messages ("an integer or null")."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if hint is bytes:
        return _BYTES
    if hint in _SCALARS:
        return _SCALARS[hint]
    if _is_union(hint):
        return " or ".join(expected(option) for option in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return " ".join([expected(base), *(c.phrase for c in extras if isinstance(c, Check) and c.phrase)])
    if origin is tuple:
        return f"a list of {_PLURALS[typing.get_args(hint)[0]]}"
    mapping = _mapping_args(hint)
    if mapping is not None:
        return "an object" if mapping[1] is Any else "an object of numbers and strings"
    return str(hint)


def convert(
    value: object, hint: Any, *, payload: bytes | None = None, numeric_strings: bool = False
) -> object:
    """Check `value` (from JSON, YAML or the environment) against a field's type hint; the field's value.

    - `X | None`: None is None; else the options are tried in order (`payload`'s problems then
      read as "expected X or null").
    - `Literal[...]`: one of its values. `int`, `str`, `bool`: exactly that type (True is not
      an integer, 1 not true or false).
    - `float`: an int or float, as a float; an int too large for a float is refused; with
      `numeric_strings`, also a string spelling a decimal number ("1e-3", " 2.5").
    - `bytes`: `{"bytes": <length>}`, whose content is `payload` (which must have that length).
    - `tuple[X, ...]`: a list or tuple of X, as a tuple.
    - `dict`, `dict[str, Any]`, `Mapping[K, V]`: a dict (itself) whose keys are K and values V
      (Any: anything; else a union of int, float, str and bool).
    - `Annotated[X, *checks]`: X, then every `Check` (e.g. `AtLeast(0)`, `Finite()`) in order.

    Raises Invalid, whose `expected` is `expected(hint)`; TypeError for a hint it cannot read.
    """
    origin = typing.get_origin(hint)
    if _is_union(hint):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is not type(None):
                try:
                    return convert(value, option, payload=payload, numeric_strings=numeric_strings)
                except Invalid:
                    pass
        raise Invalid(expected(hint))
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        try:
            value = convert(value, base, payload=payload, numeric_strings=numeric_strings)
        except Invalid as exc:
            raise Invalid(expected(hint), exc.problem) from None
        if not all(c.test(value) for c in extras if isinstance(c, Check)):
            raise Invalid(expected(hint))
        return value
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise Invalid(expected(hint))
        return value
    if hint is bytes:
        if not (isinstance(value, dict) and set(value) == {"bytes"} and type(value["bytes"]) is int):
            raise Invalid(_BYTES)
        if payload is None:
            raise Invalid(_BYTES, "its bytes travel outside the dict: pass them in `payloads`")
        if len(payload) != value["bytes"]:
            raise Invalid(
                _BYTES, f"the dict says {value['bytes']} bytes but the payload holds {len(payload)}"
            )
        return payload
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise Invalid(expected(hint))
        try:
            return tuple(convert(v, item, numeric_strings=numeric_strings) for v in value)
        except Invalid:
            raise Invalid(expected(hint)) from None
    if hint is float:
        if numeric_strings and isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
            return float(value)
        if type(value) not in (int, float):
            raise Invalid(expected(hint))
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:  # JSON and YAML integers have any size; 10**400 is no float
            raise Invalid(expected(hint)) from None
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise Invalid(expected(hint))
        return value
    mapping = _mapping_args(hint)
    if mapping is not None:
        key, item = mapping
        if not isinstance(value, dict) or not all(
            (key is Any or isinstance(k, key)) and (item is Any or isinstance(v, item))
            for k, v in value.items()
        ):
            raise Invalid(expected(hint))
        return value
    raise TypeError(f"cannot check a value against the type {hint!r}")
