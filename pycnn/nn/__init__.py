"""Modules running on pycnn's fused kernels; each is a drop-in for the PyTorch modules it replaces."""

from .batchnorm_act import BatchNormAct2d
from .grouped_conv import GroupedConvBNAct2d

__all__ = ["BatchNormAct2d", "GroupedConvBNAct2d"]
