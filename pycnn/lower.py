"""IR -> torch.nn.Module, with readable names (stem, s1.b1.conv1, ...) and standard initialization.

Every IR layer that is a module (pycnn.ir.Layer.own_module) becomes one plain PyTorch module under its own name
(nn.Conv2d, nn.BatchNorm2d, pycnn.modules ...), in both backends; how they run is pycnn.runtime's steps.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import dispatch, ir, memory, passes
from .initialize import init_weights
from .modules import (ChannelLinear, ChannelShuffle, ChannelSlice, Conv2dSame, DropPath, EagerSqueezeExcite, Gain,
                      LayerNorm2d, LayerScale, Pool2dSame, Scale, ScaledStdConv2d, make_act)
from .opspec import OPS
from .runtime import Block, Chain, FusedStep, LayerStep, MbConvStep, Network


# one function per IR operation, named by its pycnn.opspec entry (Op.lowering)

def lower_conv(layer: ir.Layer) -> nn.Module:
    a, cin = layer.attrs, layer.in_shape[0]
    if a["p"] == ir.SAME:
        return Conv2dSame(cin, a["out"], a["k"], a["s"], 0, a["d"], a["groups"], a["bias"])
    return nn.Conv2d(cin, a["out"], a["k"], a["s"], a["p"], a["d"], a["groups"], a["bias"])


def lower_wsconv(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    return ScaledStdConv2d(layer.in_shape[0], a["out"], a["k"], a["s"], a["p"], a["d"], a["groups"], a["bias"],
                           gamma=a["gamma"], eps=a["eps"])


def lower_bn(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    return nn.BatchNorm2d(layer.in_shape[0], eps=a["eps"], momentum=a["momentum"])


def lower_gn(layer: ir.Layer) -> nn.Module:
    return nn.GroupNorm(layer.attrs["groups"], layer.in_shape[0], eps=layer.attrs["eps"])


def lower_ln(layer: ir.Layer) -> nn.Module:
    channels = layer.in_shape[0] if len(layer.in_shape) == 3 else layer.in_shape[-1]
    return LayerNorm2d(channels, eps=layer.attrs["eps"])


def lower_act(layer: ir.Layer) -> nn.Module:
    return make_act(layer.attrs["kind"])


def lower_maxpool(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    if a["p"] == ir.SAME:
        return Pool2dSame("max", a["k"], a["s"], a["ceil"])
    return memory.MaxPool2d(a["k"], a["s"], a["p"], ceil_mode=a["ceil"])


def lower_avgpool(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    if a["p"] == ir.SAME:
        return Pool2dSame("avg", a["k"], a["s"], a["ceil"], a.get("count_pad", True))
    return nn.AvgPool2d(a["k"], a["s"], a["p"], ceil_mode=a["ceil"], count_include_pad=a["count_pad"])


def lower_gap(layer: ir.Layer) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1)


def lower_gmp(layer: ir.Layer) -> nn.Module:
    return nn.AdaptiveMaxPool2d(1)


def lower_adaptive_avgpool(layer: ir.Layer) -> nn.Module:
    return nn.AdaptiveAvgPool2d(layer.attrs["size"])


def lower_flatten(layer: ir.Layer) -> nn.Module:
    return nn.Flatten(1)


def lower_linear(layer: ir.Layer) -> nn.Module:
    return nn.Linear(layer.in_shape[0], layer.attrs["out"], bias=layer.attrs["bias"])


def lower_dropout(layer: ir.Layer) -> nn.Module:
    return nn.Dropout(layer.attrs["p"])


def lower_identity(layer: ir.Layer) -> nn.Module:
    return nn.Identity()


def lower_se(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    return EagerSqueezeExcite(layer.in_shape[0], a["reduced"], a["act"], a["gate"])


def lower_scale(layer: ir.Layer) -> nn.Module:
    return Scale(layer.attrs["value"])


def lower_channel_shuffle(layer: ir.Layer) -> nn.Module:
    return ChannelShuffle(layer.attrs["groups"])


def lower_channel_linear(layer: ir.Layer) -> nn.Module:
    return ChannelLinear(layer.in_shape[0], layer.attrs["out"], bias=layer.attrs["bias"])


def lower_layer_scale(layer: ir.Layer) -> nn.Module:
    return LayerScale(layer.in_shape[0], layer.attrs["init"])


def lower_gain(layer: ir.Layer) -> nn.Module:
    return Gain(layer.attrs["init"])


def lower_drop_path(layer: ir.Layer) -> nn.Module:
    return DropPath(layer.attrs["p"])


def lower_slice(layer: ir.Layer) -> nn.Module:
    return ChannelSlice(layer.attrs["start"], layer.attrs["stop"])


def lower_pad(layer: ir.Layer) -> nn.Module:
    a = layer.attrs
    return nn.ZeroPad2d((a["left"], a["right"], a["top"], a["bottom"]))  # negative sizes crop


def lower_layer(layer: ir.Layer) -> nn.Module:
    """The module of one IR layer, built by the function its registry entry names."""
    return globals()[OPS[layer.op].lowering](layer)


def lower_list(children, kernels: str):
    """(modules, steps) of a list of sibling IR nodes: one module per layer, under the layer's name."""
    modules, steps = [], []
    for node in children:
        if isinstance(node, ir.Fused):
            modules += [(layer.name, lower_layer(layer)) for layer in node.layers if layer.own_module]
            steps.append((MbConvStep if node.kind == "mbconv" else FusedStep)(node, kernels))
        elif isinstance(node, ir.Layer) and not node.own_module:  # an activation: runs in the step before
            steps[-1] = LayerStep(steps[-1].names[0], steps[-1].acts + (node.attrs["kind"],))
        else:
            modules.append((node.name, lower_node(node, kernels)))
            steps.append(LayerStep(node.name))
    return modules, steps


