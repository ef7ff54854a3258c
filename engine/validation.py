"""
Strict cattrs structuring that reports the first bad field as OpenAI does.

Rules:

1. **No coercion.** A value is accepted only when its JSON type is the expected one: ``"false"``
   is not a boolean, ``5`` is not a string, ``true`` is not a number, ``1.5`` is not an integer.
   cattrs' default converter coerces (it calls ``bool()``, ``str()``, ``int()``), so every scalar,
   object and array hook here is replaced by an exact one (stack-notes §5).
2. **Objects are checked before their fields are read**: cattrs would happily test keys against
   a string's characters. Arrays must be JSON arrays, never any iterable.
3. **One error, the first one.** cattrs collects every failure (detailed validation) as nested
   exception groups whose notes name the attribute or index; :func:`invalid_value_from` follows
   the first failure down and turns it into one :class:`~engine.errors.InvalidValue` whose
   ``param`` is the OpenAI field path (``messages[1].content[0].text``) and whose message reads
   ``"<param> must be <what is expected>, got <what came>"``.

Hooks raise :class:`Invalid`, which carries the problem and, when the hook looked inside the value
itself, the rest of the path (``subpath``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.errors import AttributeValidationNote, BaseValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

from engine.errors import InvalidValue

__all__ = [
    "Hook",
    "Invalid",
    "describe",
    "expected",
    "integer_between",
    "invalid_value_from",
    "non_empty_string",
    "nullable",
    "number_between",
    "object_hook",
    "one_of",
    "strict_converter",
]

#: A cattrs structure hook: ``(value, type) -> structured value``.
Hook = Callable[[Any, Any], Any]

#: Strings longer than this are cut in error messages: the message names the value, it does not
#: echo a client's whole prompt back.
_SHOWN_STRING_CHARS = 40


class Invalid(ValueError):
    """A hook refused a value; ``problem`` completes the sentence ``"<param> ..."``."""

    def __init__(self, problem: str, *, subpath: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.subpath = subpath


def describe(value: Any) -> str:
    """A short JSON-flavoured description of *value* for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if len(value) > _SHOWN_STRING_CHARS:
            return json.dumps(value[:_SHOWN_STRING_CHARS]) + "…"
        return json.dumps(value)
    if isinstance(value, list):
        return f"an array of {len(value)}" if value else "an empty array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def expected(what: str, value: Any, *, subpath: str = "") -> Invalid:
    """The error for a value that is not *what* was expected."""
    return Invalid(f"must be {what}, got {describe(value)}", subpath=subpath)


def _exact(*accepted: type, what: str) -> Hook:
    """A hook accepting exactly these Python types (``bool`` only when listed)."""
    takes_bool = bool in accepted

    def structure_exact(value: Any, _: Any) -> Any:
        if not isinstance(value, accepted) or (isinstance(value, bool) and not takes_bool):
            raise expected(what, value)
        return value

    return structure_exact


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise expected("a number", value)
    return float(value)


def _is_homogeneous_tuple(cl: Any) -> bool:
    return getattr(cl, "__origin__", None) is tuple and cl.__args__[1:] == (Ellipsis,)


def _strict_tuple_factory(cl: Any, converter: cattrs.Converter) -> Hook:
    """``tuple[X, ...]`` from a JSON array only (cattrs would take a string's characters)."""
    structure_items = homogenous_tuple_structure_factory(cl, converter)

    def structure_array(value: Any, cl: Any) -> Any:
        if not isinstance(value, list):
            raise expected("an array", value)
        return structure_items(value, cl)

    return structure_array


def strict_converter() -> cattrs.Converter:
    """A converter whose scalars, objects and arrays are checked, never coerced (rule 1)."""
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(str, _exact(str, what="a string"))
    converter.register_structure_hook(bool, _exact(bool, what="a boolean"))
    converter.register_structure_hook(int, _exact(int, what="an integer"))
    converter.register_structure_hook(float, _structure_float)
    # A JSON object kept as is (content parts, tool calls, metadata): checked, never rebuilt.
    converter.register_structure_hook_func(
        lambda cl: cl == dict[str, Any], _exact(dict, what="an object")
    )
    converter.register_structure_hook_factory(
        _is_homogeneous_tuple, lambda cl: _strict_tuple_factory(cl, converter)
    )
    return converter


