"""Standard initialization of a compiled network's parameters."""
from __future__ import annotations

from torch import nn

from .modules import ScaledStdConv2d


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
