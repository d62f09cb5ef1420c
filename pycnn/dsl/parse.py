"""Text -> syntax tree (pycnn.dsl.ast). The Lark LALR parser is built once per process.

Untrusted text is bounded before Lark sees it (docs/security.md): source size, bracket nesting and the length of
one expression, so that parsing and the recursive passes after it take bounded time and stack."""
from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args

from . import ast as A
from .brackets import unclosed_bracket
from .errors import ArchError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # pycnn/


def grammar_path() -> Path:
    """grammar/arch.lark: inside the installed package, else at the root of a source checkout."""
    for candidate in (_PACKAGE_DIR / "grammar" / "arch.lark", _PACKAGE_DIR.parent / "grammar" / "arch.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("grammar/arch.lark not found next to the pycnn package")


# Language limits (docs/security.md). Source size is a per-call limit (pycnn.dsl.elaborate.Limits).
MAX_SOURCE_BYTES = 64 * 1024      # the largest shipped .arch file is 4 KB
MAX_TOKENS = 10_000               # the largest shipped file has ~950; Lark parses ~40,000 tokens a second
MAX_NESTING = 64                  # brackets ( { [ open at once
MAX_EXPRESSION_ITEMS = 200        # operands and operators in one expression (the evaluator recurses on them)


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    # No cache=True: Lark's cache is a pickle in a predictably named file of the shared temporary folder, which
    # anyone could plant (lark-parser/lark#1628). Building the LALR tables takes ~0.1 s, once per process.
    return Lark(grammar_path().read_text(), parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True)


def read_source(path, max_bytes: int = MAX_SOURCE_BYTES, loc=None, source=None) -> str:
    """The text of an .arch file: a regular file (not a FIFO, device or folder) of at most `max_bytes`, in UTF-8.
    Any failure is an ArchError (at `loc`, the `use` that named the file, when given)."""
    path = os.fspath(path)

    def fail(message):
        return ArchError(f"{path}: {message}", loc, source)

    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as e:
        raise fail(getattr(e, "strerror", None) or str(e)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail("not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise fail(f"larger than the limit of {max_bytes:,} bytes")
    return decode_source(data, path, max_bytes)


def decode_source(data: bytes, file: str, max_bytes: int = MAX_SOURCE_BYTES) -> str:
    """UTF-8 text of an .arch source; the first undecodable byte is an ArchError at its line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[line_start:e.start].decode("utf-8", "replace")) + 1
        shown = data.decode("utf-8", "replace")
        raise ArchError(f"the text is not UTF-8 (byte 0x{data[e.start]:02x})",
                        A.Loc(file, line, column, line, column + 1), shown) from None


# A token as the grammar sees it, roughly (a comment or string is one; names and numbers are runs).
_TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z0-9_.]+|\S')


def _check_bounds(text: str, file: str, max_bytes: int) -> None:
    """Refuses text too large, too long or nested too deeply for the parser and the passes after it (their time
    and stack grow with these), with a location, before the parser runs."""
    if len(text) > max_bytes:
        raise ArchError(f"{file}: the text has {len(text):,} characters, more than the limit of {max_bytes:,}")

    def error_at(offset, message):
        line = text.count("\n", 0, offset) + 1
        column = offset - text.rfind("\n", 0, offset)
        return ArchError(message, A.Loc(file, line, column, line, column + 1), text)

    depth = tokens = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c[0] == "#":
            continue
        tokens += 1
        if tokens > MAX_TOKENS:
            raise error_at(m.start(), f"the text has more than {MAX_TOKENS:,} tokens (the limit)")
        if c in "({[":
            depth += 1
            if depth > MAX_NESTING:
                raise error_at(m.start(), f"brackets nested deeper than {MAX_NESTING}")
        elif c in ")}]":
            depth = max(0, depth - 1)


def _loc_of(file: str, meta_or_token) -> A.Loc:
    return A.Loc(file, meta_or_token.line, meta_or_token.column, meta_or_token.end_line, meta_or_token.end_column)


_NUMBER_LIMIT = 10 ** 15


def _number(text: str):
    if any(c in text for c in ".eE"):
        value = float(text)
    else:
        if len(text) > 16:
            raise ValueError("number too large")
        value = int(text)
    if abs(value) > _NUMBER_LIMIT or value != value:
        raise ValueError("number too large")
    return value


class _SpaceToAst:
    """The design-space statements (grammar/arch.lark, `space_def`); mixed into _ToAst."""

    @v_args(meta=True)
    def space_def(self, meta, children):
        name, network, _open, args, *body = children
        return A.SpaceDef(str(name), str(network), args or (), tuple(body), self._loc(meta), self._loc(network))

    @v_args(meta=True)
    def space_sample(self, meta, children):
        names, law = children
        return A.SpaceSample(names, law, self._loc(meta))

    @v_args(meta=True)
    def space_target(self, meta, children):
        return _name_range(self.file, children[0], children[1] if len(children) > 1 else None)

    def space_names(self, children):
        return tuple(n for names in children for n in names)

    @v_args(meta=True)
    def space_range(self, meta, children):
        return _name_range(self.file, children[0], children[1])

    @v_args(meta=True)
    def space_shared(self, meta, children):
        return A.SpaceConstraint("shared", children[0], None, self._loc(meta))

    @v_args(meta=True)
    def space_non_decreasing(self, meta, children):
        return A.SpaceConstraint("non_decreasing", children[0], None, self._loc(meta))

    @v_args(meta=True)
    def space_require(self, meta, children):
        return A.SpaceConstraint("require", (), children[0], self._loc(meta))

    @v_args(meta=True)
    def space_window(self, meta, children):
        measure, low, high = children
        return A.SpaceWindow(str(measure), low, high, self._loc(meta), self._loc(measure))


_NUMBERED = re.compile(r"(.*?)([0-9]{1,9})$")  # at most 9 digits read as a number: int() of huge text is slow
MAX_NAME_RANGE = 64  # names in one `a1..aN` range


def _name_range(file, first, last) -> tuple:
    """`w1..w4` -> ("w1", "w2", "w3", "w4"); one name -> (name,)."""
    if last is None:
        return (str(first),)
    a, b = _NUMBERED.match(str(first)), _NUMBERED.match(str(last))
    loc = A.Loc(file, first.line, first.column, last.end_line, last.end_column)
    if not (a and b and a.group(1) == b.group(1) and int(a.group(2)) < int(b.group(2))):
        raise _SemanticError(f"a name range is written like w1..w4: the same name, numbered from low to high "
                             f"(got {str(first)[:40]}..{str(last)[:40]})", loc)
    lo, hi = int(a.group(2)), int(b.group(2))
    if hi - lo >= MAX_NAME_RANGE:
        raise _SemanticError(f"a name range may hold at most {MAX_NAME_RANGE} names", loc)
    return tuple(f"{a.group(1)}{i}" for i in range(lo, hi + 1))


class _ToAst(_SpaceToAst, Transformer):
    def __init__(self, file: str):
        super().__init__(visit_tokens=False)
        self.file = file

    def _loc(self, x) -> A.Loc:
        return _loc_of(self.file, x)

    # ---- top level
    @v_args(meta=True)
    def start(self, meta, children):
        return tuple(children)

    @v_args(meta=True)
    def use_stmt(self, meta, children):
        return A.Use(tuple(str(t) for t in children), self._loc(meta))

    @v_args(meta=True)
    def network_def(self, meta, children):
        name, params, *body = children
        return A.NetworkDef(str(name), params or (), tuple(body), self._loc(meta))

    @v_args(meta=True)
    def network_alias(self, meta, children):
        name, base, args = children
        return A.NetworkAlias(str(name), str(base), args or (), self._loc(meta), self._loc(base))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, params, *body = children
        return A.BlockDef(str(name), params or (), tuple(body), self._loc(meta))

    def params(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def param_required(self, meta, children):
        return A.Param(str(children[0]), None, self._loc(meta))

    @v_args(meta=True)
    def param_default(self, meta, children):
        return A.Param(str(children[0]), children[1], self._loc(children[0]))

    # ---- statements
    @v_args(meta=True)
    def part(self, meta, children):
        name, *items = children
        return A.Part(str(name), tuple(items), self._loc(name))

    @v_args(meta=True)
    def stage(self, meta, children):
        name, count, call, _stride_kw, stride = children
        return A.Stage(str(name), count, call, stride, self._loc(meta))

    # ---- cells and `from`
    @v_args(meta=True)
    def part_from(self, meta, children):
        name, *items, sources = children
        return A.Part(str(name), tuple(items), self._loc(name), sources)

    @v_args(meta=True)
    def stage_from(self, meta, children):
        name, count, call, _stride_kw, stride, sources = children
        return A.Stage(str(name), count, call, stride, self._loc(meta), sources)

    def from_clause(self, children):
        return tuple(c for c in children[1:] if isinstance(c, A.Source))

    @v_args(meta=True)
    def source(self, meta, children):
        return A.Source(".".join(str(t) for t in children), self._loc(meta))

    @v_args(meta=True)
    def cell_input(self, meta, children):
        names = [t for t in children if t is not None]
        return A.CellInput(tuple(str(t) for t in names), tuple(self._loc(t) for t in names), self._loc(meta))

    @v_args(meta=True)
    def cell_node(self, meta, children):
        name, (merge, merge_loc, operands) = children
        return A.CellNode(str(name), merge, operands, self._loc(name), merge_loc)

    @v_args(meta=True)
    def cell_output(self, meta, children):
        merge, merge_loc, operands = children[0]
        return A.CellOutput(merge, operands, self._loc(meta), merge_loc)

    def cell_single(self, children):
        return None, None, (children[0],)

    def cell_merge(self, children):
        name, *operands = children
        return str(name), self._loc(name), tuple(o for o in operands if isinstance(o, A.Operand))

    def cell_ref(self, children):
        return A.Operand(str(children[0]), None, self._loc(children[0]))

    def cell_chain(self, children):
        name, *body = children
        return A.Operand(str(name), tuple(c for c in body if c is not None), self._loc(name))

    @v_args(meta=True)
    def let_stmt(self, meta, children):
        return A.Let(str(children[0]), children[1], self._loc(meta))

    @v_args(meta=True)
    def main_branch(self, meta, children):
        return A.Branch("main", "main", None, tuple(children), self._loc(meta))

    @v_args(meta=True)
    def branch(self, meta, children):
        name, *body = children
        return A.Branch("branch", str(name), None, tuple(body), self._loc(meta))

    @v_args(meta=True)
    def shortcut(self, meta, children):
        _when_kw, when, *body = children
        return A.Branch("shortcut", "shortcut", when, tuple(body), self._loc(meta))

    @v_args(meta=True)
    def merge(self, meta, children):
        return A.Merge(str(children[0]), self._loc(meta))

    @v_args(meta=True)
    def if_item(self, meta, children):
        cond = children[0]
        rest = list(children[1:])
        then, otherwise = [], []
        target = then
        for c in rest:
            if isinstance(c, Token) and c.type == "ELSE":
                target = otherwise
            elif c is None:
                continue
            else:
                target.append(c)
        return A.If(cond, tuple(then), tuple(otherwise), self._loc(meta))

    @v_args(meta=True)
    def repeat_item(self, meta, children):
        count, *body = children
        return A.Repeat(count, tuple(body), self._loc(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        name, _open, args = children
        return A.Call(str(name), args or (), self._loc(meta), self._loc(name))

    def args(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def arg_positional(self, meta, children):
        return A.Arg(None, children[0], self._loc(meta))

    @v_args(meta=True)
    def arg_keyword(self, meta, children):
        return A.Arg(str(children[0]), children[1], self._loc(children[0]))

    # ---- expressions: the grammar gives a flat stream of prefix operators, operands and binary operators;
    # precedence is given here by recursive descent (see grammar/arch.lark)
    def operand(self, children):
        return list(children)

    def paren(self, children):
        return children[0]

    def expr(self, children):
        *flat, qmark, then, otherwise = children
        stream = []
        for c in flat:
            if isinstance(c, list):
                stream.extend(c)
            else:
                stream.append(c)
        if len(stream) > MAX_EXPRESSION_ITEMS:
            first = stream[0]
            loc = _tok_loc(self.file, first) if isinstance(first, Token) else first.loc
            raise _SemanticError(f"expression too long: {len(stream)} operands and operators (the limit is "
                                 f"{MAX_EXPRESSION_ITEMS}); split it with `let`", loc)
        node = _ExprParser(self.file, stream).parse()
        if qmark is not None:
            return A.Ternary(node, then, otherwise, _span(self.file, node.loc, otherwise.loc))
        return node

    @v_args(meta=True)
    def number(self, meta, children):
        try:
            return A.Number(_number(str(children[0])), self._loc(meta))
        except ValueError as e:
            raise _SemanticError(str(e), self._loc(meta)) from None

    @v_args(meta=True)
    def shape(self, meta, children):
        text = str(children[0])
        if len(text) > 64:
            raise _SemanticError("shape literal too long", self._loc(meta))
        return A.Shape(tuple(int(d) for d in text.split("x")), self._loc(meta))

    @v_args(meta=True)
    def string(self, meta, children):
        return A.String(str(children[0])[1:-1], self._loc(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return A.Bool(True, self._loc(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return A.Bool(False, self._loc(meta))

    @v_args(meta=True)
    def in_width(self, meta, children):
        return A.InWidth(self._loc(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        return A.Name(str(children[0]), self._loc(meta))

    @v_args(meta=True)
    def func_call(self, meta, children):
        name, *args = children
        return A.FuncCall(str(name), tuple(a for a in args if a is not None), self._loc(meta), self._loc(name))

    @v_args(meta=True)
    def tuple(self, meta, children):
        return A.TupleExpr(tuple(c for c in children if c is not None), self._loc(meta))


def _span(file, start, end) -> A.Loc:
    return A.Loc(file, start.line, start.column, end.end_line, end.end_column)


def _tok_loc(file, tok) -> A.Loc:
    return A.Loc(file, tok.line, tok.column, tok.end_line, tok.end_column)


class _ExprParser:
    """Precedence for a flat expression stream (tokens are operators, everything else an operand's AST)."""

    def __init__(self, file, stream):
        self.file, self.items, self.i = file, stream, 0

    def peek(self, *types):
        if self.i < len(self.items):
            item = self.items[self.i]
            if isinstance(item, Token) and item.type in types:
                return item
        return None

    def take(self):
        item = self.items[self.i]
        self.i += 1
        return item

    def parse(self):
        node = self.or_()
        if self.i != len(self.items):  # pragma: no cover - the grammar guarantees a complete expression
            raise _SemanticError("malformed expression", node.loc)
        return node

    def left_assoc(self, token, operand, node):
        """operand (token operand)*, grouped from the left: node(op, left, right, loc) for each operator."""
        left = operand()
        while self.peek(token):
            op = self.take()
            right = operand()
            left = node(str(op), left, right, _span(self.file, left.loc, right.loc))
        return left

    def or_(self):
        return self.left_assoc("OR", self.and_, A.BoolOp)

    def and_(self):
        return self.left_assoc("AND", self.not_, A.BoolOp)

    def not_(self):
        tok = self.peek("NOT")
        if tok:
            self.take()
            operand = self.not_()
            return A.Not(operand, _span(self.file, _tok_loc(self.file, tok), operand.loc))
        return self.comparison()

    def comparison(self):
        left = self.sum()
        tok = self.peek("COMP_OP")
        if tok:
            self.take()
            right = self.sum()
            left = A.Compare(str(tok), left, right, _span(self.file, left.loc, right.loc))
            again = self.peek("COMP_OP")
            if again:
                raise _SemanticError("comparisons cannot be chained; use `and`", _tok_loc(self.file, again))
        return left

    def sum(self):
        return self.left_assoc("ADD_OP", self.product, A.Binary)

    def product(self):
        return self.left_assoc("MUL_OP", self.unary, A.Binary)

    def unary(self):
        tok = self.peek("ADD_OP")
        if tok:
            self.take()
            operand = self.unary()
            return A.Unary(str(tok), operand, _span(self.file, _tok_loc(self.file, tok), operand.loc))
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek("POW_OP"):
            self.take()
            exponent = self.unary()
            return A.Binary("**", base, exponent, _span(self.file, base.loc, exponent.loc))
        return base

    def atom(self):
        item = self.take()
        if isinstance(item, Token):
            raise _SemanticError(f"unexpected {str(item)!r} in an expression", _tok_loc(self.file, item))
        return item


class _SemanticError(Exception):
    def __init__(self, message, loc):
        super().__init__(message)
        self.message, self.loc = message, loc


_TOKEN_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='",
    "NAME": "a name", "ASSIGN_NAME": "a name", "NUMBER": "a number", "SHAPE": "a shape like 3x224x224",
    "STRING": "a string", "ARGS_OPEN": "'('", "COLON": "':'", "QMARK": "'?'", "DOT": "'.'",
    "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'", "POW_OP": "'**'",
    "STRIDE": "'stride'", "WHEN": "'when'", "ELSE": "'else'", "$END": "end of file", "OR": "'or'", "AND": "'and'",
    "NOT": "'not'",
}


_CLOSERS = {"(": ")", "{": "}"}


def _describe_expected(expected) -> str:
    names = []
    for e in sorted(expected):
        if e.startswith("__ANON") or e.startswith("_"):
            continue
        names.append(_TOKEN_NAMES.get(e, f"'{e.lower()}'" if e.isupper() else e))
    names = sorted(set(names))
    if not names:
        return ""
    if len(names) > 8:
        names = names[:8] + ["..."]
    return "; expected " + ", ".join(names)


def parse_text(text: str, file: str = "<text>", max_bytes: int = MAX_SOURCE_BYTES) -> A.File:
    """Parse .arch source text into an `ast.File`; syntax errors raise ArchError."""
    _check_bounds(text, file, max_bytes)
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        loc = A.Loc(file, e.line, e.column, e.line, e.column + 1)
        char = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
        raise ArchError(f"unexpected character {char!r}", loc, text) from None
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        unclosed = unclosed_bracket(text, len(text) if tok.type == "$END" else tok.start_pos)
        if unclosed is not None:  # report the bracket where it was opened, not where the parser noticed
            bracket, line, column, why = unclosed
            raise ArchError(f"'{bracket}' is never closed: {why} (add '{_CLOSERS[bracket]}')",
                            A.Loc(file, line, column, line, column + 1), text) from None
        if tok.type == "$END":
            lines = text.split("\n")  # Lark counts lines by "\n" alone
            loc = A.Loc(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
            raise ArchError("unexpected end of file" + _describe_expected(e.expected), loc, text) from None
        loc = A.Loc(file, tok.line, tok.column, tok.end_line or tok.line,
                    tok.end_column or tok.column + len(str(tok)))
        raise ArchError(f"unexpected {str(tok)!r}" + _describe_expected(e.expected), loc, text) from None
    except lark.exceptions.UnexpectedInput as e:  # pragma: no cover - other lark input errors
        loc = A.Loc(file, getattr(e, "line", 1), getattr(e, "column", 1), getattr(e, "line", 1),
                    getattr(e, "column", 1) + 1)
        raise ArchError("syntax error", loc, text) from None
    except RecursionError:
        raise ArchError(f"{file}: text nested too deeply") from None
    try:
        items = _ToAst(file).transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, _SemanticError):
            raise ArchError(e.orig_exc.message, e.orig_exc.loc, text) from None
        if isinstance(e.orig_exc, RecursionError):
            raise ArchError(f"{file}: text nested too deeply") from None
        raise
    except RecursionError:
        raise ArchError(f"{file}: text nested too deeply") from None
    return A.File(file, text, tuple(items))


@functools.lru_cache(maxsize=256)
def _parse_file_cached(path: str, mtime_ns: int, size: int, max_bytes: int) -> A.File:
    return parse_text(read_source(path, max_bytes), path, max_bytes)


def parse_file(path, max_bytes: int = MAX_SOURCE_BYTES, loc=None, source=None) -> A.File:
    """Parse a file (cached on path, modification time and size); `loc` is where the file was named (a `use`)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise ArchError(f"{path}: {getattr(e, 'strerror', None) or e}", loc, source) from None
    if not stat.S_ISREG(st.st_mode):
        raise ArchError(f"{path}: not a regular file", loc, source)
    return _parse_file_cached(path, st.st_mtime_ns, st.st_size, max_bytes)
