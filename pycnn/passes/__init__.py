"""Passes over the IR that map layer patterns onto fused operations (see pycnn.ir.Fused).

Each pass is a function (network IR) -> None that rewrites the network's layer lists in place; `run` applies
them in order on a copy, skipping the ones named in `disable`. Passes never rename or drop a layer, so the
compiled module tree (and every parameter name) is the same whichever passes ran:

  conv_bn_act  conv, bn[, act]        -> Fused conv_bn_act (depthwise / grouped: pycnn's ops; dense: a
                                         conv with the BatchNorm folded in eval)
  bn_act       bn[, act] left over    -> Fused bn_act (pycnn.bn_act)
  se           se                     -> Fused se (pycnn.se)
  residual     block: add + act after -> the main branch's last fused op adds the shortcut and applies the act
  mbconv       [expand] dw [se] project
                                      -> Fused mbconv: the inverted-residual block as one pycnn.mbconv call in
                                         eval on the CPU where the dispatch measures it faster (else its parts)
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Iterable

from .. import ir
from .conv_bn_act import fuse_conv_bn_act
from .mbconv import fuse_mbconv
from .residual import fuse_residual
from .single import fuse_bn_act, fuse_se
from .walk import fused_nodes

PASSES: Dict[str, Callable[[ir.NetworkIR], None]] = {
    "conv_bn_act": fuse_conv_bn_act,
    "bn_act": fuse_bn_act,
    "se": fuse_se,
    "residual": fuse_residual,
    "mbconv": fuse_mbconv,
}


def run(network: ir.NetworkIR, disable: Iterable[str] = ()) -> ir.NetworkIR:
    """A copy of `network` with every pass applied in order, except those named in `disable`."""
    disable = set(disable)
    unknown = disable - set(PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {', '.join(sorted(unknown))}; the passes are {', '.join(PASSES)}")
    network = copy.deepcopy(network)
    for name, fn in PASSES.items():
        if name not in disable:
            fn(network)
    return network


__all__ = ["PASSES", "run", "fused_nodes"]