def lower_node(node, kernels: str) -> nn.Module:
    if isinstance(node, ir.Layer):
        return lower_layer(node)
    if isinstance(node, ir.Cell):  # before Sequence, which it extends
        from .cells import lower_cell
        return lower_cell(node, kernels)
    if isinstance(node, ir.Sequence):
        return Chain(*lower_list(node.children, kernels))
    if isinstance(node, ir.BranchBlock):
        modules, pre = lower_list(node.pre, kernels)
        branches = []
        for b in node.branches:
            branch_modules, steps = lower_list(b.children, kernels)
            if b.nested:
                if branch_modules:
                    modules.append((b.name, Chain(branch_modules, steps)))
                branches.append((b.name if branch_modules else None, []))
            else:
                modules += branch_modules
                branches.append((None, steps))
        post_modules, post = lower_list(node.post, kernels)
        return Block(modules + post_modules, pre, branches, node.merge, post, node.residual_into)
    raise TypeError(node)  # pragma: no cover


BACKENDS = ("fused", "reference")


def lower(network: ir.NetworkIR, init: bool = True, backend: str = "fused", disable_passes=(),
          kernels: Optional[str] = None) -> Network:
    """The module for `network`. backend "fused": the IR passes (pycnn.passes, minus `disable_passes`) map
    layers onto fused ops, each run by pycnn's kernel or PyTorch's as `kernels` (auto, pycnn, torch; see
    pycnn.dispatch) decides; "reference": every layer its own eager PyTorch module. Both flavours have the
    same modules and parameter names, so state_dicts move freely between them."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    kernels = dispatch.resolve_kernels(kernels)
    plan = passes.run(network, disable_passes) if backend == "fused" else network
    layout = torch.channels_last if backend == "fused" and kernels != "torch" else None
    model = Network([(p.name, lower_node(p, kernels)) for p in plan.parts], network.source, network, plan, backend,
                    layout)
    # training keeps each BatchNorm+activation's input, not also its output (pycnn.memory); kernels="torch" runs
    # exactly as plain PyTorch, so it keeps outputs as PyTorch does
    model.recompute_epilogues = backend == "fused" and kernels != "torch"
    from .cells import GraphStep, is_wired
    if is_wired(plan):  # cells read earlier outputs: the parts run as one graph
        model.steps = [GraphStep(plan)]
    if init:
        init_weights(model)
    return model


def to_backend(model: Network, backend: str, **options) -> Network:
    """A copy of a compiled model in another backend (or with other lower() options): same weights, device,
    dtype and train/eval mode."""
    other = lower(model.ir, init=False, backend=backend, **options)
    other.load_state_dict(model.state_dict())
    param = next(model.parameters(), None)
    if param is not None:
        other.to(device=param.device, dtype=param.dtype)
    return other.train(model.training)
