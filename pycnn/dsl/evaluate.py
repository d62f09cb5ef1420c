"""The expression evaluator of the language: our own, over the syntax tree (never Python's eval).

Values are int, float, bool, str, tuples of those, and `Symbol` (the name of a block or an activation, used
as an argument such as `block=xblock` or `act=silu`). Every result is bounded in size, so no text can make the
evaluator hang or allocate without bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .errors import ArchError, did_you_mean

MAX_MAGNITUDE = 10 ** 15


@dataclass(frozen=True)
class Symbol:
    name: str

    def __str__(self):
        return self.name


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """torchvision/timm `_make_divisible`: nearest multiple of divisor, not below min_value, never below
    round_limit of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def _round(x, ndigits=None):
    if ndigits is None:
        return round(x)
    # Python's round computes 10 ** |ndigits|: unbounded ndigits would hang. Beyond +-32 digits the result of
    # rounding a value within MAX_MAGNITUDE no longer changes.
    return round(x, max(-32, min(32, int(ndigits))))


def _log(x, base=None):
    if x <= 0:
        raise ValueError("log of a non-positive number")
    return math.log(x) if base is None else math.log(x, base)


def _sqrt(x):
    if x < 0:
        raise ValueError("sqrt of a negative number")
    return math.sqrt(x)


def _pow(a, b):
    return _checked_pow(a, b)


def _checked_pow(a, b):
    if a == 0 and b < 0:
        raise ValueError("zero to a negative power")
    if abs(a) > 1 and b > 0 and b * math.log10(abs(a)) > 15.5:
        raise ValueError("number too large")
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        return a ** b
    result = float(a) ** float(b)
    if isinstance(result, complex):
        raise ValueError("negative number to a fractional power")
    return result


# name -> (function, minimum argument count, maximum argument count)
SHAPE_FUNCTIONS = {"channels": 0, "height": 1, "width": 2}  # a shape's parts: channels(prev) in a cell

FUNCTIONS: Dict[str, tuple] = {
    "round": (_round, 1, 2),
    "ceil": (lambda x: math.ceil(x), 1, 1),
    "floor": (lambda x: math.floor(x), 1, 1),
    "int": (lambda x: int(x), 1, 1),
    "float": (lambda x: float(x), 1, 1),
    "abs": (abs, 1, 1),
    "min": (min, 1, 64),
    "max": (max, 1, 64),
    "sqrt": (_sqrt, 1, 1),
    "log": (_log, 1, 2),
    "pow": (_pow, 2, 2),
    "make_divisible": (make_divisible, 1, 4),
    # EfficientNet compound scaling (Tan & Le 2019): widths to multiples of 8 never below 90%, depths up.
    "scale_width": (lambda c, mult, divisor=8: make_divisible(c * mult, divisor), 2, 3),
    "scale_depth": (lambda n, mult: int(math.ceil(n * mult)), 2, 2),
}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(value, loc, source_of):
    if isinstance(value, float):
        if value != value or abs(value) > MAX_MAGNITUDE:
            raise ArchError("number out of range" if value == value else "not a number", loc, source_of(loc.file))
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_MAGNITUDE:
            raise ArchError("number too large", loc, source_of(loc.file))
    return value


