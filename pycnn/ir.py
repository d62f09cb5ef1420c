"""The intermediate representation: what an .arch network elaborates to, before any torch module exists.

A network is a series-parallel DAG written as a tree:
  * `Layer`    one primitive operation (conv, bn, relu, linear, ...) with its attributes, input and output
               shape (channels, height, width) or (features,), parameter count and FLOPs;
  * `Sequence` layers applied one after another (a network part, a stage, a branch);
  * `BranchBlock` a block with parallel branches: `pre` layers, then every branch on the same input, then the
               merge (`add`, `concat` on channels, `mul`), then `post` layers.
Shapes exclude the batch dimension. Each operation's shape inference, parameters and FLOPs (multiply-adds,
counted as pycls does) are its entry in pycnn.opspec.

This module never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from .opspec import SAME, Shape, ShapeError, fmt_shape, infer  # noqa: F401  (shape facts: the registry's)


@dataclass
class Layer:
    name: str
    op: str
    attrs: dict
    in_shape: Shape
    out_shape: Shape
    params: int
    flops: int
    loc: object = None
    # False: no module of its own; it runs with the layer before it and is shown in that layer's summary row.
    # The elaborator makes an activation right after a BatchNorm such a layer (`bn relu`: the modules are
    # named bn1 and nothing else, as they always were); which layers run fused is the passes' business.
    own_module: bool = True


@dataclass
class Sequence:
    name: str
    children: List["Node"]
    in_shape: Shape
    out_shape: Shape
    loc: object = None
    kind: str = "sequence"  # "part" | "stage" | "block" | "branch" | "sequence"
    block: Optional[str] = None  # the block definition a block-sequence came from


@dataclass
class Branch:
    name: str
    nested: bool  # False for `main`: its layers live directly in the block's namespace
    children: List["Node"]
    out_shape: Shape


@dataclass
class BranchBlock:
    name: str
    block: str
    pre: List["Node"]
    branches: List[Branch]
    merge: str
    post: List["Node"]
    in_shape: Shape
    out_shape: Shape
    loc: object = None
    residual_into: Optional[int] = None  # set by the residual pass: this branch's last op adds the others


@dataclass
class Fused:
    """Sibling layers that a pass (pycnn.passes) maps onto one fused operation. The layers keep their names,
    shapes and parameters: a Fused node changes how a network runs, never what it computes or its names.
    kind: "conv_bn_act" (attrs: conv = "depthwise" | "grouped" | "dense", act), "bn_act" (act) or "se"
    (act, post_act); attrs["residual"] is True when the residual pass made it add its block's shortcut."""
    kind: str
    layers: List[Layer]
    attrs: dict

    @property
    def name(self) -> str:
        return self.layers[0].name

    @property
    def in_shape(self) -> Shape:
        return self.layers[0].in_shape

    @property
    def out_shape(self) -> Shape:
        return self.layers[-1].out_shape


@dataclass
class Cell(Sequence):
    """A block with named inputs whose values form a small graph (a NAS cell, Zoph et al. 2018). `children` are
    its chains (ir.Sequence, kind "chain"): layers applied to one value, in the order written, so everything
    that walks sequences walks a cell's layers. `nodes`: (name, merge or None, [(chain name or None, the input or
    node it reads)]) in order; `output` is (merge or None, operands) likewise. `sources`: the module paths of
    the network outputs this instance reads, one per input (the network's input is "input"); () when the
    cell takes the value before it, as any block."""
    inputs: Tuple[str, ...] = ()
    in_shapes: Tuple[Shape, ...] = ()
    nodes: List[tuple] = field(default_factory=list)
    output: tuple = (None, ())
    sources: Tuple[str, ...] = ()


Node = object  # Layer | Sequence | BranchBlock | Fused | Cell (a Sequence)


@dataclass
class NetworkIR:
    name: str
    input_shape: Shape
    parts: List[Sequence]
    params: dict = field(default_factory=dict)  # the network's parameter values after overrides
    source: str = ""
    file: str = "<text>"
    overrides: dict = field(default_factory=dict)  # the compile-time overrides as given (pycnn.save keeps them)

    @property
    def out_shape(self) -> Shape:
        return self.parts[-1].out_shape if self.parts else self.input_shape

    def layers(self) -> Iterator[Tuple[str, Layer]]:
        """Every Layer that is a module, with its dotted module name, in module order."""
        for part in self.parts:
            yield from iter_layers(part, part.name)

    def nodes(self) -> Iterator[Tuple[str, Node]]:
        for part in self.parts:
            yield from iter_nodes(part, part.name)

    @property
    def total_params(self) -> int:
        return sum(layer.params for _, layer in self.layers())

    @property
    def total_flops(self) -> int:
        return sum(layer.flops for _, layer in self.layers())


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def iter_nodes(node, prefix: str) -> Iterator[Tuple[str, Node]]:
    """Every node with its dotted module name; a Fused node yields its layers (siblings in its parent)."""
    yield prefix, node
    if isinstance(node, Sequence):
        yield from _iter_children(node.children, prefix)
    elif isinstance(node, BranchBlock):
        yield from _iter_children(node.pre, prefix)
        for br in node.branches:
            yield from _iter_children(br.children, _join(prefix, br.name) if br.nested else prefix)
        yield from _iter_children(node.post, prefix)


def _iter_children(children, prefix: str) -> Iterator[Tuple[str, Node]]:
    for child in children:
        for member in (child.layers if isinstance(child, Fused) else [child]):
            yield from iter_nodes(member, _join(prefix, member.name))


def iter_layers(node, prefix: str) -> Iterator[Tuple[str, Layer]]:
    """Every Layer that is a module (own_module), with its dotted module name."""
    for name, n in iter_nodes(node, prefix):
        if isinstance(n, Layer) and n.own_module:
            yield name, n


def iter_layer_groups(node, prefix: str) -> Iterator[Tuple[str, List[Layer]]]:
    """(module name, [its layer, then the layers without a module that run with it]) per module layer: the
    rows of a summary (`bn1`: [bn, relu])."""
    group: Optional[Tuple[str, List[Layer]]] = None
    for name, n in iter_nodes(node, prefix):
        if not isinstance(n, Layer):
            continue
        if n.own_module:
            if group is not None:
                yield group
            group = (name, [n])
        elif group is not None:
            group[1].append(n)
    if group is not None:
        yield group


def merge_shapes(kind: str, shapes: List[Shape]) -> Shape:
    first = shapes[0]
    if kind == "mul":  # broadcasting: a Cx1x1 gate times a CxHxW tensor (SE, ECA)
        out = list(first)
        for s in shapes[1:]:
            if len(s) != len(out) or any(a != b and 1 not in (a, b) for a, b in zip(s, out)):
                raise ShapeError("cannot mul branches whose sizes neither match nor broadcast (a size must be "
                                 "equal or 1): " + ", ".join(fmt_shape(x) for x in shapes))
            out = [max(a, b) for a, b in zip(s, out)]
        return tuple(out)
    if kind == "add":
        for s in shapes[1:]:
            if s != first:
                raise ShapeError(f"cannot {kind} branches of different shapes: "
                                 + ", ".join(fmt_shape(x) for x in shapes))
        return first
    if kind == "concat":
        if any(len(s) != len(first) for s in shapes) or any(s[1:] != first[1:] for s in shapes):
            raise ShapeError("cannot concat branches whose sizes differ beyond channels: "
                             + ", ".join(fmt_shape(x) for x in shapes))
        return (sum(s[0] for s in shapes),) + tuple(first[1:])
    raise ShapeError(f"unknown merge {kind!r}; use add, concat or mul")
