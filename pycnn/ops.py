"""Typed wrappers over torch.ops.pycnn.*, with fake (meta) kernels and autograd formulas.

The schemas live in csrc/ops.cpp; the CPU and CUDA kernels register from C++. Each fake kernel first runs the
same argument checks as the kernels (`_check_like_kernels`), so torch.compile and torch.export reject what eager
rejects, with the same message.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
try:
    from torch.fx.experimental.symbolic_shapes import optimization_hint
except ImportError:  # older torch (the GPU machine's 2.11) lacks it
    def optimization_hint(size):
        """size as a plain int: a SymInt by its hint."""
        return size.node.hint if isinstance(size, torch.SymInt) else int(size)
from torch.utils._python_dispatch import _disable_current_modes

from . import _C, memory
from .opspec import MBCONV_DTYPES, acts_with, check_kernel_act


# Each op's backward formula is registered once (_register_autograd) and reaches autograd two ways: through
# torch.library (what torch.compile, export and opcheck see) and as a torch.autograd.Function that eager calls
# recording a graph take (forward_with_grad), since torch.library's wrapper costs about 30 us a call on the CPU
# (schema defaults and pytree flattening in Python), as much as the small kernels themselves.
_EAGER_AUTOGRAD: dict = {}


def _register_autograd(name: str, backward, setup_context) -> None:
    op = getattr(torch.ops.pycnn, name).default
    torch.library.register_autograd(f"pycnn::{name}", backward, setup_context=setup_context)

    def forward(ctx, *args):  # ctx in forward: a separate setup_context costs another 20 us (signature binding)
        with torch._C._AutoDispatchBelowAutograd():  # straight to the kernel, as torch.library's forward does
            output = op(*args)
            setup_context(ctx, args, output)
        return output

    _EAGER_AUTOGRAD[name] = type(name, (torch.autograd.Function,), dict(
        forward=staticmethod(forward), backward=staticmethod(backward))).apply


def forward_with_grad(name: str, *args):
    """torch.ops.pycnn.<name>(*args), the arguments positional in schema order; a call that records autograd
    outside torch.compile and torch.jit.trace (whose graphs must hold the op, not a Python Function) takes the
    op's eager Function (the same setup_context and backward)."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.jit.is_tracing() \
            and any(isinstance(a, Tensor) and a.requires_grad for a in args):
        return _EAGER_AUTOGRAD[name](*args)
    return getattr(torch.ops.pycnn, name)(*args)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def kernel_memory_format(t: Tensor) -> torch.memory_format:
    """The memory format pycnn's kernels give their output for input t (csrc/op_common.h's kernel_memory_format)."""
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


