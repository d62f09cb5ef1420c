"""pycnn.nn.SqueezeExcite: Squeeze-and-Excitation [+ residual] + post-activation on the fused se op."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import fused
from ..opspec import check_kernel_act


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation in one fused op: ``post_act(x * sigmoid(fc2(act(fc1(mean_hw(x))))) [+ residual])``.

    A drop-in for ``torchvision.ops.SqueezeExcitation(channels, reduced_channels, activation)``: the same
    state_dict keys and shapes (``fc1.weight`` [C_r, C, 1, 1], ``fc1.bias``, ``fc2.weight`` [C, C_r, 1, 1],
    ``fc2.bias``), which are also those of timm's ``SEModule`` (RegNet, SE-ResNet); timm's EfficientNet
    ``SqueezeExcite`` names them ``conv_reduce`` / ``conv_expand`` (rename to fc1 / fc2).
    ``act`` (relu or silu; any of none, relu, relu6, silu, hardswish) follows fc1; ``forward(x, residual)``
    adds the residual after the scaling and applies ``post_act`` (none or relu: the merge of SE-ResNet
    and RegNetY blocks).
    """

    def __init__(self, channels: int, reduced_channels: int, act: str = "relu", post_act: str = "none",
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("act", act), ("post_act", post_act)):
            check_kernel_act("SqueezeExcite", name, value)
        if channels < 1 or reduced_channels < 1:
            raise ValueError(f"SqueezeExcite: channels and reduced_channels must be >= 1, got {channels}, {reduced_channels}")
        self.channels, self.reduced_channels = channels, reduced_channels
        self.act, self.post_act = act, post_act
        self.fc1 = nn.Conv2d(channels, reduced_channels, 1, device=device, dtype=dtype)
        self.fc2 = nn.Conv2d(reduced_channels, channels, 1, device=device, dtype=dtype)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        if input.dim() != 4:
            raise ValueError(f"SqueezeExcite: expected 4D input (N, C, H, W), got {input.dim()}D")
        return fused.squeeze_excite(self, input, self.act, self.post_act, residual)  # autocast as the others

    def extra_repr(self) -> str:
        return (f"{self.channels}, {self.reduced_channels}, act={self.act}"
                + (f", post_act={self.post_act}" if self.post_act != "none" else ""))
