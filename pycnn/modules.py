"""The leaf modules the lowering builds beyond torch.nn's (TensorFlow SAME padding, weight standardization,
channel ops, layer scale, stochastic depth, the eager Squeeze-and-Excitation): plain PyTorch modules, each the
module of one IR layer (pycnn.lower)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ir, memory
from .opspec import ACTIVATIONS


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
