from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from .. import fused, ops
from ..opspec import DWCONV_MAX_KERNEL, check_kernel_act, dwconv_kernel_ok
from .batchnorm_act import BatchNormAct2d


class DepthwiseConvBNAct2d(nn.Module):
    """Depthwise conv2d + BatchNorm + activation (+ residual): act(bn(conv(x)) [+ residual]).

    A drop-in for ``nn.Sequential(conv=nn.Conv2d(C, C, k, stride, padding, dilation, groups=C,
    bias=bias), bn=nn.BatchNorm2d(C), act)``: its state_dict has the same keys (``conv.weight``,
    ``conv.bias`` when ``bias``, ``bn.weight``, ``bn.bias``, ``bn.running_mean``, ``bn.running_var``,
    ``bn.num_batches_tracked``). ``padding="same"`` is ``dilation * (k - 1) // 2`` (the usual
    MobileNet/EfficientNet padding, also for stride 2). ``bn=False`` gives conv [+ bias] + activation.

    Training (batch statistics) runs the depthwise op, then the fused BatchNorm+act op (the statistics
    need the conv output); eval folds the BatchNorm into the conv's per-channel scale and bias and runs
    one fused kernel.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: Union[str, int] = "same",
                 dilation: int = 1, act: str = "relu", bias: bool = False, bn: bool = True, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, device=None, dtype=None):
        super().__init__()
        check_kernel_act("DepthwiseConvBNAct2d", "activation", act)
        if not dwconv_kernel_ok(kernel_size):
            raise ValueError(f"DepthwiseConvBNAct2d: kernel_size must be odd and at most {DWCONV_MAX_KERNEL}, got "
                             f"{kernel_size!r}")
        if padding == "same":
            padding = dilation * (kernel_size - 1) // 2
        elif not isinstance(padding, int):
            raise ValueError(f"DepthwiseConvBNAct2d: padding must be 'same' or an int, got {padding!r}")
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                              groups=channels, bias=bias, device=device, dtype=dtype)
        self.bn = BatchNormAct2d(channels, act=act, eps=eps, momentum=momentum, device=device,
                                 dtype=dtype) if bn else None
        self.act = act

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        conv, bn = self.conv, self.bn
        if bn is None:
            return ops.dwconv(input, conv.weight, None, conv.bias, act=self.act, residual=residual,
                              stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        return fused.conv_bn_act(conv, bn, input, "depthwise", bn.act, residual)

    def extra_repr(self) -> str:
        return f"act={self.act}"
