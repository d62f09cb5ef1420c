"""Residual epilogues: in a block `main + shortcut`, merged by add and followed by nothing or an activation
the registry marks `residual` (pycnn.opspec: relu, relu6, silu), the main branch's last fused op (conv_bn_act or
bn_act without its own activation, or se) adds the shortcut and applies that activation: act(op(x) + shortcut) in
one kernel."""
from __future__ import annotations

from .. import ir
from ..opspec import acts_with
from .walk import blocks


def fuse_residual(network: ir.NetworkIR) -> None:
    for block in blocks(network):
        if block.merge != "add" or len(block.branches) != 2:
            continue
        mains = [i for i, b in enumerate(block.branches) if not b.nested]
        if len(mains) != 1 or not block.branches[mains[0]].children:
            continue
        last = block.branches[mains[0]].children[-1]
        if not isinstance(last, ir.Fused):
            continue
        own_act = "post_act" if last.kind == "se" else "act"
        if last.attrs.get(own_act) is not None:
            continue
        act = None
        if block.post:
            first = block.post[0]
            if not (isinstance(first, ir.Layer) and first.op == "act" and first.attrs["kind"] in acts_with("residual")):
                continue
            act = first.attrs["kind"]
        last.attrs.update({"residual": True, own_act: act})
        block.residual_into = mains[0]
        if act is not None:
            # the main branch is not nested, so it shares the block's namespace with `post`: moving the
            # act layer into the fused op keeps every name
            last.layers.append(block.post.pop(0))