def _pair(v, name: str, op: str) -> list:
    """An int or a pair of ints (stride, padding, dilation) as [h, w]."""
    def is_int(e):
        return isinstance(e, (int, torch.SymInt)) and not isinstance(e, bool)

    if is_int(v):
        return [v, v]
    message = f"pycnn.{op}: {name} must be an int or a pair of ints, got {v!r}"
    if not isinstance(v, (list, tuple)) or not all(is_int(e) for e in v):
        raise TypeError(message)  # a float, a string, a tuple of floats
    if not 1 <= len(v) <= 2:
        raise ValueError(message)
    return list(v) * (2 // len(v))


def _kernel_name(op: str) -> str:
    """The name the kernels' messages give op: pycnn.dwconv for dwconv_forward, pycnn.dwconv_backward."""
    return "pycnn." + (op[: -len("_forward")] if op.endswith("_forward") else op)


def _meta_copy(a):
    """A plain meta tensor (or int) with a's shape, strides and dtype; symbolic sizes by their hint, no guard."""
    if isinstance(a, Tensor):
        return torch.empty_strided([optimization_hint(s) for s in a.shape],
                                   [optimization_hint(s) for s in a.stride()], dtype=a.dtype, device="meta")
    if isinstance(a, (list, tuple)):
        return [_meta_copy(e) for e in a]
    if isinstance(a, torch.SymInt):
        return optimization_hint(a)
    return a


def _check_like_kernels(op: str, *args) -> None:
    """The argument checks of op's CPU and CUDA kernels (pycnn._C.check_<op>, the same C++ code), run on meta copies
    of the arguments, and the check that all tensors are on input's device, which the kernels get for free: the
    dispatcher sends a CPU input with a meta weight here, not to the CPU kernel."""
    names = [a.name for a in getattr(torch.ops.pycnn, op).default._schema.arguments]
    given = dict(zip(names, args))
    first = "input" if "input" in given else names[0]
    device = given[first].device
    for name, value in given.items():
        if isinstance(value, Tensor) and value.device != device:
            raise RuntimeError(f"{_kernel_name(op)}: {name} is on {value.device} but {first} is on {device}")
    with _disable_current_modes():  # plain meta tensors, outside fake/functional/proxy modes
        getattr(_C, "check_" + op)(*(_meta_copy(a) for a in args))


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
    check_kernel_act("pycnn.bn_act", "activation", act)
    if training and momentum is None and running_mean is not None and num_batches_tracked is None:
        raise ValueError("pycnn.bn_act: momentum=None (a cumulative average of the batch statistics) needs "
                         "num_batches_tracked, the count of batches seen")
    output, save_mean, save_var = forward_with_grad(
        "bn_act_forward", input, weight, bias, residual, running_mean, running_var, training, eps, act)
    if training and running_mean is not None and running_var is not None:
        _update_running_stats(input, save_mean, save_var, running_mean, running_var, momentum,
                              num_batches_tracked)
    return output


def _update_running_stats(input, save_mean, save_var, running_mean, running_var, momentum,
                          num_batches_tracked):
    with torch.no_grad():
        torch.ops.pycnn.bn_act_update_stats_(running_mean, running_var, num_batches_tracked, save_mean, save_var,
                                             momentum, input.numel() // input.size(1))


@torch.library.register_fake("pycnn::bn_act_update_stats_")
def _bn_act_update_stats_fake(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum, count):
    _check_like_kernels("bn_act_update_stats_", running_mean, running_var, num_batches_tracked, save_mean, save_var,
                        momentum, count)


@torch.library.register_fake("pycnn::bn_act_forward")
def _bn_act_forward_fake(input, weight, bias, residual, running_mean, running_var, training, eps, act):
    _check_like_kernels("bn_act_forward", input, weight, bias, residual, running_mean, running_var, training, eps, act)
    channels = input.size(1)
    acc = _acc_dtype(input.dtype)
    output = torch.empty_like(input, memory_format=kernel_memory_format(input))
    return output, input.new_empty((channels,), dtype=acc), input.new_empty((channels,), dtype=acc)


@torch.library.register_fake("pycnn::bn_act_backward")
def _bn_act_backward_fake(grad_output, input, weight, bias, residual, save_mean, save_var, training, eps, act):
    _check_like_kernels("bn_act_backward", grad_output, input, weight, bias, residual, save_mean, save_var, training,
                        eps, act)
    fmt = kernel_memory_format(input)
    channels = input.size(1)
    acc = _acc_dtype(input.dtype)
    grad_input = torch.empty_like(input, memory_format=fmt)
    grad_weight = input.new_empty((channels,), dtype=weight.dtype if weight is not None else acc)
    grad_bias = input.new_empty((channels,), dtype=bias.dtype if bias is not None else acc)
    grad_residual = torch.empty_like(input, memory_format=fmt) if residual is not None else None
    return grad_input, grad_weight, grad_bias, grad_residual


# relu and relu6 have derivatives readable from their output: with a residual, backward then keeps the output
# (which the next layer keeps anyway) instead of the residual, so training needs no more memory than eager.
# At NaN as PyTorch's threshold_backward and hardtanh_backward: relu passes the gradient, relu6 cuts it.
_OUTPUT_MASKS = {"relu": lambda y: ~(y <= 0), "relu6": lambda y: (y > 0) & (y < 6)}  # the math, per activation
# which activations use it: the registry's flag (a flagged activation without its math fails here, at import)
_MASK_FROM_OUTPUT = {name: _OUTPUT_MASKS[name] for name in acts_with("mask_from_output")}


def _bn_act_setup_context(ctx, inputs, output):
    input, weight, bias, residual, _running_mean, _running_var, training, eps, act = inputs
    y, save_mean, save_var = output
    memory.note_bn_act_output(y, input, weight, bias, residual, save_mean, save_var, eps, act)
    # Packed by recompute_epilogues(), y would be kept as its recipe, which holds the residual: keeping the residual
    # instead costs nothing more and lets backward run as one kernel (no rebuilt y, no mask ops).
    ctx.mask_from_output = residual is not None and act in _MASK_FROM_OUTPUT and not memory.packing()
    ctx.save_for_backward(input, weight, bias, y if ctx.mask_from_output else residual, save_mean, save_var)
    ctx.training, ctx.eps, ctx.act = training, eps, act


def _bn_act_backward(ctx, grad_output, _grad_mean, _grad_var):
    input, weight, bias, residual, save_mean, save_var = ctx.saved_tensors
    if ctx.mask_from_output:  # `residual` holds the output: the act's derivative, then BatchNorm's alone
        grad_z = grad_output * _MASK_FROM_OUTPUT[ctx.act](residual)
        grad_input, grad_weight, grad_bias, _ = torch.ops.pycnn.bn_act_backward(
            grad_z, input, weight, bias, None, save_mean, save_var, ctx.training, ctx.eps, "none")
        grad_residual = grad_z
    else:
        grad_input, grad_weight, grad_bias, grad_residual = torch.ops.pycnn.bn_act_backward(
            grad_output, input, weight, bias, residual, save_mean, save_var, ctx.training, ctx.eps, ctx.act)
    return (grad_input,
            grad_weight if weight is not None else None,
            grad_bias if bias is not None else None,
            grad_residual,
            None, None, None, None, None)


_register_autograd("bn_act_forward", _bn_act_backward, _bn_act_setup_context)


# ---------------------------------------------------------------------------------------------
# se: Squeeze-and-Excitation (+ residual) + post-activation
# ---------------------------------------------------------------------------------------------

def se(
    input: Tensor,
    fc1_weight: Tensor,
    fc1_bias: Optional[Tensor],
    fc2_weight: Tensor,
    fc2_bias: Optional[Tensor],
    *,
    act: str = "relu",
    post_act: str = "none",
    residual: Optional[Tensor] = None,
) -> Tensor:
    """post_act(input * sigmoid(fc2(act(fc1(mean_hw(input))))) [+ residual]).

    fc1_weight is [C_r, C] or [C_r, C, 1, 1] (nn.Linear or 1x1 nn.Conv2d), fc2_weight [C, C_r] or
    [C, C_r, 1, 1]; the fc tensors have the input's dtype or float32 (float64 for float64 input)."""
    for name, value in (("act", act), ("post_act", post_act)):
        check_kernel_act("pycnn.se", name, value)
    output, _pooled, _hidden, _gate = forward_with_grad(
        "se_forward", input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act)
    return output


@torch.library.register_fake("pycnn::se_forward")
def _se_forward_fake(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act):
    _check_like_kernels("se_forward", input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act)
    n, c = input.size(0), input.size(1)
    acc = _acc_dtype(input.dtype)
    output = torch.empty_like(input, memory_format=kernel_memory_format(input))
    return (output, input.new_empty((n, c), dtype=acc), input.new_empty((n, fc1_weight.size(0)), dtype=acc),
            input.new_empty((n, c), dtype=acc))


@torch.library.register_fake("pycnn::se_backward")
def _se_backward_fake(grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate, act, post_act):
    _check_like_kernels("se_backward", grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate, act,
                        post_act)
    fmt = kernel_memory_format(input)
    grad_input = torch.empty_like(input, memory_format=fmt)
    grad_residual = torch.empty_like(input, memory_format=fmt) if residual is not None else None
    return (grad_input, torch.empty_like(fc1_weight, memory_format=torch.contiguous_format),
            fc1_weight.new_empty((fc1_weight.size(0),)),
            torch.empty_like(fc2_weight, memory_format=torch.contiguous_format),
            fc2_weight.new_empty((fc2_weight.size(0),)), grad_residual)


def _se_setup_context(ctx, inputs, output):
    input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act = inputs
    _, pooled, hidden, gate = output
    ctx.save_for_backward(input, fc1_weight, fc2_weight, residual, pooled, hidden, gate)
    ctx.act, ctx.post_act = act, post_act
    ctx.has_bias = (fc1_bias is not None, fc2_bias is not None)
    ctx.mark_non_differentiable(pooled, hidden, gate)


def _se_backward(ctx, grad_output, _grad_pooled, _grad_hidden, _grad_gate):
    input, fc1_weight, fc2_weight, residual, pooled, hidden, gate = ctx.saved_tensors
    gx, gw1, gb1, gw2, gb2, gr = torch.ops.pycnn.se_backward(
        grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate, ctx.act, ctx.post_act)
    return (gx, gw1, gb1 if ctx.has_bias[0] else None, gw2, gb2 if ctx.has_bias[1] else None, gr, None, None)


_register_autograd("se_forward", _se_backward, _se_setup_context)


# ---------------------------------------------------------------------------------------------
# dwconv: depthwise conv2d + per-channel scale/bias (+ residual) + activation
# ---------------------------------------------------------------------------------------------

def dwconv(
    input: Tensor,
    weight: Tensor,
    scale: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    act: str = "none",
    residual: Optional[Tensor] = None,
) -> Tensor:
    """act(conv2d(input, weight, groups=C) * scale + bias [+ residual]) in one kernel.

    weight is (C, 1, k, k) with k odd and at most 7; stride and dilation 1 or 2 (ints or pairs);
    padding an int or a pair. scale and bias are per-channel vectors (a folded BatchNorm, or None and
    the conv's bias). Differentiable in input, weight, scale, bias and residual.
    """
    check_kernel_act("pycnn.dwconv", "activation", act)
    return forward_with_grad("dwconv_forward", input, weight, scale, bias, residual, _pair(stride, "stride", "dwconv"),
                             _pair(padding, "padding", "dwconv"), _pair(dilation, "dilation", "dwconv"), act)


def _dwconv_output_shape(input, weight, stride, padding, dilation):
    k = weight.size(2)
    oh = (input.size(2) + 2 * padding[0] - dilation[0] * (k - 1) - 1) // stride[0] + 1
    ow = (input.size(3) + 2 * padding[1] - dilation[1] * (k - 1) - 1) // stride[1] + 1
    return (input.size(0), input.size(1), oh, ow)


def _pair_list(v):
    return [v[0], v[0]] if len(v) == 1 else list(v)


@torch.library.register_fake("pycnn::dwconv_forward")
def _dwconv_forward_fake(input, weight, scale, bias, residual, stride, padding, dilation, act):
    _check_like_kernels("dwconv_forward", input, weight, scale, bias, residual, stride, padding, dilation, act)
    shape = _dwconv_output_shape(input, weight, _pair_list(stride), _pair_list(padding), _pair_list(dilation))
    return input.new_empty(shape).contiguous(memory_format=kernel_memory_format(input))


@torch.library.register_fake("pycnn::dwconv_backward")
def _dwconv_backward_fake(grad_output, input, weight, scale, bias, residual, stride, padding, dilation, act):
    _check_like_kernels("dwconv_backward", grad_output, input, weight, scale, bias, residual, stride, padding,
                        dilation, act)
    fmt = kernel_memory_format(input)
    channels = input.size(1)
    acc = _acc_dtype(input.dtype)
    grad_input = torch.empty_like(input, memory_format=fmt)
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format)
    grad_scale = input.new_empty((channels,), dtype=scale.dtype if scale is not None else acc)
    grad_bias = input.new_empty((channels,), dtype=bias.dtype if bias is not None else acc)
    grad_residual = None
    if residual is not None:
        shape = _dwconv_output_shape(input, weight, _pair_list(stride), _pair_list(padding), _pair_list(dilation))
        grad_residual = input.new_empty(shape).contiguous(memory_format=fmt)
    return grad_input, grad_weight, grad_scale, grad_bias, grad_residual


def _dwconv_setup_context(ctx, inputs, output):
    input, weight, scale, bias, residual, stride, padding, dilation, act = inputs
    ctx.save_for_backward(input, weight, scale, bias, residual)
    ctx.stride, ctx.padding, ctx.dilation, ctx.act = stride, padding, dilation, act


def _dwconv_backward(ctx, grad_output):
    input, weight, scale, bias, residual = ctx.saved_tensors
    grad_input, grad_weight, grad_scale, grad_bias, grad_residual = torch.ops.pycnn.dwconv_backward(
        grad_output, input, weight, scale, bias, residual, ctx.stride, ctx.padding, ctx.dilation, ctx.act)
    return (grad_input, grad_weight,
            grad_scale if scale is not None else None,
            grad_bias if bias is not None else None,
            grad_residual,
            None, None, None, None)


_register_autograd("dwconv_forward", _dwconv_backward, _dwconv_setup_context)


# ---------------------------------------------------------------------------------------------
# gconv: grouped conv2d + per-channel scale/bias (+ residual) + activation
# ---------------------------------------------------------------------------------------------

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
    check_kernel_act("pycnn.gconv", "activation", act)
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, scale, bias, residual))
    output, _ = forward_with_grad("gconv_forward", input, weight, scale, bias, residual,
                                  _pair(stride, "stride", "gconv"), _pair(padding, "padding", "gconv"), groups, act,
                                  save)
    return output


