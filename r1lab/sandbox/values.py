"""Typed JSON: how plain Python values cross the sandbox boundary, and how the judge compares them.

The untrusted child reports each test's return value as one line of strict JSON. Plain JSON
loses types that tests care about (a tuple is not a list, a dict may have int keys), so
containers carry a one-key tag: ``{"$t": [...]}`` tuple, ``{"$s": [...]}`` set, ``{"$fs": [...]}``
frozenset, ``{"$d": [[k, v], ...]}`` dict, ``{"$b": "<base64>"}`` bytes, ``{"$f": "nan"}`` a
non-finite float, ``{"$c": [re, im]}`` complex. The encoder accepts *exact* builtin types only, so
an object whose ``__eq__`` is always true (or an int subclass that lies) cannot even be sent;
the judge decodes into fresh builtins and compares those. Nothing is ever unpickled.

This module imports only the standard library: the sandbox worker loads it by path, outside the
``r1lab`` package, so that the child's memory holds no project code beyond the sandbox itself.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

# Floats are compared with this tolerance: HumanEval's float tests use ``abs(x - y) < 1e-6``.
REL_TOL = 1e-6
ABS_TOL = 1e-6
MAX_DEPTH = 100


class UnsupportedValue(TypeError):
    """A value that is not built from plain builtins (the child reports it as an error)."""


def encode(value: Any, depth: int = 0) -> Any:
    """A JSON-ready form of ``value``; raises UnsupportedValue for anything but exact builtins."""
    if depth > MAX_DEPTH:
        raise UnsupportedValue("value nested too deeply")
    kind = type(value)  # exact type, never isinstance: subclasses can override __eq__
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$f": repr(value)}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"$t": [encode(v, depth + 1) for v in value]}
    if kind is set or kind is frozenset:
        # sorted by their encoding so that the output is deterministic
        items = sorted((encode(v, depth + 1) for v in value), key=lambda e: json.dumps(e, sort_keys=True))
        return {"$s" if kind is set else "$fs": items}
    if kind is dict:
        return {"$d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if kind is complex:
        return {"$c": [encode(value.real, depth + 1), encode(value.imag, depth + 1)]}
    raise UnsupportedValue(f"cannot send a value of type {kind.__name__}")


def dumps(value: Any) -> str:
    """One line of strict JSON for ``value`` (no NaN literals, no newlines)."""
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def loads_json(text: str | bytes) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` literals are refused (the codec tags them instead)."""
    return json.loads(text, parse_constant=_reject_constant)


def decode(data: Any, depth: int = 0) -> Any:
    """The Python value of an encoded form; raises ValueError on anything malformed."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if data is None or type(data) in (bool, int, str, float):
        return data
    if type(data) is list:
        return [decode(v, depth + 1) for v in data]
    if type(data) is dict and len(data) == 1:
        (tag, body), = data.items()
        if tag == "$t" and type(body) is list:
            return tuple(decode(v, depth + 1) for v in body)
        if tag in ("$s", "$fs") and type(body) is list:
            items = [decode(v, depth + 1) for v in body]
            return set(items) if tag == "$s" else frozenset(items)
        if tag == "$d" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
        if tag == "$b" and type(body) is str:
            return base64.b64decode(body, validate=True)
        if tag == "$f" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$c" and type(body) is list and len(body) == 2:
            return complex(decode(body[0], depth + 1), decode(body[1], depth + 1))
    raise ValueError(f"malformed encoded value: {str(data)[:80]}")


def loads(text: str | bytes) -> Any:
    return decode(loads_json(text))


def equal(actual: Any, expected: Any) -> bool:
    """Python ``==`` on decoded values, except that floats match within REL_TOL/ABS_TOL.

    Both sides are fresh builtins (decoded by the judge), so ``==`` here cannot be hijacked."""
    if type(actual) is float or type(expected) is float:
        if type(actual) in (int, float) and type(expected) in (int, float):
            if math.isnan(actual) or math.isnan(expected):
                return math.isnan(actual) and math.isnan(expected)
            return math.isclose(actual, expected, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        return False
    if type(actual) in (list, tuple) and type(actual) is type(expected):
        return len(actual) == len(expected) and all(equal(a, e) for a, e in zip(actual, expected))
    if type(actual) is dict and type(expected) is dict:
        return actual.keys() == expected.keys() and all(equal(actual[k], expected[k]) for k in expected)
    if type(actual) is complex or type(expected) is complex:
        return type(actual) in (int, float, complex) and abs(complex(actual) - complex(expected)) <= ABS_TOL + REL_TOL * abs(expected)
    return actual == expected
