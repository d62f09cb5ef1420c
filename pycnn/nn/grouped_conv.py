"""Grouped conv2d + BatchNorm + activation on pycnn.gconv (see GroupedConvBNAct2d)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import fused
from ..opspec import GCONV_KERNELS, check_kernel_act
from .batchnorm_act import BatchNormAct2d


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class GroupedConvBNAct2d(nn.Module):
    """Grouped conv2d + BatchNorm2d [+ residual] + activation: act(bn(conv(x)) [+ residual]).

    A drop-in for ``nn.Conv2d(groups=...)`` followed by ``nn.BatchNorm2d`` and the activation, with the
    same state_dict keys (``conv.weight`` [, ``conv.bias``], ``bn.weight``, ``bn.bias``,
    ``bn.running_mean``, ``bn.running_var``, ``bn.num_batches_tracked``). Give ``groups`` or
    ``group_width`` (input channels per group). kernel_size 1 or 3; padding defaults to kernel_size // 2.

    train(): the grouped conv op (no epilogue), then BatchNormAct2d with batch statistics.
    eval(): one fused op, the BatchNorm folded into a per-channel scale and bias (recomputed on every
    call, so it follows weight changes) with the activation and residual in the conv's epilogue.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=None,
                 groups: Optional[int] = None, group_width: Optional[int] = None, act: str = "relu",
                 bias: bool = False, eps: float = 1e-5, momentum: Optional[float] = 0.1, device=None, dtype=None):
        super().__init__()
        check_kernel_act("GroupedConvBNAct2d", "activation", act)
        if groups is not None and group_width is not None:
            if in_channels != groups * group_width:
                raise ValueError(f"GroupedConvBNAct2d: groups ({groups}) * group_width ({group_width}) must equal "
                                 f"in_channels ({in_channels})")
        elif group_width is not None:
            if group_width <= 0 or in_channels % group_width != 0:
                raise ValueError(f"GroupedConvBNAct2d: group_width ({group_width}) must divide in_channels "
                                 f"({in_channels})")
            groups = in_channels // group_width
        elif groups is None:
            groups = 1
        k = _pair(kernel_size)
        if k[0] != k[1] or k[0] not in GCONV_KERNELS:
            raise ValueError(f"GroupedConvBNAct2d: kernel_size must be {' or '.join(map(str, GCONV_KERNELS))}, got "
                             f"{kernel_size!r}")
        if padding is None:
            padding = k[0] // 2
        # nn.Conv2d checks groups against in_channels and out_channels.
        self.conv = nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=padding, groups=groups,
                              bias=bias, device=device, dtype=dtype)
        self.bn = BatchNormAct2d(out_channels, act=act, eps=eps, momentum=momentum, device=device, dtype=dtype)

    @property
    def act(self) -> str:
        return self.bn.act

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        return fused.conv_bn_act(self.conv, self.bn, input, "grouped", self.act, residual)

    def extra_repr(self) -> str:
        return f"act={self.act}"
