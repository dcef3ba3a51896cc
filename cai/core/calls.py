"""Assert-style tests as calls: `assert f(2) == 4` becomes the expression `f(2)` and the expected value `4`.

The sandbox runs the program and the expression and prints the value in a plain encoding (tagged JSON: lists,
tuples, sets, dicts, bytes and numbers keep their types); cai decodes it and compares it with the expected value
here, outside the sandbox. Nothing inside the sandbox knows the expected value, so nothing the program can read
tells it whether it passed: it can only compute the result. A test that is not one of the shapes below is refused
when the prompts are read (cai.core.inputs), never run as code in the caller.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any

# Calls the expected side may make on a literal (MBPP writes `== set((4, 5))`): evaluated here, on literals only.
_BUILDERS: dict[str, Any] = {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list, "sorted": sorted}
_SINGLETONS = {"None": None, "True": True, "False": False}
DEPTH = 100  # the deepest value a result may be: a deeper one is refused, not decoded (recursion in the caller)


@dataclass(frozen=True)
class Call:
    """One test: the expression the sandbox evaluates after the program, and how its value is judged here."""

    expression: str
    op: str  # ==, !=, is, is not, truthy, falsy, isclose
    expected: Any = None
    options: dict[str, float] = field(default_factory=dict)  # isclose: rel_tol, abs_tol

    def passes(self, value: Any) -> bool:
        if self.op == "==":
            return bool(value == self.expected)
        if self.op == "!=":
            return bool(value != self.expected)
        if self.op in ("is", "is not"):  # only None/True/False: identity of a decoded singleton is its type and value
            same = type(value) is type(self.expected) and value == self.expected
            return same if self.op == "is" else not same
        if self.op in ("truthy", "falsy"):
            return bool(value) == (self.op == "truthy")
        if self.op == "isclose":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return ok and math.isclose(value, self.expected, **self.options)
        raise ValueError(f"unknown comparison {self.op!r}")


def parse(test: str) -> Call:
    """The call of one assert line; ValueError naming what is wrong when it is not one of the supported shapes."""
    try:
        tree = ast.parse(test.strip())
    except SyntaxError as e:
        raise ValueError(f"not Python: {e.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError("a test must be one assert statement (assert f(x) == value)")
    node = tree.body[0].test
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right, op = node.left, node.comparators[0], node.ops[0]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            symbol = "==" if isinstance(op, ast.Eq) else "!="
            if _is_value(left) and not _is_value(right):  # `assert 4 == f(2)`
                left, right = right, left
            return Call(_expression(left), symbol, _value(right))
        if (
            isinstance(op, (ast.Is, ast.IsNot))
            and isinstance(right, ast.Constant)
            and right.value in (None, True, False)
        ):
            return Call(_expression(left), "is" if isinstance(op, ast.Is) else "is not", right.value)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("math.isclose", "isclose") and len(node.args) == 2:
        options = {k.arg: _number(k.value) for k in node.keywords if k.arg in ("rel_tol", "abs_tol")}
        if len(options) != len(node.keywords):
            raise ValueError("isclose takes only rel_tol and abs_tol here")
        left, right = node.args
        if _is_value(left):
            left, right = right, left
        return Call(_expression(left), "isclose", _number(right), options)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Call(_expression(node.operand), "falsy")
    if not isinstance(node, ast.Compare):
        return Call(_expression(node), "truthy")
    raise ValueError("supported: assert EXPR == value, != value, is None/True/False, EXPR, not EXPR, math.isclose")


def _is_value(node: ast.expr) -> bool:
    try:
        _value(node)
        return True
    except ValueError:
        return False


def _value(node: ast.expr) -> Any:
    """A literal, or set/frozenset/tuple/list/sorted of one: evaluated here without running any code."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BUILDERS:
        if node.keywords or len(node.args) > 1:
            raise ValueError(f"the expected value {ast.unparse(node)!r} is not a plain value")
        return _BUILDERS[node.func.id](_value(node.args[0]) if node.args else ())
    if isinstance(node, ast.Name) and node.id in _SINGLETONS:
        return _SINGLETONS[node.id]
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"the expected value {ast.unparse(node)!r} is not a plain value") from None


def _number(node: ast.expr) -> float:
    v = _value(node)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {ast.unparse(node)!r}")
    return float(v)


def _expression(node: ast.expr) -> str:
    if _is_value(node):  # `assert 4 == 4`: nothing of the program would be tested
        raise ValueError("the test compares two plain values; one side must use the program")
    return ast.unparse(node)


# -- the result's encoding (the sandbox side runs ENCODER's source; decode runs here) ---------------------------
# Tagged JSON: every container says its type, so a tuple is not a list and a set not a dict. Kept as source so the
# sandbox runs exactly this (it has only the standard library, not cai).
ENCODER = """
def _enc(v, d=0):
    if d > 100:
        raise ValueError("nested more than 100 deep")
    if v is None or isinstance(v, (bool, str)):
        return str.__str__(v) if isinstance(v, str) else v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    for name, kind in (("tuple", tuple), ("list", list), ("set", set), ("frozenset", frozenset)):
        if isinstance(v, kind):
            return {name: [_enc(x, d + 1) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[_enc(k, d + 1), _enc(x, d + 1)] for k, x in v.items()]}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).hex()}
    if isinstance(v, complex):
        return {"complex": [v.real, v.imag]}
    raise TypeError("a " + type(v).__name__ + " is not a plain value")
"""
_KINDS: dict[str, Any] = {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}


def decode(text: str) -> Any:
    """The value the sandbox printed (ValueError when it is not a well-formed encoding: the program wrote it)."""
    try:
        return _decode(json.loads(text), 0)
    except (ValueError, TypeError, KeyError, RecursionError, MemoryError) as e:
        raise ValueError(f"unreadable result: {type(e).__name__}: {str(e)[:100]}") from None


def _decode(v: Any, depth: int) -> Any:
    if depth > DEPTH:
        raise ValueError(f"nested more than {DEPTH} deep")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if not isinstance(v, dict) or len(v) != 1:
        raise ValueError("not a tagged value")
    ((tag, body),) = v.items()
    if tag in _KINDS and isinstance(body, list):
        return _KINDS[tag](_decode(x, depth + 1) for x in body)
    if tag == "dict" and isinstance(body, list):
        return {_decode(k, depth + 1): _decode(x, depth + 1) for k, x in body}
    if tag == "bytes" and isinstance(body, str):
        return bytes.fromhex(body)
    if tag == "complex" and isinstance(body, list) and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    raise ValueError(f"unknown tag {tag!r}")
