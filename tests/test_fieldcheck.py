"""fieldcheck.convert: each kind of type hint, what it accepts and returns, and the phrase it refuses with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pytest

from mio_agent.fieldcheck import AtLeast, Check, Finite, Invalid, convert, expected

Count = Annotated[int, AtLeast(0)]
Amount = Annotated[float, Finite(), AtLeast(0)]
Scalars = Mapping[str, int | float | str | bool]


def refused(value: object, hint: Any, **kwargs: Any) -> Invalid:
    with pytest.raises(Invalid) as info:
        convert(value, hint, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("value", "hint", "want"),
    [
        (None, int | None, None),
        (3, int | None, 3),
        (None, str | None, None),
        ("std", Literal["voice", "std"], "std"),
        (5, int, 5),
        ("x", str, "x"),
        (True, bool, True),
        (2.5, float, 2.5),
        ([1, 2], tuple[int, ...], (1, 2)),
        ((1, 2), tuple[int, ...], (1, 2)),
        ([], tuple[int, ...], ()),
        (["a", "b"], tuple[str, ...], ("a", "b")),
        ({"a": 1, "b": 2.5, "c": "x", "d": False}, Scalars, {"a": 1, "b": 2.5, "c": "x", "d": False}),
        ({"a": [1], "b": {}}, dict[str, Any], {"a": [1], "b": {}}),
        ({"a": [1]}, dict, {"a": [1]}),
        ({"s": None}, Mapping[str, Any], {"s": None}),
        (0, Count, 0),
        (7, Count, 7),
        (0.0, Amount, 0.0),
        (1250.5, Amount, 1250.5),
    ],
)
def test_accepted_values_convert_to_the_field_value(value: object, hint: Any, want: object) -> None:
    got = convert(value, hint)
    assert got == want and type(got) is type(want)


def test_float_accepts_an_int_as_a_float() -> None:
    got = convert(3, float)
    assert got == 3.0 and type(got) is float
    got = convert(3, Amount)
    assert got == 3.0 and type(got) is float
    assert convert(2, float | None) == 2.0


def test_a_mapping_is_returned_itself() -> None:
    d = {"a": 1}
    assert convert(d, Scalars) is d
    assert convert(d, dict[str, Any]) is d


def test_union_options_are_tried_in_order() -> None:
    got = convert(1, int | float)
    assert got == 1 and type(got) is int
    got = convert(1, float | int)
    assert got == 1.0 and type(got) is float
    assert convert("1", int | str) == "1"


@pytest.mark.parametrize(
    ("value", "hint", "phrase"),
    [
        ("5", int, "an integer"),
        (True, int, "an integer"),  # a bool is not an integer
        (1, bool, "true or false"),  # nor an integer a bool
        (0, bool, "true or false"),
        (5, str, "a string"),
        (None, str, "a string"),
        (True, float, "a number"),
        ("1.5", float, "a number"),  # strings only with numeric_strings
        (None, float, "a number"),
        ("5", int | None, "an integer or null"),
        ([1], float | None, "a number or null"),
        ("x", int | float, "an integer or a number"),
        ("bored", Literal["completed", "error"], "one of 'completed', 'error'"),
        ([1], Literal["a"], "one of 'a'"),
        ([1, "2"], tuple[int, ...], "a list of integers"),
        ([1, True], tuple[int, ...], "a list of integers"),
        ("12", tuple[int, ...], "a list of integers"),
        ({"a": 1}, tuple[int, ...], "a list of integers"),
        (["a", 1], tuple[str, ...], "a list of strings"),
        ("a", tuple[str, ...], "a list of strings"),
        ({"a": [1]}, Scalars, "an object of numbers and strings"),
        ({1: 1}, Scalars, "an object of numbers and strings"),
        ([("a", 1)], Scalars, "an object of numbers and strings"),
        ([1], dict[str, Any], "an object"),  # a non-dict for dict
        ("x", dict[str, Any], "an object"),
        (None, dict, "an object"),
        (-1, Count, "an integer of 0 or more"),
        (1.0, Count, "an integer of 0 or more"),
        (True, Count, "an integer of 0 or more"),
        ("3", Count, "an integer of 0 or more"),
        (-0.5, Amount, "a number of 0 or more"),
        (-1, Amount, "a number of 0 or more"),
        (math.nan, Amount, "a number of 0 or more"),
        (math.inf, Amount, "a number of 0 or more"),
        (-math.inf, Amount, "a number of 0 or more"),
        (False, Amount, "a number of 0 or more"),
        (10**400, Amount, "a number of 0 or more"),  # JSON integers have any size; no float is that big
        (-(10**400), float, "a number"),
        (10**400, float | None, "a number or null"),
        (math.nan, Annotated[float, Finite()], "a number"),
        (4, Annotated[int, AtLeast(5)], "an integer of 5 or more"),
        (0.25, Annotated[float, AtLeast(0.5)], "a number of 0.5 or more"),
    ],
)
def test_refused_values_say_what_was_expected(value: object, hint: Any, phrase: str) -> None:
    exc = refused(value, hint)
    assert exc.expected == phrase and exc.problem is None
    assert str(exc) == f"expected {phrase}"
    assert expected(hint) == phrase


def test_unbounded_floats_are_numbers_too() -> None:
    assert math.isnan(convert(math.nan, float))  # type: ignore[arg-type]
    assert convert(math.inf, float) == math.inf
    assert convert(10**300, float) == 1e300
    assert convert(10**300, Amount) == 1e300
    assert convert(5, Annotated[int, AtLeast(5)]) == 5


@pytest.mark.parametrize(
    ("text", "want"),
    [("1e-3", 0.001), (" 2.5 ", 2.5), ("-7", -7.0), (".5", 0.5), ("+3.", 3.0), ("1E2", 100.0)],
)
def test_numeric_strings_are_numbers_only_when_asked(text: str, want: float) -> None:
    got = convert(text, float, numeric_strings=True)
    assert got == want and type(got) is float
    assert convert(text, float | None, numeric_strings=True) == want
    assert refused(text, float).expected == "a number"


@pytest.mark.parametrize("text", ["inf", "nan", "1e", "1.2.3", "", "0x10", "1_000"])
def test_numeric_strings_spell_decimal_numbers(text: str) -> None:
    assert refused(text, float, numeric_strings=True).expected == "a number"


def test_numeric_strings_leave_other_types_alone() -> None:
    assert refused("7", int, numeric_strings=True).expected == "an integer"
    assert convert("7", str, numeric_strings=True) == "7"


BYTES = '{"bytes": <length>}'


def test_bytes_come_from_the_payload() -> None:
    payload = b"\x01\x02\x03"
    assert convert({"bytes": 3}, bytes, payload=payload) is payload
    assert convert({"bytes": 3}, bytes | None, payload=payload) is payload
    assert convert({"bytes": 0}, bytes, payload=b"") == b""
    assert convert(None, bytes | None) is None


def test_bytes_without_a_payload_say_where_they_go() -> None:
    exc = refused({"bytes": 3}, bytes)
    assert exc.expected == BYTES
    assert exc.problem == "its bytes travel outside the dict: pass them in `payloads`"
    assert str(exc) == exc.problem


def test_bytes_of_another_length_than_the_payload() -> None:
    exc = refused({"bytes": 4}, bytes, payload=b"\0" * 6)
    assert exc.expected == BYTES
    assert exc.problem == "the dict says 4 bytes but the payload holds 6"


@pytest.mark.parametrize(
    "value", ["AAAA", b"\0\0", {"bytes": "3"}, {"bytes": True}, {"bytes": 3, "x": 1}, {}, None, [3]]
)
def test_bytes_are_a_length_object(value: object) -> None:
    exc = refused(value, bytes, payload=b"abc")
    assert exc.expected == BYTES and exc.problem is None


def test_an_optional_bytes_field_says_only_what_it_expects() -> None:
    # as before: in a union, a payload's problem reads as the union's phrase
    for payload in (None, b"\0"):
        exc = refused({"bytes": 3}, bytes | None, payload=payload)
        assert exc.expected == BYTES + " or null" and exc.problem is None
    assert refused("x", bytes | None).expected == BYTES + " or null"


def test_none_only_fits_an_optional_hint() -> None:
    assert refused(None, int).expected == "an integer"
    assert refused(None, Literal["a"]).expected == "one of 'a'"
    assert refused(None, tuple[int, ...]).expected == "a list of integers"


def test_checks_are_annotated_metadata_with_a_phrase() -> None:
    assert isinstance(AtLeast(0), Check) and isinstance(Finite(), Check)
    assert AtLeast(0).phrase == "of 0 or more" and Finite().phrase == ""
    assert AtLeast(0).test(0) and not AtLeast(0).test(-1)
    assert Finite().test(1.0) and not Finite().test(math.inf)
    # metadata that is not a Check is left alone
    assert convert(-1, Annotated[int, "a note"]) == -1
    assert expected(Annotated[int, "a note"]) == "an integer"


def test_an_unknown_hint_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="cannot check"):
        convert(b"x", list[int])
