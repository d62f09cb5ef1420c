"""The checks of the language that need no elaboration: an argument's value against its kind, the names a
binding, part or branch may not take, and how values read in messages. Never imports torch."""
from __future__ import annotations

import functools

from .. import ir
from ..opspec import LANGUAGE_ACTS
from .errors import ArchError, did_you_mean
from .evaluate import Symbol, _is_number

# what people coming from PyTorch write, and the short names the layers take
SYNONYMS = {"kernel": "k", "kernel_size": "k", "stride": "s", "strides": "s", "padding": "p", "pad": "p",
            "dilation": "d", "out_channels": "out", "channels": "out", "width": "out", "out_features": "out",
            "num_groups": "groups", "ceil_mode": "ceil", "count_include_pad": "count_pad", "rate": "p"}

# words of the grammar that the lexer still takes as a name before `=` (`block b(in=3)`): never a name
KEYWORDS = {"network", "block", "use", "stage", "let", "main", "branch", "shortcut", "merge", "if", "repeat", "in",
            "and", "or", "not", "true", "false"}
# words that start a statement in a cell's body: names elsewhere (`network n(input = ...)`), but a block so named
# could not be called inside a block
CELL_STATEMENTS = ("input", "node", "output")

# attribute names of torch.nn.Module that a part, stage or branch may not take
RESERVED_NAMES = {"forward", "train", "eval", "training", "parameters", "buffers", "children", "modules",
                  "apply", "cuda", "cpu", "to", "float", "double", "half", "bfloat16", "type", "state_dict",
                  "load_state_dict", "named_modules", "named_parameters", "named_children", "zero_grad",
                  "register_buffer", "register_parameter", "add_module", "extra_repr", "arch", "ir", "dump_patches",
                  "call_super_init", "requires_grad_", "share_memory", "get_submodule", "get_parameter",
                  "compile", "ipu", "xpu", "mtia", "register_module", "set_submodule", "get_buffer", "in"}


def check_value(value, kind: str, key: str, what: str, loc, error, blocks):
    """`value` as an argument of kind `kind` (pycnn.opspec.Arg) wants it, or error(message, loc) raised: the
    message names the layer (`what`) and the argument (`key`). `blocks`: the names a `block` argument may take."""
    def bad(expect):
        return error(f"{what}: {key} must be {expect}, got {show(value)}", loc)

    def as_int(v):
        if isinstance(v, bool) or not _is_number(v):
            return None
        if isinstance(v, float):
            if not v.is_integer():
                return None
            v = int(v)
        return v

    if kind in ("width", "pos"):
        v = as_int(value)
        if v is None:
            raise bad("an integer")
        if v < 1:
            if kind == "width":
                raise error(f"{what}: width reaches {v}; {key} must be at least 1", loc)
            raise bad("an integer >= 1")
        return v
    if kind == "int":
        v = as_int(value)
        if v is None:
            raise bad("an integer")
        return v
    if kind == "nonneg":
        v = as_int(value)
        if v is None or v < 0:
            raise bad("an integer >= 0")
        return v
    if kind == "convpad" and isinstance(value, (Symbol, str)):
        if str(value) != ir.SAME:
            raise bad("an integer >= 0, a pair of them, or same")
        return ir.SAME
    if kind in ("pair", "pad", "convpad"):
        lo = 1 if kind == "pair" else 0
        items = value if isinstance(value, tuple) else (value, value)
        if len(items) != 2:
            raise bad("an integer or a pair (a, b)")
        out = []
        for x in items:
            v = as_int(x)
            if v is None or v < lo:
                raise bad(f"an integer >= {lo} or a pair of them")
            out.append(v)
        return tuple(out)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if _is_number(value) and value in (0, 1):
            return bool(value)
        raise bad("true or false")
    if kind == "prob":
        if not _is_number(value) or not 0 <= value <= 1:
            raise error(f"{what}: {key} must be between 0 and 1, got {show(value)}", loc)
        return float(value)
    if kind == "posfloat":
        if not _is_number(value) or value <= 0:
            raise bad("a number > 0")
        return value
    if kind == "float":
        if not _is_number(value):
            raise bad("a number")
        return value
    if kind == "act":
        name = str(value) if isinstance(value, (Symbol, str)) else None
        if name not in LANGUAGE_ACTS and name != "none":
            raise bad(f"an activation ({', '.join(LANGUAGE_ACTS)} or none)")
        return None if name == "none" else name
    if kind == "rounding":
        name = str(value) if isinstance(value, (Symbol, str)) else None
        if name not in ("pycls", "torchvision"):
            raise bad('"pycls" or "torchvision"')
        return name
    if kind == "block":
        name = str(value) if isinstance(value, (Symbol, str)) else None
        if name not in blocks:
            raise error(f"{what}: {key} must name a block, got {show(value)}"
                             + (did_you_mean(name, blocks) if name else ""), loc)
        return name
    raise AssertionError(kind)  # pragma: no cover


@functools.lru_cache(maxsize=None)
def normalized_default(default, kind):
    if kind in ("pair", "pad", "convpad"):
        return default if isinstance(default, tuple) else (default, default)
    return default


def check_binding(name: str, loc, source, what: str):
    if name in KEYWORDS:
        raise ArchError(f"'{name}' is a keyword and cannot name {what}", loc, source)


def value_kind(v) -> str:
    if isinstance(v, bool):
        return "true or false"
    if _is_number(v):
        return "a number"
    if isinstance(v, tuple):
        return "a shape or tuple"
    return "a name"


def within(inner, outer) -> bool:
    """Whether location `inner` lies in the text of location `outer`."""
    if inner is None or outer is None or inner.file != outer.file:
        return False
    return (outer.line, outer.column) <= (inner.line, inner.column) < (outer.end_line, outer.end_column)


def show(v) -> str:
    if isinstance(v, Symbol):
        return v.name
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple) and v and all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        return "x".join(str(d) for d in v)
    if isinstance(v, str):
        return repr(v)
    return repr(v)