def _gconv_out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@torch.library.register_fake("pycnn::gconv_forward")
def _gconv_forward_fake(input, weight, scale, bias, residual, stride, padding, groups, act, save):
    _check_like_kernels("gconv_forward", input, weight, scale, bias, residual, stride, padding, groups, act, save)
    n, _, h, w = input.shape
    k = weight.size(2)
    shape = (n, weight.size(0), _gconv_out_size(h, k, stride[0], padding[0]),
             _gconv_out_size(w, k, stride[1], padding[1]))
    fmt = kernel_memory_format(input)
    output = input.new_empty(shape).contiguous(memory_format=fmt)
    keep = save and (scale is not None or act not in ("none", "identity"))
    saved = input.new_empty(shape).contiguous(memory_format=fmt) if keep else input.new_empty((0,))
    return output, saved


@torch.library.register_fake("pycnn::gconv_backward")
def _gconv_backward_fake(grad_output, input, weight, scale, bias, residual, saved, stride, padding, groups, act):
    _check_like_kernels("gconv_backward", grad_output, input, weight, scale, bias, residual, saved, stride, padding,
                        groups, act)
    fmt = kernel_memory_format(input)
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


_register_autograd("gconv_forward", _gconv_backward, _gconv_setup_context)


# ---------------------------------------------------------------------------------------------
# mbconv: the fused inverted-residual block (MobileNetV2 / EfficientNet), eval only
# ---------------------------------------------------------------------------------------------

