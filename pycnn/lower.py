"""IR -> torch.nn.Module, with readable names (stem, s1.b1.conv1, ...) and standard initialization.

Every BatchNorm (with the activation that follows it) is made by `make_bn_act`, the one place that chooses
the BatchNorm module; its parameters sit directly under the layer's name (`s1.b1.bn1.weight`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from . import ir
from .nn import BatchNormAct2d

_ACT_MODULES = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish, "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU, "tanh": nn.Tanh,
}


def make_act(kind: str) -> nn.Module:
    return _ACT_MODULES[kind]()


def make_bn_act(channels: int, act=None, eps: float = 1e-5, momentum: float = 0.1) -> nn.Module:
    """The BatchNorm (+ residual + activation) of a network, the one place that chooses its module:
    forward(x, residual=None) = act(bn(x) + residual); act in None/relu/relu6/silu. It runs on the fused
    pycnn.bn_act kernel (CPU and CUDA)."""
    return BatchNormAct2d(channels, act=act or "none", eps=eps, momentum=momentum)


class ScaledStdConv2d(nn.Conv2d):
    """Convolution with scaled weight standardization (NF-ResNets, Brock et al. 2021), as timm computes it:
    weight = gain * gamma * (w - mean) / (std * sqrt(fan_in)), per output channel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, gamma=1.0, eps=1e-6):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        if x.dim() == 4:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): global average pool, 1x1 conv down, act, 1x1 conv up, gate."""

    def __init__(self, channels: int, reduced: int, act="relu", gate="sigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_act(act) if act else nn.Identity()
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = make_act(gate) if gate else nn.Identity()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class Scale(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self, x):
        return x * self.value

    def extra_repr(self):
        return f"{self.value}"


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Block(nn.Module):
    """Parallel branches on one input, merged (add, concat on channels, mul), with optional layers before and
    after. The `main` branch's layers are attributes of the block itself; other branches are nested
    nn.Sequentials named after the branch; an empty branch is the identity."""

    def __init__(self, pre, branches, merge: str, post, fused_branch=None):
        super().__init__()
        self._pre: List[str] = []
        self._post: List[str] = []
        self._branches: List[tuple] = []  # (nested name or None, [direct layer names])
        self.merge = merge
        # residual fusion: the main branch's last layer is a BatchNorm that adds the other branch's output
        # (and applies the post-merge activation) itself
        self._fused = fused_branch
        for name, module in pre:
            self.add_module(name, module)
            self._pre.append(name)
        for bname, nested, layers in branches:
            if nested:
                if layers:
                    self.add_module(bname, nn.Sequential(OrderedDict(layers)))
                    self._branches.append((bname, []))
                else:
                    self._branches.append((None, []))
            else:
                for name, module in layers:
                    self.add_module(name, module)
                self._branches.append((None, [name for name, _ in layers]))
        for name, module in post:
            self.add_module(name, module)
            self._post.append(name)

    def _run_branch(self, k, x, upto=None):
        nested, names = self._branches[k]
        if nested is not None:
            x = getattr(self, nested)(x)
        for name in names[:upto]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        for name in self._pre:
            x = getattr(self, name)(x)
        if self._fused is not None:
            main = self._fused
            residual = self._run_branch(1 - main, x)
            names = self._branches[main][1]
            y = getattr(self, names[-1])(self._run_branch(main, x, upto=-1), residual=residual)
            for name in self._post:
                y = getattr(self, name)(y)
            return y
        outs = []
        for nested, names in self._branches:
            y = x
            if nested is not None:
                y = getattr(self, nested)(y)
            for name in names:
                y = getattr(self, name)(y)
            outs.append(y)
        if self.merge == "add":
            y = outs[0]
            for o in outs[1:]:
                y = y + o
        elif self.merge == "mul":
            y = outs[0]
            for o in outs[1:]:
                y = y * o
        else:
            y = torch.cat(outs, dim=1)
        for name in self._post:
            y = getattr(self, name)(y)
        return y

    def extra_repr(self):
        if self._fused is not None:
            return f"merge={self.merge} (the residual is added by {self._branches[self._fused][1][-1]})"
        return f"merge={self.merge}"


class Network(nn.Sequential):
    """The compiled network: its parts in order. `arch` is the .arch source, `ir` the elaborated IR."""

    def __init__(self, parts, arch: str, network_ir):
        super().__init__(OrderedDict(parts))
        self.arch = arch
        self.ir = network_ir


def lower_layer(layer: ir.Layer) -> nn.Module:
    a, op = layer.attrs, layer.op
    if op in ("conv", "wsconv"):
        cin = layer.in_shape[0]
        if op == "wsconv":
            return ScaledStdConv2d(cin, a["out"], a["k"], a["s"], a["p"], a["d"], a["groups"], a["bias"],
                                   gamma=a["gamma"], eps=a["eps"])
        return nn.Conv2d(cin, a["out"], a["k"], a["s"], a["p"], a["d"], a["groups"], a["bias"])
    if op == "bn":
        return make_bn_act(layer.in_shape[0], a.get("act"), a["eps"], a["momentum"])
    if op == "gn":
        return nn.GroupNorm(a["groups"], layer.in_shape[0], eps=a["eps"])
    if op == "ln":
        channels = layer.in_shape[0] if len(layer.in_shape) == 3 else layer.in_shape[-1]
        return LayerNorm2d(channels, eps=a["eps"])
    if op == "act":
        return make_act(a["kind"])
    if op == "maxpool":
        return nn.MaxPool2d(a["k"], a["s"], a["p"], ceil_mode=a["ceil"])
    if op == "avgpool":
        return nn.AvgPool2d(a["k"], a["s"], a["p"], ceil_mode=a["ceil"], count_include_pad=a["count_pad"])
    if op == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op == "gmp":
        return nn.AdaptiveMaxPool2d(1)
    if op == "adaptive_avgpool":
        return nn.AdaptiveAvgPool2d(a["size"])
    if op == "flatten":
        return nn.Flatten(1)
    if op == "linear":
        return nn.Linear(layer.in_shape[0], a["out"], bias=a["bias"])
    if op == "dropout":
        return nn.Dropout(a["p"])
    if op == "identity":
        return nn.Identity()
    if op == "se":
        return SqueezeExcite(layer.in_shape[0], a["reduced"], a["act"], a["gate"])
    if op == "scale":
        return Scale(a["value"])
    if op == "channel_shuffle":
        return ChannelShuffle(a["groups"])
    raise ValueError(f"cannot lower operation {op!r}")  # pragma: no cover


def lower_node(node) -> nn.Module:
    if isinstance(node, ir.Layer):
        return lower_layer(node)
    if isinstance(node, ir.Sequence):
        return nn.Sequential(OrderedDict((c.name, lower_node(c)) for c in node.children))
    if isinstance(node, ir.Block):
        fusion = residual_fusion(node)
        branches = [(b.name, b.nested, [(c.name, lower_node(c)) for c in b.children]) for b in node.branches]
        post = [(c.name, lower_node(c)) for c in node.post]
        if fusion is None:
            return Block([(c.name, lower_node(c)) for c in node.pre], branches, node.merge, post)
        main, act = fusion
        bn = node.branches[main].children[-1]
        branches[main][2][-1] = (bn.name, make_bn_act(bn.in_shape[0], act, bn.attrs["eps"], bn.attrs["momentum"]))
        if act is not None:
            post = post[1:]
        return Block([(c.name, lower_node(c)) for c in node.pre], branches, node.merge, post, fused_branch=main)
    raise TypeError(node)  # pragma: no cover


FUSABLE_ACTS = ("relu", "relu6", "silu")


def residual_fusion(node: ir.Block):
    """(index of the main branch, activation or None) when a block can add its residual inside the main branch's
    final BatchNorm: two branches merged by `add`, the main one ending with a BatchNorm without activation, and
    after the merge nothing or first a relu/relu6/silu. act(bn(x) + shortcut) equals the unfused block."""
    if node.merge != "add" or len(node.branches) != 2:
        return None
    mains = [i for i, b in enumerate(node.branches) if not b.nested]
    if len(mains) != 1:
        return None
    last = node.branches[mains[0]].children[-1] if node.branches[mains[0]].children else None
    if not (isinstance(last, ir.Layer) and last.op == "bn" and last.attrs.get("act") is None):
        return None
    act = None
    if node.post:
        first = node.post[0]
        if not (isinstance(first, ir.Layer) and first.op == "act" and first.attrs["kind"] in FUSABLE_ACTS):
            return None
        act = first.attrs["kind"]
    return mains[0], act


def init_weights(model: nn.Module) -> None:
    """Standard initialization: He (fan-out) for convolutions, N(0, 0.01) for linear layers, BN weight 1 and
    bias 0; weight-standardized convolutions use He fan-in (the standardization rescales anyway)."""
    for m in model.modules():
        if isinstance(m, ScaledStdConv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
            nn.init.ones_(m.gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def lower(network: ir.Network, init: bool = True) -> Network:
    model = Network([(p.name, lower_node(p)) for p in network.parts], network.source, network)
    if init:
        init_weights(model)
    return model
