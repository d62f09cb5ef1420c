"""IR -> torch.nn.Module, with readable names (stem, s1.b1.conv1, ...) and standard initialization.

Every IR layer becomes one plain PyTorch module under its own name (nn.Conv2d, nn.BatchNorm2d, ...), in both
backends. How they run is a list of steps per container (Chain, Block): a LayerStep calls one module, a
FusedStep (from a pycnn.ir.Fused node made by pycnn.passes) runs several sibling modules' parameters through
one fused op (pycnn.fused), choosing pycnn's kernel or PyTorch's per shape (pycnn.dispatch).
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import dispatch, fused, ir, memory, passes
from .opspec import ACTIVATIONS, OPS


def make_act(kind: str) -> nn.Module:
    return getattr(nn, ACTIVATIONS[kind].module)()


def pad_same(x, kernel_size, stride, dilation=(1, 1), value=0.0):
    """x padded as TensorFlow's SAME (timm's padding='same'): the output has ceil(size / stride) positions, the
    padding (of `value`) is split in two with the odd pixel at the bottom and right."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], kernel_size, stride, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom), value=value) if top or bottom or left or right else x


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow's SAME padding, computed from each input's size (timm's Conv2dSame)."""

    def forward(self, x):
        return super().forward(pad_same(x, self.kernel_size, self.stride, self.dilation))


class Pool2dSame(nn.Module):
    """Max or average pooling with TensorFlow's SAME padding, as timm's create_pool2d(padding='same'): stride 1
    with an odd window pads inside the pooling (an average excludes that padding unless count_pad); otherwise the
    input is padded for its size (-inf for max; zeros for average, which the average counts)."""

    def __init__(self, kind: str, kernel_size, stride, ceil: bool = False, count_pad: bool = True):
        super().__init__()
        self.kind, self.kernel_size, self.stride = kind, tuple(kernel_size), tuple(stride)
        self.ceil, self.count_pad = ceil, count_pad

    def forward(self, x):
        k, s = self.kernel_size, self.stride
        if all(ss == 1 and kk % 2 == 1 for kk, ss in zip(k, s)):
            padding = tuple((kk - 1) // 2 for kk in k)
        else:
            x = pad_same(x, k, s, value=float("-inf") if self.kind == "max" else 0.0)
            padding = (0, 0)
        if self.kind == "max":
            return memory.max_pool2d(x, k, s, padding, ceil_mode=self.ceil)
        return F.avg_pool2d(x, k, s, padding, ceil_mode=self.ceil, count_include_pad=self.count_pad)

    def extra_repr(self):
        return f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding=same"


class ScaledStdConv2d(nn.Conv2d):
    """Convolution with scaled weight standardization (NF-ResNets, Brock et al. 2021), as timm computes it:
    weight = gain * gamma * (w - mean) / (std * sqrt(fan_in)), per output channel. padding=ir.SAME: TensorFlow's
    SAME padding (timm's ScaledStdConv2dSame)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, gamma=1.0, eps=1e-6):
        self.same = padding == ir.SAME
        super().__init__(in_channels, out_channels, kernel_size, stride, 0 if self.same else padding, dilation,
                         groups, bias)
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)
        if self.same:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        if x.dim() == 4:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class EagerSqueezeExcite(nn.Module):
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


class ChannelLinear(nn.Linear):
    """A linear layer over the channels of an NCHW tensor (torchvision's ConvNeXt: permute, nn.Linear, permute):
    nn.Linear's parameters, so its weights import."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """A learnable scale per channel (ConvNeXt's `layer_scale`, shape C x 1 x 1 as torchvision's)."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.init = float(init)
        self.layer_scale = nn.Parameter(torch.full((channels, 1, 1), self.init))

    def forward(self, x):
        return x * self.layer_scale


class Gain(nn.Module):
    """A learnable scalar gain (NFNet's skipinit gain; the tensor's name is timm's)."""

    def __init__(self, init: float):
        super().__init__()
        self.init = float(init)
        self.skipinit_gain = nn.Parameter(torch.tensor(self.init))

    def forward(self, x):
        return x * self.skipinit_gain


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016) per sample, as torchvision's StochasticDepth(p, "row") and timm's
    DropPath: in training each sample's branch is zeroed with probability p, the others scaled by 1 / (1 - p);
    the identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep) if keep > 0 else x * mask

    def extra_repr(self):
        return f"p={self.p}"


class ChannelSlice(nn.Module):
    """Channels start .. stop - 1 of the input (ShuffleNetV2's split, a branch reading part of its input)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]

    def extra_repr(self):
        return f"{self.start}:{self.stop}"


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class LayerStep:
    """Runs one module, then the activations of the layers without a module of their own that follow it in
    the IR (pycnn.ir.Layer.own_module: `bn relu` unfused is the module bn1, then relu)."""

    def __init__(self, name: str, acts=()):
        self.names, self.acts = [name], tuple(acts)

    def __call__(self, owner: nn.Module, x, residual=None):
        assert residual is None, "only fused steps add a residual"
        x = getattr(owner, self.names[0])(x)
        for act in self.acts:
            x = fused.activation(x, act)
        return x

    def __repr__(self):
        return "+".join(self.names + list(self.acts))


class FusedStep:
    """Runs sibling layers (a pycnn.ir.Fused node) as one fused op; pycnn.dispatch picks the kernel, pycnn's or
    PyTorch's composition (`kernels`: auto, pycnn or torch); the last one run is kept in `last_kernel`."""

    def __init__(self, node: ir.Fused, kernels: str):
        self.kind, self.attrs, self.kernels = node.kind, dict(node.attrs), kernels
        self.names = [layer.name for layer in node.layers if layer.own_module]
        first = node.layers[0]
        geometry = {k: first.attrs[k] for k in ("k", "s", "p", "d", "groups", "reduced") if k in first.attrs}
        self.signature = f"{self.kind}:{first.in_shape[0]}->{node.out_shape[0]}:" + ",".join(
            f"{k}={v}" for k, v in sorted({**geometry, **self.attrs}.items()))
        self.last_kernel: Optional[str] = None
        self.kernel_by_token: Dict[int, str] = {}  # network call signature token -> "pycnn" | "torch" (auto)

    def run(self, modules, x, residual, kernel: str):
        a = self.attrs
        if self.kind == "conv_bn_act":
            return fused.conv_bn_act(modules[0], modules[1], x, a["conv"], a["act"], residual, kernel)
        if self.kind == "bn_act":
            return fused.batch_norm_act(modules[0], x, a["act"], residual, kernel)
        return fused.squeeze_excite(modules[0], x, a["act"], a["post_act"], residual, kernel)

    def __call__(self, owner: nn.Module, x, residual=None):
        if torch.compiler.is_compiling():
            modules = [getattr(owner, name) for name in self.names]
            kernel = dispatch.choose(self, lambda k, x_, r_: self.run(modules, x_, r_, k), x, residual, modules)
            return self.run(modules, x, residual, kernel)
        modules = [owner._modules[name] for name in self.names]  # nn.Module.__getattr__ costs ~0.5 us a name
        kernel = self.kernels if self.kernels != "auto" else self._auto_kernel(modules, x, residual)
        return self.run(modules, x, residual, kernel)

    def _auto_kernel(self, modules, x, residual) -> str:
        """The measured kernel: looked up by the network call's signature token (Network.forward) when there
        is one, else by dispatch's full key (and then remembered under the token)."""
        token = _call_token.value
        kernel = self.kernel_by_token.get(token) if token is not None else None
        if kernel is None:
            kernel = dispatch.choose(self, lambda k, x_, r_: self.run(modules, x_, r_, k), x, residual, modules)
            if token is not None:
                self.kernel_by_token[token] = kernel
        self.last_kernel = kernel
        return kernel

    def __repr__(self):
        extra = ", adds the residual" if self.attrs.get("residual") else ""
        return f"{'+'.join(self.names)} ({self.kind}{extra}, kernels={self.kernels})"


def run_steps(owner: nn.Module, steps, x, residual=None):
    """Runs the steps in order; the last one adds `residual` (a fused step made by the residual pass)."""
    for step in steps[:-1]:
        x = step(owner, x)
    return steps[-1](owner, x, residual) if steps else x


class Chain(nn.Sequential):
    """Layers run one after another (a network part, a stage, a nested branch); fused steps run several
    sibling layers as one op. Iterates and indexes like nn.Sequential."""

    def __init__(self, modules, steps):
        super().__init__(OrderedDict(modules))
        self.steps = steps

    def forward(self, x, residual=None):
        return run_steps(self, self.steps, x, residual)

    def extra_repr(self):
        fused_steps = [repr(s) for s in self.steps if isinstance(s, FusedStep)]
        return "fused: " + "; ".join(fused_steps) if fused_steps else ""


class Block(nn.Module):
    """Parallel branches on one input, merged (add, concat on channels, mul), with optional layers before and
    after. The `main` branch's layers are attributes of the block itself; other branches are nested Chains
    named after the branch; an empty branch is the identity. With `residual_into` (the residual pass), that
    branch's last fused op adds the other branch's output itself (and applies the activation after the merge)."""

    def __init__(self, modules, pre, branches, merge: str, post, residual_into: Optional[int] = None):
        super().__init__()
        for name, module in modules:
            self.add_module(name, module)
        self.pre, self.post, self.merge, self.residual_into = pre, post, merge, residual_into
        self.branches = branches  # [(nested Chain's name or None, steps run on the block itself)]

    def _branch(self, k: int, x, residual=None):
        nested, steps = self.branches[k]
        if nested is not None:
            return getattr(self, nested)(x, residual)
        return run_steps(self, steps, x, residual)

    def forward(self, x):
        x = run_steps(self, self.pre, x)
        if self.residual_into is not None:
            shortcut = self._branch(1 - self.residual_into, x)
            y = self._branch(self.residual_into, x, residual=shortcut)
        else:
            outs = [self._branch(k, x) for k in range(len(self.branches))]
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
        return run_steps(self, self.post, y)

    def extra_repr(self):
        fused_steps = [repr(s) for steps in [self.pre, self.post] + [b[1] for b in self.branches] for s in steps
                       if isinstance(s, FusedStep)]
        return f"merge={self.merge}" + ("; fused: " + "; ".join(fused_steps) if fused_steps else "")


class _CallToken(threading.local):
    value: Optional[int] = None  # the signature token of the network call running on this thread


_call_token = _CallToken()
_next_token = itertools.count(1)
MAX_SIGNATURES = 256  # input signatures remembered per network; beyond, steps use dispatch's full key


def _layout_of(x) -> Optional[torch.memory_format]:
    """The memory format a caller's 4-D tensor is in (None when both or neither: 1x1 maps, odd strides)."""
    nchw, cl = x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)
    return None if nchw == cl else (torch.contiguous_format if nchw else torch.channels_last)


