"""bn[, act] -> Fused("bn_act"); se -> Fused("se") (sigmoid gate only)."""
from __future__ import annotations

from .. import ir
from ..opspec import acts_with
from .walk import bn_act_after, fuse_runs, rewrite_lists


def _wrap(op: str, kind: str, accept=lambda layer: True, attrs=lambda layer: {}):
    def fn(children):
        return [ir.Fused(kind, [n], attrs(n)) if isinstance(n, ir.Layer) and n.op == op and accept(n) else n
                for n in children]
    return fn


def _bn_act(children, i):
    node = children[i]
    if not (isinstance(node, ir.Layer) and node.op == "bn"):
        return None
    act = bn_act_after(children, i + 1)
    return ir.Fused("bn_act", [node] + ([act] if act else []), {"act": act.attrs["kind"] if act else None})


def fuse_bn_act(network: ir.NetworkIR) -> None:
    rewrite_lists(network, fuse_runs(_bn_act))


def fuse_se(network: ir.NetworkIR) -> None:
    rewrite_lists(network, _wrap("se", "se", accept=lambda n: n.attrs["gate"] in acts_with("se_gate")
                                 and n.attrs["act"] in acts_with("se_hidden"),
                                 attrs=lambda n: {"act": n.attrs["act"], "post_act": None}))