def mbconv(
    input: Tensor,
    expand_weight: Optional[Tensor],
    expand_bias: Optional[Tensor],
    dw_weight: Tensor,
    dw_bias: Optional[Tensor],
    project_weight: Tensor,
    project_bias: Optional[Tensor],
    *,
    stride: int = 1,
    act: str = "relu6",
    residual: bool = False,
    se: Optional[Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]] = None,
    se_act: str = "relu",
) -> Tensor:
    """project(act(dw(act(expand(input)))) [* se scale]) [+ input] in one op whose expanded activation never
    leaves cache (with SE it is stored once: the scale needs all of it).

    The BatchNorms are folded into the weights and biases (eval): expand 1x1 (C -> E; None for expansion
    ratio 1), depthwise k x k (E, 1, k, k) with padding k // 2 and stride 1 or 2, project 1x1 (E -> C_out).
    ``se = (fc1_weight, fc1_bias, fc2_weight, fc2_bias)`` scales the depthwise output by
    ``sigmoid(fc2(se_act(fc1(mean_hw))))`` before the projection (EfficientNet's MBConv).
    CPU: float32 or float64; CUDA: also float16 and bfloat16; returns channels_last. Inference only: no
    gradient.
    """
    check_kernel_act("pycnn.mbconv", "activation", act)
    check_kernel_act("pycnn.mbconv", "se_act", se_act)
    se = tuple(se) if se is not None else (None, None, None, None)
    if len(se) != 4:
        raise ValueError(f"pycnn.mbconv: se must be (fc1_weight, fc1_bias, fc2_weight, fc2_bias), got {len(se)} values")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (
            input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias) + se):
        raise RuntimeError("pycnn.mbconv: inference only (no backward): call it under torch.no_grad() or "
                           "torch.inference_mode(), or run the block unfused")
    return torch.ops.pycnn.mbconv_forward(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                          project_bias, stride, act, residual, *se, se_act)


