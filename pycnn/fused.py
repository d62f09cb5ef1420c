"""The fused operations of compiled networks, as functions of the PyTorch modules that hold their parameters.

`impl` picks how one runs: "pycnn" on pycnn's kernels (in eval the BatchNorm folded into the convolution),
"torch" as the eager PyTorch composition of the same modules. Both compute the same thing and update the same
running statistics in training, so the choice (pycnn.dispatch) is free to go either way per layer.
pycnn.nn's modules are thin wrappers over these functions.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import ops
from .opspec import ACTIVATIONS


def _eager(path: str):
    """An activation's eager function from its registry name: "F.relu", "torch.sigmoid"."""
    owner, name = path.split(".")
    return getattr(F if owner == "F" else torch, name)


ACT_FNS = {a.name: _eager(a.eager) for a in ACTIVATIONS.values()}
INPLACE_ACT_FNS = {a.name: functools.partial(_eager(a.eager), inplace=True) for a in ACTIVATIONS.values() if a.inplace}


def activation(y: Tensor, act: Optional[str]) -> Tensor:
    return y if act in (None, "none") else ACT_FNS[act](y)


def epilogue_(y: Tensor, residual: Optional[Tensor], act: Optional[str]) -> Tensor:
    """act(y + residual) in place on a fresh y when autograd does not need it (eval inference): no extra
    tensors, one pass fewer per op."""
    if y.requires_grad:
        return activation(y + residual if residual is not None else y, act)
    if residual is not None:
        y = y.add_(residual)
    return y if act in (None, "none") else INPLACE_ACT_FNS.get(act, ACT_FNS[act])(y)


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype PyTorch's convolutions run in here under autocast, or None. pycnn's ops follow it."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _cast(t: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def runs_on_pycnn(bn: nn.Module) -> bool:
    """pycnn's BatchNorm kernels replace nn.BatchNorm2d (and subclasses) only; others (SyncBatchNorm) run as
    they are."""
    return isinstance(bn, nn.BatchNorm2d)


def batch_norm_act(bn: _BatchNorm, x: Tensor, act: Optional[str], residual: Optional[Tensor] = None,
                   impl: str = "pycnn") -> Tensor:
    """act(bn(x) [+ residual]) with nn.BatchNorm2d's semantics (batch statistics in training or without running
    statistics, running-statistics update, momentum None = cumulative average)."""
    if impl == "torch" or not runs_on_pycnn(bn):
        y = _BatchNorm.forward(bn, x) if runs_on_pycnn(bn) else bn(x)
        return activation(y + residual if residual is not None else y, act)
    use_batch_stats = bn.training or bn.running_mean is None
    update = bn.training and bn.track_running_stats
    keep = update or not use_batch_stats
    return ops.bn_act(x, bn.weight, bn.bias, bn.running_mean if keep else None, bn.running_var if keep else None,
                      training=use_batch_stats, momentum=bn.momentum, eps=bn.eps, act=act or "none",
                      residual=_cast(residual, x.dtype), num_batches_tracked=bn.num_batches_tracked if update else None)


def fold_bn(conv: nn.Conv2d, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """bn(conv(x)) in eval as conv(x) * scale + shift (conv bias included), per channel, in float32 (float64 for
    float64 weights); differentiable, computed from the current weights and statistics on every call."""
    acc = torch.float64 if conv.weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(bn.running_var.to(acc) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(acc)
    shift = -bn.running_mean.to(acc)
    if conv.bias is not None:
        shift = shift + conv.bias.to(acc)
    shift = shift * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(acc)
    return scale, shift


def conv_bn_act(conv: nn.Conv2d, bn: _BatchNorm, x: Tensor, kind: str, act: Optional[str],
                residual: Optional[Tensor] = None, impl: str = "pycnn") -> Tensor:
    """act(bn(conv(x)) [+ residual]); kind "depthwise" (pycnn.dwconv), "grouped" (pycnn.gconv) or "dense"
    (PyTorch's conv). Training: the conv, then the fused BatchNorm+act. Eval: the BatchNorm folded into the
    conv, one fused op for depthwise/grouped, a conv with folded weights and bias for dense."""
    if impl == "torch" or not runs_on_pycnn(bn):
        return batch_norm_act(bn, conv(x), act, residual, "torch")
    dtype = _autocast_dtype(x)
    if dtype is not None and kind != "dense":
        x = _cast(x, dtype)
    weight = _cast(conv.weight, x.dtype) if kind != "dense" else conv.weight
    geometry = dict(stride=conv.stride, padding=conv.padding)
    batch_stats = bn.training or bn.running_mean is None
    scale, shift = (None, conv.bias) if batch_stats else fold_bn(conv, bn)
    epilogue = dict(act="none") if batch_stats else dict(act=act or "none", residual=_cast(residual, x.dtype))
    if kind == "depthwise":
        y = ops.dwconv(x, weight, scale, shift, dilation=conv.dilation, **geometry, **epilogue)
    elif kind == "grouped":
        y = ops.gconv(x, weight, scale, shift, groups=conv.groups, **geometry, **epilogue)
    elif batch_stats:
        y = conv(x)
    else:
        w = (conv.weight * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
        b = shift.to(conv.weight.dtype)
        if _onednn_fusable(x, w, residual, act):
            return _onednn_conv_act(x, w, b, conv, residual, act)
        y = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        return epilogue_(y, residual, act)
    return batch_norm_act(bn, y, act, residual, "pycnn") if batch_stats else y


# oneDNN's fused convolution (the one inductor uses on the CPU): the activation, and a residual add followed by
# relu, run in the convolution's epilogue. name -> (unary attr, scalars).
_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_ACTS = {None: ("none", []), "none": ("none", []),
                **{a.name: (a.onednn[0], list(a.onednn[1])) for a in ACTIVATIONS.values() if a.onednn}}


def _onednn_fusable(x: Tensor, w: Tensor, residual: Optional[Tensor], act: Optional[str]) -> bool:
    """Inference on the CPU in float32, outside torch.compile/export (inductor makes its own fusions)."""
    return (_ONEDNN and not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.dim() == 4
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and act in _ONEDNN_ACTS and (residual is None or act in (None, "none", "relu")))


def _onednn_conv_act(x, w, b, conv, residual, act):
    unary, scalars = _ONEDNN_ACTS[act]
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, w, b, *geometry, unary, scalars, "")
    return torch.ops.mkldnn._convolution_pointwise.binary(x, residual.to(x.dtype), w, b, *geometry, "add", 1.0,
                                                          None if unary == "none" else unary, [], "")


def squeeze_excite(se: nn.Module, x: Tensor, act: str, post_act: Optional[str], residual: Optional[Tensor] = None,
                   impl: str = "pycnn") -> Tensor:
    """post_act(x * sigmoid(fc2(act(fc1(mean_hw(x))))) [+ residual]); `se` holds fc1 and fc2 (1x1 convs)."""
    if impl == "torch":
        y = se(x)
        return activation(y + residual if residual is not None else y, post_act)
    x = _cast(x, _autocast_dtype(x))
    return ops.se(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, act=act, post_act=post_act or "none",
                  residual=_cast(residual, x.dtype))