def object_hook(
    converter: cattrs.Converter,
    cl: type[Any],
    *,
    what: str = "an object",
    after: Callable[[Any, Any], None] | None = None,
    **overrides: Any,
) -> Hook:
    """
    The structure hook of the attrs class *cl*, read only from a JSON object (rule 2).

    Args:
        what: how the error names the expected object ("a message object").
        after: a check of the structured instance against its source object, for rules that
            span several fields; it raises :class:`Invalid` with a ``subpath``.
        overrides: cattrs per-field overrides (``override(struct_hook=...)``).
    """
    structure_fields = make_dict_structure_fn(cl, converter, **overrides)

    def structure_object(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise expected(what, value)
        instance = structure_fields(value, cl)
        if after is not None:
            after(instance, value)
        return instance

    return structure_object


def nullable(hook: Hook) -> Hook:
    """*hook* for a field where ``null`` means absent (OpenAI's optional fields are nullable)."""

    def structure_nullable(value: Any, cl: Any) -> Any:
        return None if value is None else hook(value, cl)

    return structure_nullable


def non_empty_string(value: Any, _: Any) -> str:
    """A string with at least one character."""
    if not isinstance(value, str) or not value:
        raise expected("a non-empty string", value)
    return value


def one_of(choices: Collection[str]) -> Hook:
    """A string among *choices* (listed in the error in the order given)."""
    names = ", ".join(choices)
    allowed = frozenset(choices)

    def structure_choice(value: Any, _: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise expected(f"one of {names}", value)
        return value

    return structure_choice


def number_between(low: float, high: float) -> Hook:
    """A JSON number in ``[low, high]``, as a float (NaN and infinities fail the range)."""

    def structure_number(value: Any, _: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise expected(f"a number between {low:g} and {high:g}", value)
        return float(value)

    return structure_number


def integer_between(low: int, high: int | None = None) -> Hook:
    """A JSON integer of at least *low* and, when given, at most *high*."""
    what = f"an integer of at least {low}" if high is None else f"an integer from {low} to {high}"

    def structure_integer(value: Any, _: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            raise expected(what, value)
        return value

    return structure_integer


def _step(note: Any) -> str:
    if isinstance(note, AttributeValidationNote):
        return f".{note.name}"
    if isinstance(note, IterableValidationNote):
        return f"[{note.index}]"
    return ""


def _where(exc: BaseException) -> tuple[str, str]:
    """The path step the container's note gives *exc*, and the attribute name if any."""
    for note in reversed(getattr(exc, "__notes__", ())):
        if isinstance(note, AttributeValidationNote | IterableValidationNote):
            name = note.name if isinstance(note, AttributeValidationNote) else ""
            return _step(note), name
    return "", ""


def invalid_value_from(error: Exception, required: Mapping[str, str]) -> InvalidValue:
    """
    The client error for a structuring failure: the first failure, with its OpenAI path.

    Args:
        error: what structuring raised (a cattrs validation group or an :class:`Invalid`).
        required: what each required attribute must be, by name, for "is required" messages.
    """
    path = ""
    attribute = ""
    leaf: BaseException = error
    while isinstance(leaf, BaseValidationError):
        leaf = leaf.exceptions[0]
        step, name = _where(leaf)
        path += step
        attribute = name or attribute
    if isinstance(leaf, Invalid):
        param = (path + leaf.subpath).lstrip(".")
        return InvalidValue(f"{param} {leaf.problem}", param=param or None)
    param = path.lstrip(".")
    if isinstance(leaf, KeyError):
        need = required.get(attribute)
        text = f"{param} is required" + (f"; it must be {need}" if need else "")
        return InvalidValue(text, param=param)
    # Not raised by our hooks (a cattrs internal): still a client error with a path, never a 500.
    return InvalidValue(f"{param} has a value of the wrong type", param=param or None)
