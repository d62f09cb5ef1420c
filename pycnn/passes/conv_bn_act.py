"""conv, bn[, act] -> Fused("conv_bn_act"), classified by the kernel that can run it:
depthwise (pycnn.dwconv), grouped (pycnn.gconv) or dense (a PyTorch conv, the BatchNorm folded in eval)."""
from __future__ import annotations

from typing import List, Optional

from .. import ir
from ..opspec import DWCONV_DILATIONS, DWCONV_STRIDES, GCONV_KERNELS, GCONV_MAX_GROUP_WIDTH, dwconv_kernel_ok
from .walk import bn_act_after, fuse_runs, rewrite_lists


def conv_kind(conv: ir.Layer) -> str:
    a = conv.attrs
    (kh, kw), (sh, sw), (dh, dw) = a["k"], a["s"], a["d"]
    cin, cout, groups = conv.in_shape[0], a["out"], a["groups"]
    if (groups == cin == cout and kh == kw and dwconv_kernel_ok(kh) and {sh, sw} <= set(DWCONV_STRIDES)
            and {dh, dw} <= set(DWCONV_DILATIONS)):
        return "depthwise"
    if (1 < groups and kh == kw and kh in GCONV_KERNELS and (dh, dw) == (1, 1)
            and cin // groups <= GCONV_MAX_GROUP_WIDTH):
        return "grouped"
    return "dense"


def _conv_bn_act(children: List[object], i: int) -> Optional[ir.Fused]:
    node = children[i]
    bn = children[i + 1] if i + 1 < len(children) else None
    # a conv with TensorFlow's SAME padding pads in its own forward, which the fused ops bypass
    if not (isinstance(node, ir.Layer) and node.op == "conv" and node.attrs["p"] != ir.SAME
            and isinstance(bn, ir.Layer) and bn.op == "bn"):
        return None
    act = bn_act_after(children, i + 2)
    return ir.Fused("conv_bn_act", [node, bn] + ([act] if act else []),
                    {"conv": conv_kind(node), "act": act.attrs["kind"] if act else None})


def fuse_conv_bn_act(network: ir.NetworkIR) -> None:
    rewrite_lists(network, fuse_runs(_conv_bn_act))