def enter_layout(x, layout: Optional[torch.memory_format]):
    """(x in the network's internal layout, the caller's layout to give 4-D outputs back in, or None): a 4-D
    input is converted once here, at the network's entry, never per layer."""
    if layout is None or x.dim() != 4 or x.is_contiguous(memory_format=layout):
        return x, None
    return x.contiguous(memory_format=layout), _layout_of(x)


def leave_layout(y, caller: Optional[torch.memory_format]):
    """y (a 4-D output) in the caller's layout again; other outputs as they are."""
    if caller is None or not isinstance(y, torch.Tensor) or y.dim() != 4:
        return y
    return y.contiguous(memory_format=caller)


class KeepsInputLayout:
    """Pickling for a module with an `input_layout` attribute (a torch.memory_format, which torch.save's pickle
    protocol cannot store): kept by name."""

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("input_layout") is not None:
            state["input_layout"] = str(state["input_layout"]).rpartition(".")[2]  # "channels_last"
        return state

    def __setstate__(self, state):
        if isinstance(state.get("input_layout"), str):
            state["input_layout"] = _MEMORY_FORMATS[state["input_layout"]]
        super().__setstate__(state)


_MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous_format": torch.contiguous_format}


def _drop_folds(module, incompatible_keys) -> None:
    """load_state_dict's post-hook (a module-level function, so that a model still pickles)."""
    fused.clear_folds(module)


