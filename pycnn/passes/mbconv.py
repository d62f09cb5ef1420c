"""Inverted-residual blocks -> Fused("mbconv") (pycnn.mbconv in eval, CPU and CUDA).

Matches, among siblings already fused by conv_bn_act (and residual):
    [expand: dense 1x1 conv, bn, act] -> depthwise kxk conv (stride 1|2, padding k // 2), bn, act
    [-> se: the fused squeeze-and-excitation, nothing after its scaling]
    -> project: dense 1x1 conv, bn, no act [+ the block's shortcut, no act after it]
(MobileNetV2, EfficientNet, MnasNet). The node keeps its parts' layers in order; attrs: act, k, s, expand
(whether there is an expand conv), se (the SE's reduced channels, 0 without), se_act, residual, and parts: the
conv_bn_act (and se) nodes it replaces,
which pycnn.runtime.MbConvStep runs (each with its own kernel choice) whenever the fused op cannot run
(training, autograd, dtypes its kernels lack) or the dispatch measured it slower."""
from __future__ import annotations

from typing import List, Optional

from .. import ir
from ..opspec import acts_with
from .walk import fuse_runs, rewrite_lists

MBCONV_KERNELS = (3, 5, 7)


def _conv(node) -> Optional[ir.Layer]:
    if isinstance(node, ir.Fused) and node.kind == "conv_bn_act" and node.layers[0].op == "conv":
        return node.layers[0]
    return None


def _pointwise(node) -> bool:
    conv = _conv(node)
    if conv is None or node.attrs["conv"] != "dense":
        return False
    a = conv.attrs
    return a["k"] == (1, 1) and a["s"] == (1, 1) and a["p"] == (0, 0) and a["groups"] == 1


def _depthwise(node) -> bool:
    conv = _conv(node)
    if conv is None or node.attrs["conv"] != "depthwise" or node.attrs.get("residual"):
        return False
    a = conv.attrs
    (kh, kw), (sh, sw) = a["k"], a["s"]
    return kh == kw and kh in MBCONV_KERNELS and sh == sw and sh in (1, 2) and a["p"] == (kh // 2, kh // 2) \
        and a["d"] == (1, 1)


def _se(node) -> bool:
    return isinstance(node, ir.Fused) and node.kind == "se" and node.attrs["post_act"] is None \
        and not node.attrs.get("residual")


def _mbconv(children: List[object], i: int) -> Optional[ir.Fused]:
    expand = children[i] if _pointwise(children[i]) and children[i].attrs["act"] is not None \
        and not children[i].attrs.get("residual") else None
    j = i + 1 if expand is not None else i
    if j + 1 >= len(children) or not _depthwise(children[j]):
        return None
    dw = children[j]
    se = children[j + 1] if _se(children[j + 1]) else None
    p = j + 1 + (se is not None)  # the project conv's place
    if p >= len(children):
        return None
    project = children[p]
    act = dw.attrs["act"]
    if act is None or act not in acts_with("bn_act") or (expand is not None and expand.attrs["act"] != act):
        return None
    if not _pointwise(project) or project.attrs["act"] is not None:
        return None
    parts = ([expand] if expand is not None else []) + [dw] + ([se] if se is not None else []) + [project]
    conv = dw.layers[0].attrs
    return ir.Fused("mbconv", [layer for p in parts for layer in p.layers],
                    {"act": act, "k": conv["k"][0], "s": conv["s"][0], "expand": expand is not None,
                     "se": se.layers[0].attrs["reduced"] if se is not None else 0,
                     "se_act": se.attrs["act"] if se is not None else None,
                     "residual": bool(project.attrs.get("residual")), "parts": parts})


def fuse_mbconv(network: ir.NetworkIR) -> None:
    rewrite_lists(network, fuse_runs(_mbconv))
