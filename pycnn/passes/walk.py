"""Visiting every list of sibling nodes of a network (where layer patterns are matched)."""
from __future__ import annotations

from typing import Callable, List, Optional

from .. import ir
from ..opspec import acts_with


def rewrite_lists(network: ir.NetworkIR, fn: Callable[[List[object]], List[object]]) -> None:
    """Replace every child list (sequences, block pre/branches/post) by fn(list), innermost first."""
    def visit(node):
        if isinstance(node, ir.Sequence):
            for child in node.children:
                visit(child)
            node.children = fn(node.children)
        elif isinstance(node, ir.BranchBlock):
            for group in [node.pre, node.post] + [b.children for b in node.branches]:
                for child in group:
                    visit(child)
            node.pre, node.post = fn(node.pre), fn(node.post)
            for b in node.branches:
                b.children = fn(b.children)
    for part in network.parts:
        visit(part)


def fuse_runs(match: Callable[[List[object], int], Optional[ir.Fused]]) -> Callable[[List[object]], List[object]]:
    """A rewrite_lists function: scanning a list of siblings, match(children, i) gives the Fused node of the
    siblings starting at i (layers, or Fused nodes of an earlier pass: those whose layers it holds are replaced
    by it) or None (children[i] stays)."""
    def fn(children: List[object]) -> List[object]:
        out, i = [], 0
        while i < len(children):
            fused = match(children, i)
            if fused is None:
                out.append(children[i])
                i += 1
                continue
            out.append(fused)
            held = {id(layer) for layer in fused.layers}
            start = i
            while i < len(children) and all(id(layer) in held for layer in _layers_of(children[i])):
                i += 1
            assert i > start, "a fused node holds the sibling it starts at"
        return out
    return fn


def _layers_of(node) -> list:
    return node.layers if isinstance(node, ir.Fused) else [node]


def blocks(network: ir.NetworkIR):
    """Every Block of the network."""
    return [node for _, node in network.nodes() if isinstance(node, ir.BranchBlock)]


def fused_nodes(network: ir.NetworkIR):
    """Every Fused node of a network (after passes), in network order."""
    out = []
    for _, node in network.nodes():
        if isinstance(node, ir.Sequence):
            lists = [node.children]
        elif isinstance(node, ir.BranchBlock):
            lists = [node.pre] + [b.children for b in node.branches] + [node.post]
        else:
            continue
        out += [child for children in lists for child in children if isinstance(child, ir.Fused)]
    return out


def bn_act_after(children: List[object], i: int) -> Optional[ir.Layer]:
    """children[i] when it is an activation the fused BatchNorm epilogues apply (opspec flag bn_act), else None."""
    node = children[i] if i < len(children) else None
    if isinstance(node, ir.Layer) and node.op == "act" and node.attrs["kind"] in acts_with("bn_act"):
        return node
    return None