class Network(KeepsInputLayout, Chain):
    """The compiled network: its parts in order. `arch` is the .arch source, `ir` the elaborated IR, `plan` the
    IR after the passes (what runs), `backend` "fused" or "reference".

    `input_layout`: the memory format the network runs in inside (lower() sets channels_last for the fused
    backend, which pycnn's kernels and oneDNN are fastest in on the CPU and pycnn's CUDA kernels are native to);
    an input in another layout is converted once at the entry and 4-D outputs are given back in the caller's
    layout. None: as given (the reference backend and kernels="torch", which run exactly as plain PyTorch). Per call, the kernels measured (kernels="auto") are looked up by
    one signature of the input (shape, dtype, strides, device, train/eval, grad mode, autocast, threads), not
    per layer."""

    def __init__(self, parts, arch: str, network_ir, plan, backend: str, input_layout=None):
        super().__init__(parts, [LayerStep(name) for name, _ in parts])
        self.arch, self.ir, self.plan, self.backend = arch, network_ir, plan, backend
        self.input_layout: Optional[torch.memory_format] = input_layout
        self._signatures: Dict[tuple, int] = {}
        self.register_load_state_dict_post_hook(_drop_folds)

    def _signature_token(self, x) -> Optional[int]:
        device = x.device
        autocast = torch.get_autocast_dtype(device.type) if device.type in ("cpu", "cuda") \
            and torch.is_autocast_enabled(device.type) else None
        key = (x.shape, x.dtype, device, x.stride(), self.training, torch.is_grad_enabled(), autocast,
               torch.get_num_threads())
        token = self._signatures.get(key)
        if token is None and len(self._signatures) < MAX_SIGNATURES:
            token = self._signatures[key] = next(_next_token)
        return token

    def forward(self, x):
        x, caller = enter_layout(x, self.input_layout)
        if torch.compiler.is_compiling():
            return leave_layout(super().forward(x), caller)
        previous, _call_token.value = _call_token.value, self._signature_token(x)
        keep_less = self.recompute_epilogues and self.training and torch.is_grad_enabled()
        try:
            with memory.recompute_epilogues() if keep_less else contextlib.nullcontext():
                y = super().forward(x)
        finally:
            _call_token.value = previous
        dispatch.flush_measurements()  # the kernel choices this call measured, in one write
        return leave_layout(y, caller)

    def train(self, mode: bool = True):
        fused.clear_folds(self)  # refolded on the next eval call (also after edits autograd does not see: .data)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        fused.clear_folds(self)  # .to(), .cuda(), .half(): the folds of the old tensors are dropped
        return super()._apply(fn, *args, **kwargs)

    def kernels(self) -> Dict[str, str]:
        """{layer name: what runs it} for every layer; see pycnn.summary(model)."""
        return kernel_table(self)

    # timm's interface (pycnn.features): the last feature map, the head, a new classifier
    def forward_features(self, x):
        from .features import forward_features
        return forward_features(self, x)

    def forward_head(self, x, pre_logits: bool = False):
        from .features import forward_head
        return forward_head(self, x, pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        from .features import reset_classifier
        reset_classifier(self, num_classes)

    @property
    def feature_info(self):
        from .features import FeatureInfo, feature_points
        points = feature_points(self.ir)
        return FeatureInfo(points, range(len(points)))


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


def lower_layer(layer: ir.Layer) -> nn.Module:
    """The module of one IR layer, built by the function its registry entry names."""
    return globals()[OPS[layer.op].lowering](layer)


def lower_list(children, kernels: str):
    """(modules, steps) of a list of sibling IR nodes: one module per layer, under the layer's name."""
    modules, steps = [], []
    for node in children:
        if isinstance(node, ir.Fused):
            modules += [(layer.name, lower_layer(layer)) for layer in node.layers if layer.own_module]
            steps.append(FusedStep(node, kernels))
        elif isinstance(node, ir.Layer) and not node.own_module:  # an activation: runs in the step before
            steps[-1] = LayerStep(steps[-1].names[0], steps[-1].acts + (node.attrs["kind"],))
        else:
            modules.append((node.name, lower_node(node, kernels)))
            steps.append(LayerStep(node.name))
    return modules, steps


def lower_node(node, kernels: str) -> nn.Module:
    if isinstance(node, ir.Layer):
        return lower_layer(node)
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


def kernel_table(model: nn.Module) -> Dict[str, str]:
    """{layer name: what runs it} for the layers of a compiled model: pycnn::<op> (pycnn's kernel), aten
    (PyTorch), auto (chosen on first run) or "fused into <layer>"."""
    table = {}
    for prefix, module in model.named_modules():
        if isinstance(module, Chain):
            step_lists = [module.steps]
        elif isinstance(module, Block):
            step_lists = [module.pre, module.post] + [b[1] for b in module.branches]
        else:
            continue
        for steps in step_lists:
            for step in steps:
                first = f"{prefix}.{step.names[0]}" if prefix else step.names[0]
                for name in step.names[1:]:
                    table[f"{prefix}.{name}" if prefix else name] = f"(fused into {first})"
                if isinstance(step, FusedStep):
                    table[first] = kernel_label(step)
                else:
                    sub = model.get_submodule(first)
                    if not isinstance(sub, (Chain, Block)):
                        table[first] = f"aten ({'+'.join([type(sub).__name__, *step.acts])})"
    return table


_PYCNN_KERNEL = {"depthwise": "pycnn::dwconv", "grouped": "pycnn::gconv", "dense": "aten::conv2d+folded BN"}


def kernel_label(step: FusedStep) -> str:
    """What runs a fused step: pycnn's side (a conv_bn_act in training: the conv, then pycnn::bn_act), "aten"
    (the eager composition) or, before its first run with kernels="auto", both candidates."""
    ours = _PYCNN_KERNEL[step.attrs["conv"]] if step.kind == "conv_bn_act" else f"pycnn::{step.kind}"
    if step.attrs.get("residual"):
        ours += "+residual"
    kernel = step.last_kernel or (step.kernels if step.kernels != "auto" else None)
    if kernel is None:
        return f"auto: {ours} | aten"
    return ours if kernel == "pycnn" else "aten"
