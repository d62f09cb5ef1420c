"""Sampling a design space (a `space` of an .arch file, pycnn.dsl.space): seeded draws, the constraints, and the
FLOPs/parameter windows checked on the IR before any torch module exists.

A draw that breaks a `non_decreasing` or `require` constraint is rejected before anything is elaborated; the
others are elaborated to the IR (a network that does not elaborate, a group width that does not divide the
bottleneck width say, is rejected) and their FLOPs and parameters compared with the windows. `python -m
pycnn.explore.space --bench` measures how many samples a second this gives.
"""
from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .. import ir
from ..dsl.errors import ArchError
from ..dsl.space import Param, Space  # noqa: F401  (the language's design spaces; Param for callers)


class SpaceError(Exception):
    """A design space that cannot be used, or sampled; one line for the user."""


def load_space(path, name: Optional[str] = None) -> Space:
    """The design space `name` (default: the first) of an .arch file; ArchError for mistakes in the text."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpaceError(f"no such design-space file: {path}")
    return Space.load(path, name)


@dataclass
class Sample:
    index: int
    values: dict  # the sampled parameters
    overrides: dict  # everything passed to the network: fixed + sampled (+ input)
    flops: int
    params: int
    acts: int


def complexity(network: ir.NetworkIR) -> Tuple[int, int, int]:
    """(FLOPs, parameters, activations) of an IR network; activations = output elements of every conv (pycls)."""
    flops = params = acts = 0
    for _, layer in network.layers():
        flops += layer.flops
        params += layer.params
        if layer.op in ("conv", "wsconv"):
            acts += math.prod(layer.out_shape)
    return flops, params, acts


class Sampler:
    """Seeded rejection sampler over a Space: the same seed gives the same samples in the same order."""

    def __init__(self, space: Space, seed: int = 0, extra: Optional[dict] = None,
                 flops: Optional[Tuple[float, float]] = None, params: Optional[Tuple[float, float]] = None,
                 max_tries: int = 200_000):
        from ..dsl.elaborate import Elaborator, Limits
        self.space, self.rng = space, random.Random(seed)
        self.extra = dict(extra or {})
        self.flops = flops or space.flops
        self.params = params or space.param_count
        self.max_tries = max_tries
        self._elaborator = lambda: Elaborator(space.program, Limits())
        self.tries = self.rejected_constraint = self.rejected_arch = self.rejected_window = 0
        self.count = 0

    def elaborate(self, overrides: dict) -> ir.NetworkIR:
        return self._elaborator().network(self.space.network, overrides)

    def __iter__(self):
        return self

    def __next__(self) -> Sample:
        while self.tries < self.max_tries:
            self.tries += 1
            values = self.space.draw(self.rng)
            if not self.space.satisfies(values):
                self.rejected_constraint += 1
                continue
            overrides = {**self.space.fixed, **values, **self.extra}
            try:
                net = self.elaborate(overrides)
            except (ArchError, ValueError, ZeroDivisionError, OverflowError):
                self.rejected_arch += 1
                continue
            f, p, a = complexity(net)
            if (self.flops and not self.flops[0] <= f <= self.flops[1]) or \
                    (self.params and not self.params[0] <= p <= self.params[1]):
                self.rejected_window += 1
                continue
            self.count += 1
            return Sample(self.count - 1, values, overrides, f, p, a)
        raise SpaceError(f"design space {self.space.name}: no sample satisfied the constraints in {self.max_tries} "
                         f"tries ({self.rejected_constraint} constraints, {self.rejected_arch} not elaborating, "
                         f"{self.rejected_window} outside the FLOPs/params window)")

    def take(self, n: int) -> List[Sample]:
        return [next(self) for _ in range(n)]


def canonical_text(network: ir.NetworkIR) -> str:
    """The network as the layers it is made of, one deterministic text: every node's name, kind, op, attributes
    and shapes, without source locations, comments or how the .arch file spelled it. Two samples with the same
    text are the same network (the latency cache's key)."""
    def attrs(a: dict) -> str:
        return ",".join(f"{k}={a[k]!r}" for k in sorted(a))

    lines = [f"input {ir.fmt_shape(network.input_shape)}"]

    def walk(node, depth: int) -> None:
        pad = " " * depth
        if isinstance(node, ir.Layer):
            lines.append(f"{pad}{node.name} {node.op}({attrs(node.attrs)}) {ir.fmt_shape(node.in_shape)}->"
                         f"{ir.fmt_shape(node.out_shape)}")
        elif isinstance(node, ir.BranchBlock):
            lines.append(f"{pad}block {node.name} {node.block} merge={node.merge}")
            for child in node.pre:
                walk(child, depth + 1)
            for branch in node.branches:
                lines.append(f"{pad} branch {branch.name} nested={branch.nested}")
                for child in branch.children:
                    walk(child, depth + 2)
            for child in node.post:
                walk(child, depth + 1)
        elif isinstance(node, ir.Sequence):
            lines.append(f"{pad}{node.kind} {node.name}")
            for child in node.children:
                walk(child, depth + 1)
        else:  # a node type added later: its repr without locations still separates networks
            lines.append(f"{pad}{type(node).__name__} {re.sub(r'loc=[^,)]*', '', repr(node))}")

    for part in network.parts:
        walk(part, 0)
    return "\n".join(lines)
