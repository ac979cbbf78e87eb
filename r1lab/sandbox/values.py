"""Typed JSON: how plain Python values cross the sandbox boundary, and how the judge compares them.

The untrusted child reports each test's return value as one line of strict JSON. Plain JSON
loses types that tests care about (a tuple is not a list, a dict may have int keys), so
containers carry a one-key tag: ``{"$t": [...]}`` tuple, ``{"$s": [...]}`` set, ``{"$fs": [...]}``
frozenset, ``{"$d": [[k, v], ...]}`` dict, ``{"$b": "<base64>"}`` bytes, ``{"$f": "nan"}`` a
non-finite float, ``{"$c": [re, im]}`` complex. The encoder accepts *exact* builtin types only, so
an object whose ``__eq__`` is always true (or an int subclass that lies) cannot even be sent;
the judge decodes into fresh builtins and compares those. Nothing is ever unpickled.

Decoding is the judge's attack surface, so it is strict and linear: a schema (the tags above,
nothing else; an object has one key, a record two), caps on depth, node count and text size, no
duplicate keys, and no hash container built from values whose hashes collide (a set of ints
``k * (2**61 - 1)`` costs quadratic time to build). Comparison is exact by type: an int expected
accepts only an int, a set only a set; floats match within a tolerance only where the task
declares one (``float_tol``), and then an int may stand for a float.

This module imports only the standard library: the sandbox worker loads it by path, outside the
``r1lab`` package, so that the child's memory holds no project code beyond the sandbox itself.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

MAX_DEPTH = 64
"""Nesting depth of a value (each container or tag counts one)."""
MAX_NODES = 200_000
"""Values (scalars and containers) in one record."""
MAX_TEXT = 1 << 20
"""Characters of one record's JSON text."""
MAX_SAME_HASH = 8
"""Members of one set (or keys of one dict) that may share a hash; more is an attack."""
ERROR_NAME_MAX = 100
"""Length of the exception name in an error record."""


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


def _pairs(pairs: list) -> dict:
    # Every object of the protocol has one key (a tag) or two (a record): refuse larger ones
    # before a dict is built, and duplicate keys, which json would silently merge.
    if len(pairs) > 2 or (len(pairs) == 2 and pairs[0][0] == pairs[1][0]):
        raise ValueError("an object with more than two keys or a duplicate key")
    return dict(pairs)


def loads_json(text: str | bytes) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` literals, large or duplicate-key objects and texts over
    MAX_TEXT are refused (the codec tags non-finite floats instead)."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"a record over {MAX_TEXT} characters")
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs)


class _Budget:
    __slots__ = ("left",)

    def __init__(self, nodes: int):
        self.left = nodes

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ValueError("a value of too many parts")


def _hashable_without_collisions(items: list) -> list:
    """``items`` unchanged, after checking that few share a hash (linear-time hash containers)."""
    try:
        hashes = sorted(hash(x) for x in items)
    except TypeError:  # a list or dict as a set member or a key
        raise ValueError("an unhashable set member or dict key") from None
    run = 1
    for a, b in zip(hashes, hashes[1:]):
        run = run + 1 if a == b else 1
        if run > MAX_SAME_HASH:
            raise ValueError("set or dict keys with colliding hashes")
    return items


def decode(data: Any, max_nodes: int = MAX_NODES) -> Any:
    """The Python value of an encoded form; raises ValueError on anything malformed."""
    return _decode(data, 0, _Budget(max_nodes))


def _decode(data: Any, depth: int, budget: _Budget) -> Any:
    budget.take()
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    kind = type(data)
    if data is None or kind is bool or kind is int or kind is str:
        return data
    if kind is float:
        if not math.isfinite(data):  # json gives inf for 1e999: the protocol says {"$f": "inf"}
            raise ValueError("a non-finite float literal")
        return data
    if kind is list:
        return [_decode(v, depth + 1, budget) for v in data]
    if kind is dict and len(data) == 1:
        (tag, body), = data.items()
        if tag == "$t" and type(body) is list:
            return tuple(_decode(v, depth + 1, budget) for v in body)
        if tag in ("$s", "$fs") and type(body) is list:
            items = _hashable_without_collisions([_decode(v, depth + 1, budget) for v in body])
            return set(items) if tag == "$s" else frozenset(items)
        if tag == "$d" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            keys = _hashable_without_collisions([_decode(k, depth + 1, budget) for k, _ in body])
            vals = [_decode(v, depth + 1, budget) for _, v in body]
            if len(set(map(_canonical, keys))) != len(keys):
                raise ValueError("a dict with a repeated key")
            return dict(zip(keys, vals))
        if tag == "$b" and type(body) is str:
            return base64.b64decode(body, validate=True)
        if tag == "$f" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$c" and type(body) is list and len(body) == 2:
            parts = [_decode(v, depth + 1, budget) for v in body]
            if all(type(p) is float for p in parts):
                return complex(*parts)
    raise ValueError(f"malformed encoded value: {str(data)[:80]}")


def loads(text: str | bytes) -> Any:
    return decode(loads_json(text))


def _canonical(value: Any) -> str:
    """A string equal for two values exactly when they are equal by type and value."""
    return json.dumps(encode(value), separators=(",", ":"))


def _float_equal(a: float, e: float, tol: float | None) -> bool:
    if math.isnan(a) or math.isnan(e):
        return math.isnan(a) and math.isnan(e)
    if tol is None or math.isinf(a) or math.isinf(e):
        return a == e
    return math.isclose(a, e, rel_tol=tol, abs_tol=tol)


def equal(actual: Any, expected: Any, float_tol: float | None = None) -> bool:
    """Exact equality by type and value (``True`` is not ``1``, a set is not a frozenset, a float
    is not an int), NaN equal to NaN. With ``float_tol``, a float expected accepts a float or an
    int within ``math.isclose(rel_tol=abs_tol=float_tol)``, and complex parts likewise.

    Both sides are fresh builtins (decoded by the judge), so nothing here can be hijacked; sets
    and dict keys are compared through sorted canonical strings, never through hashing."""
    ta, te = type(actual), type(expected)
    if te is float and ta is int and float_tol is not None:
        try:
            return _float_equal(float(actual), expected, float_tol)
        except OverflowError:  # an int past the float range is no float answer
            return False
    if ta is not te:
        return False
    if te is float:
        return _float_equal(actual, expected, float_tol)
    if te is complex:
        return _float_equal(actual.real, expected.real, float_tol) and _float_equal(actual.imag, expected.imag, float_tol)
    if te is list or te is tuple:
        return len(actual) == len(expected) and all(equal(a, e, float_tol) for a, e in zip(actual, expected))
    if te is dict:
        if len(actual) != len(expected):
            return False
        a_items = sorted(((_canonical(k), v) for k, v in actual.items()), key=lambda kv: kv[0])
        e_items = sorted(((_canonical(k), v) for k, v in expected.items()), key=lambda kv: kv[0])
        return all(ka == ke and equal(va, ve, float_tol) for (ka, va), (ke, ve) in zip(a_items, e_items))
    if te is set or te is frozenset:
        return len(actual) == len(expected) and sorted(map(_canonical, actual)) == sorted(map(_canonical, expected))
    return actual == expected  # None, bool, int, str, bytes of the same type
