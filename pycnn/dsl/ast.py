"""The syntax tree of an .arch file: frozen dataclasses, each carrying where it was written.

`Loc` is (file, line, column, end_line, end_column), 1-based, end exclusive; the elaborator uses it to put a
caret under the text an error is about.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union


@dataclass(frozen=True)
class Loc:
    file: str
    line: int
    column: int
    end_line: int
    end_column: int


# ----------------------------------------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Number:
    value: Union[int, float]
    loc: Loc


@dataclass(frozen=True)
class Shape:
    dims: Tuple[int, ...]
    loc: Loc


@dataclass(frozen=True)
class String:
    value: str
    loc: Loc


@dataclass(frozen=True)
class Bool:
    value: bool
    loc: Loc


@dataclass(frozen=True)
class InWidth:
    """`in`: the channels entering the block being elaborated."""
    loc: Loc


@dataclass(frozen=True)
class Name:
    id: str
    loc: Loc


@dataclass(frozen=True)
class Unary:
    op: str
    operand: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Binary:
    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Compare:
    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Ternary:
    cond: "Expr"
    then: "Expr"
    otherwise: "Expr"
    loc: Loc


@dataclass(frozen=True)
class FuncCall:
    name: str
    args: Tuple["Expr", ...]
    loc: Loc
    name_loc: Loc


@dataclass(frozen=True)
class TupleExpr:
    items: Tuple["Expr", ...]
    loc: Loc


Expr = Union[Number, Shape, String, Bool, InWidth, Name, Unary, Binary, Compare, BoolOp, Not, Ternary,
             FuncCall, TupleExpr]


# ----------------------------------------------------------------------------------------------- statements

@dataclass(frozen=True)
class Param:
    name: str
    default: Optional[Expr]
    loc: Loc


@dataclass(frozen=True)
class Arg:
    name: Optional[str]  # None for a positional argument
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Call:
    """A layer primitive, a block or a generator, with or without arguments: `bn`, `conv(64, k=3)`."""
    name: str
    args: Tuple[Arg, ...]
    loc: Loc
    name_loc: Loc


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class If:
    cond: Expr
    then: Tuple["Stmt", ...]
    otherwise: Tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Repeat:
    count: Expr
    body: Tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Branch:
    kind: str  # "main" | "branch" | "shortcut"
    name: str
    when: Optional[Expr]  # shortcut only: the body is used when true, identity otherwise
    body: Tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Merge:
    kind: str  # "add" | "concat" | "mul"
    loc: Loc


@dataclass(frozen=True)
class Part:
    """`stem = conv(32, k=3, s=2) bn relu` in a network."""
    name: str
    items: Tuple["Stmt", ...]
    loc: Loc
    sources: Tuple["Source", ...] = ()  # `from (a, b)`: the outputs its first item (a cell) reads


@dataclass(frozen=True)
class Stage:
    """`stage s1 = 4 x xblock(32) stride 2`."""
    name: str
    count: Expr
    call: Call
    stride: Optional[Expr]
    loc: Loc
    sources: Tuple["Source", ...] = ()  # `from (a, b)`: the outputs its first block (a cell) reads


# ----------------------------------------------------------------------------------------------- cells
# A block whose body declares `input x, prev` is a cell: a small graph over named values (Zoph et al. 2018).

@dataclass(frozen=True)
class Source:
    """A network output a cell reads, by its module path: `stem`, `n1.b5`, or `input` (the network's input)."""
    path: str
    loc: Loc


@dataclass(frozen=True)
class CellInput:
    """`input x, prev`: the cell's inputs, the latest network output first."""
    names: Tuple[str, ...]
    locs: Tuple[Loc, ...]
    loc: Loc


@dataclass(frozen=True)
class Operand:
    """`prev` or `prev { relu conv(c) bn }`: a value of the cell, optionally through layers."""
    source: str
    body: Optional[Tuple["Stmt", ...]]
    loc: Loc


@dataclass(frozen=True)
class CellNode:
    """`node c0 = add(x { sep(c, k=5) }, prev)`; `merge` is None for a single operand (`node left = prev {...}`)."""
    name: str
    merge: Optional[str]
    operands: Tuple[Operand, ...]
    loc: Loc
    merge_loc: Optional[Loc] = None


@dataclass(frozen=True)
class CellOutput:
    """`output concat(left, c0, c1)`: what the cell returns."""
    merge: Optional[str]
    operands: Tuple[Operand, ...]
    loc: Loc
    merge_loc: Optional[Loc] = None


Stmt = Union[Let, Call, If, Repeat, Branch, Merge, Part, Stage]


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: Tuple[Param, ...]
    body: Tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class NetworkDef:
    name: str
    params: Tuple[Param, ...]
    body: Tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class NetworkAlias:
    """`network efficientnet_b1 = efficientnet_b0(width=1.0, depth=1.1)`: a network with other defaults."""
    name: str
    base: str
    args: Tuple[Arg, ...]
    loc: Loc
    base_loc: Loc


@dataclass(frozen=True)
class Use:
    path: Tuple[str, ...]
    loc: Loc


@dataclass(frozen=True)
class File:
    path: str
    source: str
    items: Tuple[Union[Use, NetworkDef, NetworkAlias, BlockDef], ...]


# ----------------------------------------------------------------------------------------------- design spaces

@dataclass(frozen=True)
class SpaceSample:
    """`sample w1..w4 = int(8, 1024, dist=log, q=8)`: the names (one, or a numbered range) and their law."""
    names: Tuple[str, ...]
    law: Call
    loc: Loc


@dataclass(frozen=True)
class SpaceConstraint:
    """`shared b1..b4`, `non_decreasing w1..w4` (names), `require EXPR` (expr)."""
    kind: str  # "shared" | "non_decreasing" | "require"
    names: Tuple[str, ...]
    expr: Optional[Expr]
    loc: Loc


@dataclass(frozen=True)
class SpaceWindow:
    """`window flops(360e6, 400e6)`: bounds on a complexity measure of every sample."""
    measure: str
    low: Expr
    high: Expr
    loc: Loc
    measure_loc: Loc


@dataclass(frozen=True)
class SpaceDef:
    """`space AnyNetX_A of anynet(stem_width = 32) { ... }`: which parameters of a network are sampled, how."""
    name: str
    network: str
    args: Tuple[Arg, ...]  # the network's parameters fixed for every sample
    body: Tuple[Union[SpaceSample, SpaceConstraint, SpaceWindow], ...]
    loc: Loc
    network_loc: Loc
