"""Where a syntax error really is when a bracket was left open: the parser notices only later (at the next
definition's `{`, or at the end of the file), so the error is reported where the bracket was opened."""
from __future__ import annotations

import re
from typing import Optional, Tuple

_CLOSER = {"(": ")", "{": "}"}
# the first word of a line that only a top-level statement starts with: inside a bracket it means the bracket
# before it was never closed
_TOP_LEVEL = re.compile(r"[ \t]*(network|block|use)[ \t]")


def unclosed_bracket(text: str, upto: int) -> Optional[Tuple[str, int, int, str]]:
    """(bracket, line, column, why) of the bracket left open that explains a syntax error at offset `upto`
    (len(text) for the end of the file), or None when the brackets before `upto` are not the cause."""
    stack = []  # (bracket, line, column)
    line, column, i, n = 1, 1, 0, min(upto, len(text))
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and stack:
            m = _TOP_LEVEL.match(text, i)
            if m:
                bracket, bl, bc = stack[-1]
                return bracket, bl, bc, f"a new `{m.group(1)}` starts at line {line} while it is open"
        at_line_start = False
        if c == "#":  # a comment: skip to the end of the line
            end = text.find("\n", i)
            end = n if end < 0 else min(end, n)
            column += end - i
            i = end
            continue
        if c == '"':  # a string: brackets inside do not count
            end = text.find('"', i + 1)
            newline = text.find("\n", i + 1)
            end = end if end >= 0 and (newline < 0 or end < newline) else i
            column += end - i + 1
            i = end + 1
            continue
        if c in _CLOSER:
            stack.append((c, line, column))
        elif c in (")", "}") and stack and _CLOSER[stack[-1][0]] == c:
            stack.pop()
        if c == "\n":
            line, column, at_line_start = line + 1, 1, True
        else:
            column += 1
        i += 1
    if upto >= len(text) and stack:
        bracket, bl, bc = stack[-1]
        return bracket, bl, bc, "the file ends while it is open"
    return None
