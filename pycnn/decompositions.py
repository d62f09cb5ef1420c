"""pycnn's forward ops written as ATen compositions, for exporters that decompose a graph to ATen.

torch.onnx.export's dynamo exporter applies torch._decomp.decomposition_table to ops it cannot translate: inside
`onnx_decompositions()` the table holds these compositions, so the exported graph has standard operators only
and onnxruntime runs it (pycnn.export_onnx exports inside it). They are not registered for good: inductor
(torch.compile, AOTInductor) refuses, when $CI is set, to fall back to a custom op's kernel while the table has an
entry for it, and outside export pycnn's ops should run on pycnn's kernels.
Each composition computes what the op's schema in csrc/ops.cpp says, with the fake kernels' output dtypes.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._decomp import decomposition_table

from .fused import ACT_FNS

_ACT = {"none": lambda y: y, "identity": lambda y: y, **ACT_FNS}  # the ops' `act` strings


COMPOSITIONS: Dict[object, Callable] = {}  # op overload -> its ATen composition


def _composition(op):
    def register(fn):
        COMPOSITIONS[op] = fn
        return fn
    return register


@contextmanager
def onnx_decompositions():
    """torch's decomposition table holds pycnn's compositions for the duration (and not after)."""
    added = {op: fn for op, fn in COMPOSITIONS.items() if op not in decomposition_table}
    decomposition_table.update(added)
    try:
        yield
    finally:
        for op in added:
            decomposition_table.pop(op, None)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _channel(v: Tensor) -> Tensor:
    return v.reshape(1, -1, 1, 1)


def _epilogue(y: Tensor, scale: Optional[Tensor], bias: Optional[Tensor], residual: Optional[Tensor], act: str,
              dtype: torch.dtype) -> Tensor:
    """act(y * scale + bias [+ residual]) in the accumulation type, returned in `dtype`."""
    y = y.to(_acc(dtype))
    if scale is not None:
        y = y * _channel(scale.to(y.dtype))
    if bias is not None:
        y = y + _channel(bias.to(y.dtype))
    if residual is not None:
        y = y + residual.to(y.dtype)
    return _ACT[act](y).to(dtype)


@_composition(torch.ops.pycnn.dwconv_forward.default)
def dwconv_forward(input, weight, scale, bias, residual, stride, padding, dilation, act):
    y = F.conv2d(input, weight, None, list(stride), list(padding), list(dilation), input.size(1))
    return _epilogue(y, scale, bias, residual, act, input.dtype)


@_composition(torch.ops.pycnn.gconv_forward.default)
def gconv_forward(input, weight, scale, bias, residual, stride, padding, groups, act, save):
    conv = F.conv2d(input, weight, None, list(stride), list(padding), 1, groups)
    keep = save and (scale is not None or act not in ("none", "identity"))
    return _epilogue(conv, scale, bias, residual, act, input.dtype), conv if keep else input.new_empty((0,))


@_composition(torch.ops.pycnn.bn_act_forward.default)
def bn_act_forward(input, weight, bias, residual, running_mean, running_var, training, eps, act):
    acc = _acc(input.dtype)
    x = input.to(acc)
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = (x - _channel(mean)).square().mean(dim=(0, 2, 3))
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    inv = torch.rsqrt(var + eps)
    scale = inv if weight is None else inv * weight.to(acc)
    shift = -mean * scale if bias is None else bias.to(acc) - mean * scale
    return _epilogue(x, scale, shift, residual, act, input.dtype), mean, var


@_composition(torch.ops.pycnn.se_forward.default)
def se_forward(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act):
    acc = _acc(input.dtype)
    pooled = input.to(acc).mean(dim=(2, 3))
    hidden = F.linear(pooled, fc1_weight.reshape(fc1_weight.size(0), -1).to(acc),
                      None if fc1_bias is None else fc1_bias.to(acc))
    gate = torch.sigmoid(F.linear(_ACT[act](hidden), fc2_weight.reshape(fc2_weight.size(0), -1).to(acc),
                                  None if fc2_bias is None else fc2_bias.to(acc)))
    y = input.to(acc) * gate[:, :, None, None]
    return _epilogue(y, None, None, residual, post_act, input.dtype), pooled, hidden, gate
