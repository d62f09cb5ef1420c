"""The architecture language: parse (text -> AST), elaborate (AST -> IR). Never imports torch."""
from .errors import ArchError
from .parse import parse_text, parse_file
from .elaborate import elaborate, load_program, Limits

__all__ = ["ArchError", "parse_text", "parse_file", "elaborate", "load_program", "Limits"]
