"""`ArchError`: every mistake found in an .arch text before a module is built.

The message reads like a compiler's:

    archs/net.arch:4:20: unknown layer or block 'xblok' (did you mean 'xblock'?)
        stage s1 = 4 x xblok(32)
                       ^^^^^
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


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
            lines = source.splitlines()
            if 1 <= loc.line <= len(lines):
                self.source_line = lines[loc.line - 1]
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
            if self.loc.end_line == self.loc.line and self.loc.end_column > self.loc.column:
                width = self.loc.end_column - self.loc.column
            else:
                width = max(1, len(self.source_line.rstrip()) - self.loc.column + 1)
            prefix = "".join(c if c == "\t" else " " for c in self.source_line[: self.loc.column - 1])
            text += f"\n    {self.source_line}\n    {prefix}{'^' * width}"
        return text


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
