from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import fused
from ..opspec import check_kernel_act


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d [+ residual] + activation in one kernel: act(bn(x) [+ residual]).

    A drop-in for ``nn.BatchNorm2d`` followed by the activation: same arguments, same state_dict
    keys (weight, bias, running_mean, running_var, num_batches_tracked), same running-statistics
    update. ``act`` is one of none, relu, relu6, silu, hardswish.
    """

    def __init__(self, num_features: int, act: str = "relu", eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        check_kernel_act("BatchNormAct2d", "activation", act)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.act = act

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        self._check_input_dim(input)
        return fused.batch_norm_act(self, input, self.act, residual)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act}"
