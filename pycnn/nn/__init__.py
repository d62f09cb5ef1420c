"""Modules running on pycnn's fused kernels; each is a drop-in for the PyTorch modules it replaces."""

from .batchnorm_act import BatchNormAct2d
from .dwconv import DepthwiseConvBNAct2d
from .grouped_conv import GroupedConvBNAct2d
from .se import SqueezeExcite

__all__ = ["BatchNormAct2d", "DepthwiseConvBNAct2d", "GroupedConvBNAct2d", "SqueezeExcite"]