def type_name(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if _is_number(v):
        return "a number"
    if isinstance(v, tuple):
        return "a tuple"
    if isinstance(v, Symbol):
        return f"the name '{v}'"
    if isinstance(v, str):
        return "a string"
    return type(v).__name__


class Budget:
    """The work one elaboration may do, in steps: each expression node evaluated, each statement expanded. Bounded
    repeat counts alone do not bound the work (a repeat of a long expression), so every step is counted."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def spend(self, loc, source_of: Callable[[str], Optional[str]], steps: int = 1) -> None:
        self.used += steps
        if self.used > self.limit:
            raise ArchError(f"elaboration takes more than {self.limit:,} steps (expressions evaluated and "
                            f"statements expanded; pycnn.dsl.elaborate.Limits.max_steps)", loc,
                            source_of(loc.file) if loc is not None else None)


_METHODS: dict = {}  # (evaluator class, node class) -> the method that evaluates it


class Evaluator:
    """Evaluates expressions in an environment of names.

    `symbols` are names that may stand for themselves (blocks, activations) when no variable has that name.
    `in_width` is the value of `in` (None outside of a block or part). Each node evaluated spends a step of
    `budget` when one is given."""

    def __init__(self, env: Dict[str, object], source_of: Callable[[str], Optional[str]],
                 symbols=(), in_width: Optional[int] = None, budget: Optional[Budget] = None):
        self.env = env
        self.source_of = source_of
        self.symbols = symbols
        self.in_width = in_width
        self.budget = budget

    def error(self, message, loc):
        return ArchError(message, loc, self.source_of(loc.file))

    def eval(self, node):
        budget = self.budget
        if budget is not None:  # Budget.spend inlined (the hot path of every elaboration)
            budget.used += 1
            if budget.used > budget.limit:
                budget.spend(node.loc, self.source_of, 0)
        key = (type(self), type(node))
        method = _METHODS.get(key)
        if method is None:
            method = _METHODS[key] = getattr(type(self), "_" + type(node).__name__)
        value = method(self, node)
        if type(value) is int and -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # _check's commonest case, inlined
            return value
        return _check(value, node.loc, self.source_of)

    def _Number(self, n):
        return n.value

    def _Shape(self, n):
        return n.dims

    def _String(self, n):
        return n.value

    def _Bool(self, n):
        return n.value

    def _InWidth(self, n):
        if self.in_width is None:
            raise self.error("`in` (the input channels) is only known inside a block or a part", n.loc)
        return self.in_width

    def _Name(self, n):
        if n.id in self.env:
            return self.env[n.id]
        if n.id in self.symbols:
            return Symbol(n.id)
        raise self.error(f"unknown name '{n.id}'" + did_you_mean(n.id, list(self.env) + list(self.symbols)),
                         n.loc)

    def _Unary(self, n):
        v = self.eval(n.operand)
        if not _is_number(v):
            raise self.error(f"'{n.op}' needs a number, got {type_name(v)}", n.loc)
        return -v if n.op == "-" else v

    def _Binary(self, n):
        a, b = self.eval(n.left), self.eval(n.right)
        if not _is_number(a) or not _is_number(b):
            bad = a if not _is_number(a) else b
            raise self.error(f"'{n.op}' needs numbers, got {type_name(bad)}", n.loc)
        op = n.op
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                if b == 0:
                    raise ZeroDivisionError
                if isinstance(a, int) and isinstance(b, int) and a % b == 0:
                    return a // b  # exact division of integers stays an integer
                return a / b
            if op == "//":
                return a // b
            if op == "%":
                return a % b
            if op == "**":
                return _checked_pow(a, b)
        except ZeroDivisionError:
            raise self.error("division by zero", n.loc) from None
        except (ValueError, OverflowError) as e:
            raise self.error(str(e) if isinstance(e, ValueError) else "number too large", n.loc) from None
        raise self.error(f"unknown operator {op!r}", n.loc)  # pragma: no cover

    def _Compare(self, n):
        a, b = self.eval(n.left), self.eval(n.right)
        if n.op in ("==", "!="):
            eq = a == b
            return eq if n.op == "==" else not eq
        if not _is_number(a) or not _is_number(b):
            raise self.error(f"'{n.op}' compares numbers only", n.loc)
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[n.op]

    def truth(self, node) -> bool:
        v = self.eval(node)
        if isinstance(v, bool):
            return v
        if _is_number(v):
            return v != 0
        raise self.error(f"a condition must be true/false or a number, got {type_name(v)}", node.loc)

    def _BoolOp(self, n):
        left = self.truth(n.left)
        if n.op == "and":
            return left and self.truth(n.right)
        return left or self.truth(n.right)

    def _Not(self, n):
        return not self.truth(n.operand)

    def _Ternary(self, n):
        return self.eval(n.then) if self.truth(n.cond) else self.eval(n.otherwise)

    def _TupleExpr(self, n):
        return tuple(self.eval(x) for x in n.items)

    def _shape_part(self, n):
        """channels(s), height(s), width(s) of a CxHxW shape (a cell's inputs are bound to their shapes)."""
        if len(n.args) != 1:
            raise self.error(f"{n.name}() takes 1 argument, got {len(n.args)}", n.loc)
        value = self.eval(n.args[0])
        if not (isinstance(value, tuple) and len(value) == 3 and all(_is_number(d) for d in value)):
            raise self.error(f"{n.name}() needs a CxHxW shape (like a cell's input), got {type_name(value)}",
                             n.args[0].loc)
        return value[SHAPE_FUNCTIONS[n.name]]

    def _FuncCall(self, n):
        if n.name in SHAPE_FUNCTIONS:
            return self._shape_part(n)
        if n.name not in FUNCTIONS:
            raise self.error(f"unknown function '{n.name}'" + did_you_mean(n.name, FUNCTIONS), n.name_loc)
        fn, lo, hi = FUNCTIONS[n.name]
        if not lo <= len(n.args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.error(f"{n.name}() takes {want} arguments, got {len(n.args)}", n.loc)
        args = [self.eval(a) for a in n.args]
        for a, node in zip(args, n.args):
            if not _is_number(a) and not (a is None):
                raise self.error(f"{n.name}() needs numbers, got {type_name(a)}", node.loc)
        try:
            return fn(*args)
        except (ValueError, OverflowError, ZeroDivisionError) as e:
            raise self.error(f"{n.name}(): {e}", n.loc) from None
