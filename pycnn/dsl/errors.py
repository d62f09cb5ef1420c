"""`ArchError`: every mistake found in an .arch text before a module is built.

The message reads like a compiler's:

    archs/net.arch:4:20: unknown layer or block 'xblok' (did you mean 'xblock'?)
        stage s1 = 4 x xblok(32)
                       ^^^^^
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


_SHOWN_LINE = 120  # characters of a source line shown under a message
_BREAKS_AS_SPACES = {ord(c): " " for c in "\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class ArchError(Exception):
    """An error in an architecture description, with its place in the source when one is known."""

    def __init__(self, message: str, loc=None, source: Optional[str] = None):
        self.message = message
        self.loc = loc
        self.file = loc.file if loc is not None else None
        self.line = loc.line if loc is not None else None
        self.column = loc.column if loc is not None else None
        self.context = []  # where the failing block was instantiated, innermost first
        self.source_line = None
        if loc is not None and source is not None:
            lines = source.split("\n")  # as Lark counts lines: a form feed, "\r" or U+2028 does not end one
            if 1 <= loc.line <= len(lines):
                # other line and page breaks shown as spaces, so the caret stays under its column
                self.source_line = lines[loc.line - 1].translate(_BREAKS_AS_SPACES)
        super().__init__(self._format())

    def add_context(self, note: str) -> None:
        """Add a line under the message (the block instantiation that led to the error)."""
        self.context.append(note)
        self.args = (self._format(),)

    def _format(self) -> str:
        return self._located() + "".join(f"\n  {note}" for note in self.context)

    def _located(self) -> str:
        if self.loc is None:
            return self.message
        text = f"{self.loc.file}:{self.loc.line}:{self.loc.column}: {self.message}"
        if self.source_line is not None:
            line, column = self.source_line, self.loc.column
            if self.loc.end_line == self.loc.line and self.loc.end_column > column:
                width = self.loc.end_column - column
            else:
                width = max(1, len(line.rstrip()) - column + 1)
            if len(line) > _SHOWN_LINE:  # a window of a very long line around the column
                start = max(0, column - 1 - _SHOWN_LINE // 4)
                line = ("..." if start else "") + line[start:start + _SHOWN_LINE] + "..."
                column = column - start + (3 if start else 0)
                width = min(width, _SHOWN_LINE - (column - 1) + 3)
            prefix = "".join(c if c == "\t" else " " for c in line[: column - 1])
            text += f"\n    {line}\n    {prefix}{'^' * max(1, width)}"
        return text


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
