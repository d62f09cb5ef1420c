"""Values given outside an .arch file (`pycnn ... --set name=value`), read by the language's own rules:
numbers, true/false, "strings", shapes like 3x224x224, tuples, arithmetic; a bare name (a block or an
activation) stays a name. Never Python's eval: the text is elaborated as a network parameter's default."""
from __future__ import annotations

import re
from typing import Tuple

from .errors import ArchError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORBIDDEN = set("{}#\n\r")  # the value must stay inside the parameter list it is elaborated in


def parse_value(text: str):
    """The Python value (int, float, bool, str, tuple) of one language literal or constant expression."""
    from .elaborate import elaborate
    text = text.strip()
    if not text or _FORBIDDEN & set(text):
        raise ArchError(f"not a value: {text!r}")
    if _NAME.fullmatch(text) and text not in ("true", "false"):
        return text
    try:
        value = elaborate(f"network value(input = 1x1x1, value = {text}) {{\n}}", file="<value>").params["value"]
    except ArchError:
        raise ArchError(f"not a value: {text!r} (numbers, true/false, \"strings\", names, shapes like 3x224x224)"
                        ) from None
    return _plain(value)


def _plain(value):
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # a Symbol: overrides turn names back into symbols


def parse_assignment(text: str) -> Tuple[str, object]:
    """`name=value` -> (name, value)."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not _NAME.fullmatch(name):
        raise ArchError(f"expected name=value, got {text!r}")
    return name, parse_value(value)
