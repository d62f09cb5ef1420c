"""The intermediate representation: what an .arch network elaborates to, before any torch module exists.

A network is a series-parallel DAG written as a tree:
  * `Layer`    one primitive operation (conv, bn, relu, linear, ...) with its attributes, input and output
               shape (channels, height, width) or (features,), parameter count and FLOPs;
  * `Sequence` layers applied one after another (a network part, a stage, a branch);
  * `Block`    a block with parallel branches: `pre` layers, then every branch on the same input, then the
               merge (`add`, `concat` on channels, `mul`), then `post` layers.
Shapes exclude the batch dimension. FLOPs are multiply-adds, counted as pycls does: convolutions and linear
layers (plus their bias), nothing for normalization, activations, pooling or element-wise merges.

This module never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

Shape = Tuple[int, ...]

ACTIVATIONS = ("relu", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid", "gelu", "tanh")


SAME = "same"  # a conv's `p`: TensorFlow's SAME padding (asymmetric, computed from the input size at run time)


class ShapeError(Exception):
    """Raised by shape inference; `arg` names the argument at fault (the elaborator points the caret at it)."""

    def __init__(self, message: str, arg: Optional[str] = None):
        super().__init__(message)
        self.message, self.arg = message, arg


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
class Block:
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


Node = object  # Layer | Sequence | Block | Fused


@dataclass
class Network:
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
        """Every Layer with its dotted module name, in module order."""
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
    elif isinstance(node, Block):
        yield from _iter_children(node.pre, prefix)
        for br in node.branches:
            yield from _iter_children(br.children, _join(prefix, br.name) if br.nested else prefix)
        yield from _iter_children(node.post, prefix)


def _iter_children(children, prefix: str) -> Iterator[Tuple[str, Node]]:
    for child in children:
        for member in (child.layers if isinstance(child, Fused) else [child]):
            yield from iter_nodes(member, _join(prefix, member.name))


def iter_layers(node, prefix: str) -> Iterator[Tuple[str, Layer]]:
    for name, n in iter_nodes(node, prefix):
        if isinstance(n, Layer):
            yield name, n


# --------------------------------------------------------------------------------------- shape inference

def _conv_size(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # PyTorch: the last window must start inside the input or left padding
            out -= 1
        return out
    return span // s + 1


def _prod(xs) -> int:
    return math.prod(xs)


def _spatial(in_shape: Shape, op: str) -> Tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ShapeError(f"{op} needs an image input (channels x height x width), got {fmt_shape(in_shape)}")
    return in_shape


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _check_spatial(op: str, h: int, w: int, in_shape: Shape):
    if h < 1 or w < 1:
        raise ShapeError(f"spatial size reaches zero: {op} on {fmt_shape(in_shape)} gives {h}x{w}")


def infer(op: str, a: dict, in_shape: Shape) -> Tuple[Shape, int, int]:
    """(output shape, parameter count, FLOPs) of one layer; raises ShapeError."""
    if op in ("conv", "wsconv"):
        c, h, w = _spatial(in_shape, op)
        (kh, kw), (sh, sw), (dh, dw) = a["k"], a["s"], a["d"]
        groups, out = a["groups"], a["out"]
        if c % groups:
            raise ShapeError(f"groups={groups} does not divide the {c} input channels", "groups")
        if out % groups:
            raise ShapeError(f"groups={groups} does not divide the {out} output channels", "groups")
        if a["p"] == SAME:  # TensorFlow's SAME: ceil(size / stride) whatever the kernel
            ho, wo = -(-h // sh), -(-w // sw)
        else:
            (ph, pw) = a["p"]
            ho, wo = _conv_size(h, kh, sh, ph, dh), _conv_size(w, kw, sw, pw, dw)
            _check_spatial(f"{op} k={kh}x{kw} s={sh}x{sw} p={ph}x{pw}", ho, wo, in_shape)
        weights = out * (c // groups) * kh * kw
        params = weights + (out if a["bias"] else 0) + (out if op == "wsconv" else 0)
        flops = weights * ho * wo + (out * ho * wo if a["bias"] else 0)
        return (out, ho, wo), params, flops
    if op in ("bn", "gn", "ln"):
        if len(in_shape) == 3:
            c = in_shape[0]
        elif op == "ln":
            c = in_shape[-1]
        else:
            raise ShapeError(f"{op} needs an image input (channels x height x width), got {fmt_shape(in_shape)}")
        if op == "gn" and c % a["groups"]:
            raise ShapeError(f"gn groups={a['groups']} does not divide the {c} channels", "groups")
        return in_shape, 2 * c, 0
    if op in ("maxpool", "avgpool"):
        c, h, w = _spatial(in_shape, op)
        if a["p"] == SAME:
            return (c, -(-h // a["s"][0]), -(-w // a["s"][1])), 0, 0
        (kh, kw), (sh, sw), (ph, pw) = a["k"], a["s"], a["p"]
        if ph * 2 > kh or pw * 2 > kw:
            raise ShapeError(f"{op} padding {ph}x{pw} must be at most half the window {kh}x{kw}", "p")
        ho, wo = _conv_size(h, kh, sh, ph, 1, a["ceil"]), _conv_size(w, kw, sw, pw, 1, a["ceil"])
        _check_spatial(f"{op} k={kh}x{kw} s={sh}x{sw} p={ph}x{pw}", ho, wo, in_shape)
        return (c, ho, wo), 0, 0
    if op in ("gap", "gmp"):
        c, _, _ = _spatial(in_shape, op)
        return (c, 1, 1), 0, 0
    if op == "adaptive_avgpool":
        c, _, _ = _spatial(in_shape, op)
        return (c,) + tuple(a["size"]), 0, 0
    if op == "flatten":
        return (_prod(in_shape),), 0, 0
    if op == "linear":
        if len(in_shape) != 1:
            raise ShapeError(f"linear needs a flat input; got {fmt_shape(in_shape)} (add `flatten` before it)")
        f, out = in_shape[0], a["out"]
        params = f * out + (out if a["bias"] else 0)
        return (out,), params, params
    if op == "se":
        c, _, _ = _spatial(in_shape, op)
        r = a["reduced"]
        params = c * r + r + r * c + c
        return in_shape, params, params
    if op == "channel_linear":
        c, h, w = _spatial(in_shape, op)
        out = a["out"]
        params = c * out + (out if a["bias"] else 0)
        return (out, h, w), params, params * h * w
    if op == "layer_scale":
        c, _, _ = _spatial(in_shape, op)
        return in_shape, c, 0
    if op == "gain":
        return in_shape, 1, 0
    if op == "slice":
        c, h, w = _spatial(in_shape, op)
        start, stop = a["start"], a["stop"]
        if stop > c:
            raise ShapeError(f"slice({start}, {stop}) reaches beyond the {c} channels", "stop")
        if start >= stop:
            raise ShapeError(f"slice({start}, {stop}) selects no channel (start must be below stop)", "start")
        return (stop - start, h, w), 0, 0
    if op in ("act", "dropout", "drop_path", "identity", "scale", "channel_shuffle"):
        if op == "channel_shuffle":
            c, _, _ = _spatial(in_shape, op)
            if c % a["groups"]:
                raise ShapeError(f"channel_shuffle groups={a['groups']} does not divide the {c} channels", "groups")
        return in_shape, 0, 0
    raise ShapeError(f"unknown operation {op!r}")  # pragma: no cover - the elaborator only makes known ops


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