def mbconv_kernel_takes(x: Tensor) -> bool:
    """Whether pycnn.mbconv has a kernel for x's device and dtype (opspec.MBCONV_DTYPES)."""
    return str(x.dtype).removeprefix("torch.") in MBCONV_DTYPES.get(x.device.type, ())


@torch.library.register_fake("pycnn::mbconv_forward")
def _mbconv_forward_fake(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                         stride, act, residual, se_reduce_weight=None, se_reduce_bias=None, se_expand_weight=None,
                         se_expand_bias=None, se_act="relu"):
    _check_like_kernels("mbconv_forward", input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                        project_bias, stride, act, residual, se_reduce_weight, se_reduce_bias, se_expand_weight,
                        se_expand_bias, se_act)
    if input.device.type in MBCONV_DTYPES and not mbconv_kernel_takes(input):  # as the device's kernel refuses
        raise RuntimeError(f"pycnn.mbconv: input must be {' or '.join(MBCONV_DTYPES[input.device.type])} for the "
                           f"{input.device.type.upper()} kernel, got {input.dtype}")
    k = dw_weight.size(2)
    oh = (input.size(2) + 2 * (k // 2) - k) // stride + 1
    ow = (input.size(3) + 2 * (k // 2) - k) // stride + 1
    return input.new_empty((input.size(0), project_weight.size(0), oh, ow)).contiguous(
        memory_format=torch.channels_last)


def _mbconv_no_backward(ctx, grad_output):
    raise RuntimeError("pycnn.mbconv: inference only (no backward); run the block unfused to train it")


def _mbconv_setup_context(ctx, inputs, output):
    pass


_register_autograd("mbconv_forward", _mbconv_no_backward, _mbconv_setup_context)
