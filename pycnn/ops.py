"""Typed wrappers over torch.ops.pycnn.*, with fake (meta) kernels and autograd formulas.

The schemas live in csrc/ops.cpp; the CPU and CUDA kernels register from C++.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


# ---------------------------------------------------------------------------------------------
# bn_act: BatchNorm (+ residual) + activation
# ---------------------------------------------------------------------------------------------

def bn_act(
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    *,
    training: bool = True,
    momentum: Optional[float] = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    residual: Optional[Tensor] = None,
    num_batches_tracked: Optional[Tensor] = None,
) -> Tensor:
    """act(batch_norm(input) [+ residual]), updating the running statistics in training as
    nn.BatchNorm2d does (momentum None: cumulative average over num_batches_tracked)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"pycnn.bn_act: unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    output, save_mean, save_var = torch.ops.pycnn.bn_act_forward(
        input, weight, bias, residual, running_mean, running_var, training, eps, act)
    if training and running_mean is not None and running_var is not None:
        _update_running_stats(input, save_mean, save_var, running_mean, running_var, momentum,
                              num_batches_tracked)
    return output


def _update_running_stats(input, save_mean, save_var, running_mean, running_var, momentum,
                          num_batches_tracked):
    with torch.no_grad():
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        if momentum is None:
            factor = (1.0 / num_batches_tracked).to(running_mean.dtype)  # a tensor: no host sync
        else:
            factor = momentum
        count = input.numel() // input.size(1)
        unbiased = save_var * (count / (count - 1))
        running_mean.lerp_(save_mean.to(running_mean.dtype), factor)
        running_var.lerp_(unbiased.to(running_var.dtype), factor)


@torch.library.register_fake("pycnn::bn_act_forward")
def _bn_act_forward_fake(input, weight, bias, residual, running_mean, running_var, training, eps, act):
    torch._check(input.dim() == 4, lambda: f"pycnn.bn_act: input must be 4-D, got {input.dim()}-D")
    channels = input.size(1)
    acc = _acc_dtype(input.dtype)
    output = torch.empty_like(input, memory_format=_memory_format(input))
    return output, input.new_empty((channels,), dtype=acc), input.new_empty((channels,), dtype=acc)


@torch.library.register_fake("pycnn::bn_act_backward")
def _bn_act_backward_fake(grad_output, input, weight, bias, residual, save_mean, save_var, training, eps, act):
    fmt = _memory_format(input)
    channels = input.size(1)
    acc = _acc_dtype(input.dtype)
    grad_input = torch.empty_like(input, memory_format=fmt)
    grad_weight = input.new_empty((channels,), dtype=weight.dtype if weight is not None else acc)
    grad_bias = input.new_empty((channels,), dtype=bias.dtype if bias is not None else acc)
    grad_residual = torch.empty_like(input, memory_format=fmt) if residual is not None else None
    return grad_input, grad_weight, grad_bias, grad_residual


def _bn_act_setup_context(ctx, inputs, output):
    input, weight, bias, residual, _running_mean, _running_var, training, eps, act = inputs
    _, save_mean, save_var = output
    ctx.save_for_backward(input, weight, bias, residual, save_mean, save_var)
    ctx.training, ctx.eps, ctx.act = training, eps, act


def _bn_act_backward(ctx, grad_output, _grad_mean, _grad_var):
    input, weight, bias, residual, save_mean, save_var = ctx.saved_tensors
    grad_input, grad_weight, grad_bias, grad_residual = torch.ops.pycnn.bn_act_backward(
        grad_output, input, weight, bias, residual, save_mean, save_var, ctx.training, ctx.eps, ctx.act)
    return (grad_input,
            grad_weight if weight is not None else None,
            grad_bias if bias is not None else None,
            grad_residual,
            None, None, None, None, None)


torch.library.register_autograd("pycnn::bn_act_forward", _bn_act_backward, setup_context=_bn_act_setup_context)


# ---------------------------------------------------------------------------------------------
# gconv: grouped conv2d + per-channel scale/bias (+ residual) + activation
# ---------------------------------------------------------------------------------------------

def _pair(v, name: str) -> list:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) != 2 or not all(isinstance(e, int) for e in v):
        raise ValueError(f"pycnn.gconv: {name} must be an int or a pair of ints, got {v!r}")
    return v


def gconv(
    input: Tensor,
    weight: Tensor,
    scale: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    *,
    stride=1,
    padding=0,
    groups: int = 1,
    act: str = "none",
    residual: Optional[Tensor] = None,
) -> Tensor:
    """act(conv2d(input, weight, stride, padding, groups) * scale[c] + bias[c] [+ residual]).

    weight is [C_out, C_in / groups, k, k] with k 1 or 3; scale and bias are optional per-output-channel
    vectors (a folded BatchNorm, or a conv bias with scale None). The raw convolution is kept for backward
    only when autograd needs it (and the epilogue has a scale or an activation)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"pycnn.gconv: unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, scale, bias, residual))
    output, _ = torch.ops.pycnn.gconv_forward(input, weight, scale, bias, residual, _pair(stride, "stride"),
                                              _pair(padding, "padding"), groups, act, save)
    return output


def _gconv_out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@torch.library.register_fake("pycnn::gconv_forward")
def _gconv_forward_fake(input, weight, scale, bias, residual, stride, padding, groups, act, save):
    torch._check(input.dim() == 4, lambda: f"pycnn.gconv: input must be 4-D, got {input.dim()}-D")
    torch._check(weight.dim() == 4, lambda: f"pycnn.gconv: weight must be 4-D, got {weight.dim()}-D")
    n, _, h, w = input.shape
    k = weight.size(2)
    shape = (n, weight.size(0), _gconv_out_size(h, k, stride[0], padding[0]),
             _gconv_out_size(w, k, stride[1], padding[1]))
    fmt = _memory_format(input)
    output = input.new_empty(shape).contiguous(memory_format=fmt)
    keep = save and (scale is not None or act not in ("none", "identity"))
    saved = input.new_empty(shape).contiguous(memory_format=fmt) if keep else input.new_empty((0,))
    return output, saved


@torch.library.register_fake("pycnn::gconv_backward")
def _gconv_backward_fake(grad_output, input, weight, scale, bias, residual, saved, stride, padding, groups, act):
    fmt = _memory_format(input)
    grad_input = torch.empty_like(input, memory_format=fmt)
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format)
    grad_scale = scale.new_empty(scale.shape) if scale is not None else None
    grad_bias = bias.new_empty(bias.shape) if bias is not None else None
    grad_residual = torch.empty_like(residual, memory_format=fmt) if residual is not None else None
    return grad_input, grad_weight, grad_scale, grad_bias, grad_residual


def _gconv_setup_context(ctx, inputs, output):
    input, weight, scale, bias, residual, stride, padding, groups, act, _save = inputs
    _, saved = output
    ctx.save_for_backward(input, weight, scale, bias, residual, saved)
    ctx.stride, ctx.padding, ctx.groups, ctx.act = stride, padding, groups, act


def _gconv_backward(ctx, grad_output, _grad_saved):
    input, weight, scale, bias, residual, saved = ctx.saved_tensors
    grad_input, grad_weight, grad_scale, grad_bias, grad_residual = torch.ops.pycnn.gconv_backward(
        grad_output, input, weight, scale, bias, residual, saved, ctx.stride, ctx.padding, ctx.groups, ctx.act)
    return grad_input, grad_weight, grad_scale, grad_bias, grad_residual, None, None, None, None, None


torch.library.register_autograd("pycnn::gconv_forward", _gconv_backward, setup_context=_gconv_setup_context)
