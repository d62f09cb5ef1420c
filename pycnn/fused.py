"""The fused operations of compiled networks, as functions of the PyTorch modules that hold their parameters.

`kernel` picks how one runs: "pycnn" on pycnn's kernels (in eval the BatchNorm folded into the convolution),
"folded" (a depthwise or grouped conv run as a dense one is: PyTorch's conv, the BatchNorm folded in eval,
pycnn's BatchNorm+act after it in training), "gemm" (a 1x1 conv as a matrix product over the pixels: in
training then pycnn's BatchNorm+act, in eval on the folded weight), "torch" as the eager PyTorch composition of
the same modules. All
compute the same thing and update the same running statistics in training, so the choice (pycnn.dispatch) is
free to go any way per layer.
pycnn.nn's modules are thin wrappers over these functions.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._prims_common import suggest_memory_format
from torch.nn.modules import module as _module
from torch.nn.modules.batchnorm import _BatchNorm

from . import _C, allocator, ops
from .opspec import ACTIVATIONS, acts_with, conv_output_size


def _eager(path: str):
    """An activation's eager function from its registry name: "F.relu", "torch.sigmoid"."""
    owner, name = path.split(".")
    return getattr(F if owner == "F" else torch, name)


ACT_FNS = {a.name: _eager(a.eager) for a in ACTIVATIONS.values()}
INPLACE_ACT_FNS = {a.name: functools.partial(_eager(a.eager), inplace=True) for a in ACTIVATIONS.values() if a.inplace}
# in place under autograd too (relu: as torchvision's ReLU(inplace=True) after a BatchNorm)
INPLACE_WITH_GRAD = frozenset(acts_with("inplace_with_grad")) & INPLACE_ACT_FNS.keys()


def activation(y: Tensor, act: Optional[str]) -> Tensor:
    return y if act in (None, "none") else ACT_FNS[act](y)


def epilogue_(y: Tensor, residual: Optional[Tensor], act: Optional[str]) -> Tensor:
    """act(y + residual) on a fresh y (a conv's or a BatchNorm's output: their backward does not read it), in place
    where autograd allows: all of it without autograd (eval inference), the activation alone where PyTorch runs
    its in-place form in place under autograd (INPLACE_WITH_GRAD). No extra tensors, one pass fewer per op."""
    if torch.is_grad_enabled() and (y.requires_grad or (residual is not None and residual.requires_grad)):
        z = y + residual if residual is not None else y
        return INPLACE_ACT_FNS[act](z) if act in INPLACE_WITH_GRAD else activation(z, act)
    if residual is not None:  # out of place where the sum's dtype is not y's (autocast): as the reference promotes
        y = y.add_(residual) if residual.dtype == y.dtype else y + residual
    return y if act in (None, "none") else INPLACE_ACT_FNS.get(act, ACT_FNS[act])(y)


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype PyTorch's convolutions run in here under autocast, or None. pycnn's ops follow it."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def exporting() -> bool:
    """torch.export is tracing. Its flag read directly: torch.compiler.is_exporting() answers True to every graph
    dynamo traces before torch 2.14 (pytorch#176347), which would take compiled graphs for exported ones."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return bool(flag) if flag is not None else torch.compiler.is_exporting()


def _cast(t: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def runs_on_pycnn(bn: nn.Module) -> bool:
    """pycnn's BatchNorm kernels replace nn.BatchNorm2d (and subclasses) only; others (SyncBatchNorm) run as
    they are."""
    return isinstance(bn, nn.BatchNorm2d)


def batch_norm_act(bn: _BatchNorm, x: Tensor, act: Optional[str], residual: Optional[Tensor] = None,
                   kernel: str = "pycnn") -> Tensor:
    """act(bn(x) [+ residual]) with nn.BatchNorm2d's semantics (batch statistics in training or without running
    statistics, running-statistics update, momentum None = cumulative average)."""
    if kernel == "torch" or not runs_on_pycnn(bn):
        if runs_on_pycnn(bn):
            return epilogue_(_BatchNorm.forward(bn, x), residual, act)
        y = bn(x)  # another module: its output may be its input or kept by its backward
        return activation(y + residual if residual is not None else y, act)
    use_batch_stats = bn.training or bn.running_mean is None
    update = bn.training and bn.track_running_stats
    keep = update or not use_batch_stats
    if not use_batch_stats and _inference((x, residual, bn.weight, bn.bias)):
        with torch._C._AutoDispatchBelowAutograd():  # nothing to record: skip the op's Python autograd layer
            return ops.bn_act(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, training=False, eps=bn.eps,
                              act=act or "none", residual=_cast(residual, x.dtype))
    return ops.bn_act(x, bn.weight, bn.bias, bn.running_mean if keep else None, bn.running_var if keep else None,
                      training=use_batch_stats, momentum=bn.momentum, eps=bn.eps, act=act or "none",
                      residual=_cast(residual, x.dtype), num_batches_tracked=bn.num_batches_tracked if update else None)


def fold_bn(conv: nn.Conv2d, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """bn(conv(x)) in eval as conv(x) * scale + shift (conv bias included), per channel, in float32 (float64 for
    float64 weights); differentiable, computed from the current weights and statistics on every call."""
    return fold_scale_shift(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)


def fold_scale_shift(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps) -> Tuple[Tensor, Tensor]:
    """fold_bn from the tensors themselves (the conv's weight only gives the accumulation dtype)."""
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(running_var.to(acc) + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.to(acc)
    shift = -running_mean.to(acc)
    if bias is not None:
        shift = shift + bias.to(acc)
    shift = shift * scale
    if bn_bias is not None:
        shift = shift + bn_bias.to(acc)
    return scale, shift


# -------------------------------------------------------------------------------- the eval fold, cached

FOLD_ATTR = "_pycnn_eval_fold"  # where a BatchNorm keeps its cached fold (pycnn.lower clears it on train/_apply/load)
ONEDNN_MIN_MACS = 1 << 20  # below this, oneDNN's fused conv costs more per call (~30 us) than F.conv2d + epilogue


class EvalFold:
    """A BatchNorm folded into its convolution for inference: scale and shift per channel (pycnn's depthwise and
    grouped kernels take them) and, once a caller asks for them (dense), the folded weight and bias with
    oneDNN-packed weights per input signature. `refs` and `stamp` say what it was computed from: the six
    tensors themselves (weak references), their version counters (bumped by every in-place change: optimizer
    steps, load_state_dict's copy_, `weight.mul_(2)` under no_grad, running statistics updated in training),
    storages, dtypes and devices, and the BatchNorm's eps."""

    __slots__ = ("refs", "stamp", "scale", "shift", "weight", "bias", "packed")

    # A copy or a pickle of the model does not carry the cache (oneDNN-packed weights have no storage to copy):
    # the copy folds again on its first eval call.
    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return _no_fold, ()


def _no_fold():
    return None


def _param(m: nn.Module, name: str) -> Optional[Tensor]:
    """m.<name> without nn.Module.__getattr__'s cost (a parametrized weight is not in _parameters: read it)."""
    t = m._parameters.get(name)
    if t is None:
        t = m._buffers.get(name)
    if t is None and name not in m._parameters and name not in m._buffers:
        t = getattr(m, name, None)
    return t


def _stamp(tensors, eps) -> tuple:
    # inference tensors (made under torch.inference_mode) have no version counter: a fresh object never
    # matches, so their fold is recomputed on every call rather than served stale
    return (eps,) + tuple(None if t is None else (object(),) if t.is_inference()
                          else (t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


def cached_fold(conv: nn.Conv2d, bn: _BatchNorm, dense: bool) -> EvalFold:
    """The fold of bn into conv for inference without autograd, recomputed only when one of the tensors it reads
    changed (EvalFold). Kept on the BatchNorm module."""
    tensors = fold_tensors(conv, bn)
    fold = bn.__dict__[FOLD_ATTR] = _refreshed(bn.__dict__.get(FOLD_ATTR), tensors, bn.eps, dense)
    return fold


def fold_tensors(conv: nn.Conv2d, bn: _BatchNorm) -> tuple:
    """What a fold is computed from: the conv's weight and bias, the BatchNorm's weight, bias and statistics."""
    return (_param(conv, "weight"), _param(conv, "bias"), _param(bn, "weight"), _param(bn, "bias"),
            _param(bn, "running_mean"), _param(bn, "running_var"))


def _refreshed(fold: Optional[EvalFold], tensors, eps: float, dense: bool) -> EvalFold:
    """fold when it is still the fold of these tensors (the same objects, unchanged since), else a new one; with
    the folded dense weight and bias when `dense`."""
    stamp = _stamp(tensors, eps)
    if fold is None or fold.stamp != stamp or not all(
            t is None if r is None else r() is t for r, t in zip(fold.refs, tensors)):
        fold = EvalFold()
        # ordinary tensors, usable outside inference mode, kept beyond the forward: none from its cache scope
        with torch.inference_mode(False), torch.no_grad(), allocator.outside_scopes():
            fold.scale, fold.shift = fold_scale_shift(*tensors, eps)
        fold.weight = fold.bias = None
        # weak: a fold kept apart from its module (graph_fold) must not keep the module's tensors alive
        fold.refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        fold.stamp, fold.packed = stamp, {}
    if dense and fold.weight is None:  # made on first use: a step racing its kernels must not refold per call
        with torch.inference_mode(False), torch.no_grad(), allocator.outside_scopes():
            weight, fold.bias = fold_into_weights(tensors[0], fold.scale, fold.shift)
            fold.weight = weight  # last: a fold with a weight has its bias
    return fold


def fold_into_weights(weight: Tensor, scale: Tensor, shift: Tensor) -> Tuple[Tensor, Tensor]:
    """A dense conv's weight and bias with fold_bn's scale and shift folded in, in the weight's dtype."""
    return (weight * scale.view(-1, 1, 1, 1)).to(weight.dtype), shift.to(weight.dtype)


def clear_folds(model: nn.Module) -> None:
    """Drops every cached fold under model, eager and compiled graphs' (refolded on their next call: after an
    edit no version counter sees, `.data`; before `.to()`, whose tensor swaps refuse weakly referenced tensors)."""
    for m in model.modules():
        m.__dict__.pop(FOLD_ATTR, None)
    for p in model.parameters():
        entry = _GRAPH_FOLDS.pop(id(p), None)  # p is alive: an entry under its id is its own
        if entry is not None:
            entry[1].detach()
        _C._eval_conv_forget(p)


def _no_autograd(tensors) -> bool:
    """Autograd has nothing to record: grad mode off, or no tensor requires grad (traceable)."""
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


def _inference(tensors) -> bool:
    """True when autograd has nothing to record outside tracing: the fold can come from the cache and the ops can
    skip their Python autograd layer."""
    return not torch.compiler.is_compiling() and _no_autograd(tensors)


def conv_bn_act(conv: nn.Conv2d, bn: _BatchNorm, x: Tensor, kind: str, act: Optional[str],
                residual: Optional[Tensor] = None, kernel: str = "pycnn") -> Tensor:
    """act(bn(conv(x)) [+ residual]); kind "depthwise" (pycnn.dwconv), "grouped" (pycnn.gconv) or "dense"
    (PyTorch's conv); kernel "pycnn", "folded" (any kind as dense), "gemm" (a dense 1x1 conv as matrix products
    where gemm_applies: in training, and in eval without autograd; else as "pycnn") or "torch" (the eager
    composition).
    Training: the conv, then the fused BatchNorm+act. Eval: the BatchNorm folded into the conv, one fused op
    for depthwise/grouped, a conv with folded weights and bias for dense; without autograd (no_grad,
    inference_mode, frozen weights) the fold is cached (cached_fold) and the ops are called below the
    autograd layer."""
    if kernel == "torch" or not runs_on_pycnn(bn):
        return batch_norm_act(bn, module_forward(conv, x), act, residual, "torch")
    if kernel == "folded":  # a depthwise or grouped conv run as the dense path runs: PyTorch's conv, BN folded in eval
        kind = "dense"
    batch_stats = bn.training or bn.running_mean is None
    if kernel == "gemm" and kind == "dense" and batch_stats and gemm_applies(conv, x):
        return batch_norm_act(bn, conv1x1_as_gemm(conv, x), act, residual, "pycnn")
    if not batch_stats:  # eval: the fold cached where autograd has nothing to record
        tensors = fold_tensors(conv, bn)
        recorded = (x, residual, *tensors[:4])
        if kernel == "gemm" and kind == "dense":
            kind = "gemm"  # (where it does not apply to an input, the plan runs it as dense: _gemm_shapes)
        if _inference(recorded):
            return _conv_bn_act_inference(conv, bn, x, kind, act, residual, tensors)
        if _in_cpu_graph(x) and x.dim() == 4 and _autocast_dtype(x) is None and _registered(conv, bn) \
                and _no_autograd(recorded):
            return torch.ops.pycnn.eval_conv_bn_act(x, *tensors, bn.eps, conv.stride, conv.padding,
                                                    conv.dilation, conv.groups, kind, act or "none", residual)
    kind = "dense" if kind == "gemm" else kind
    dtype = _autocast_dtype(x)
    if dtype is not None and kind != "dense":
        x = _cast(x, dtype)
    weight = _cast(conv.weight, x.dtype) if kind != "dense" else conv.weight
    geometry = dict(stride=conv.stride, padding=conv.padding)
    scale, shift = (None, conv.bias) if batch_stats else fold_bn(conv, bn)
    epilogue = dict(act="none") if batch_stats else dict(act=act or "none", residual=_cast(residual, x.dtype))
    if kind == "depthwise":
        y = ops.dwconv(x, weight, scale, shift, dilation=conv.dilation, **geometry, **epilogue)
    elif kind == "grouped":
        y = ops.gconv(x, weight, scale, shift, groups=conv.groups, **geometry, **epilogue)
    elif batch_stats:
        y = module_forward(conv, x)
    else:
        w, b = fold_into_weights(conv.weight, scale, shift)
        if not torch.compiler.is_compiling() and _onednn_fusable(x, w, residual, act):  # inductor fuses its own
            return _onednn_conv_act(x, w, b, (conv.stride, conv.padding, conv.dilation, conv.groups),
                                    residual, act)
        y = conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
        return epilogue_(y, residual, act)
    return batch_norm_act(bn, y, act, residual, "pycnn") if batch_stats else y


def subsamples_first(x: Tensor, weight: Tensor, stride, padding) -> bool:
    """An unpadded strided 1x1 conv of 2-7 input channels a group on the CPU whose weight gets a gradient: conv2d
    runs it as a stride-1 conv of the subsampled input (the same output, bit for bit in float32 as measured;
    gradients up to summation order). Strided, oneDNN's AVX2 backward-weights kernel for it (torch 2.14.1,
    channels_last input; RepVGG's stems) writes past its buffer and corrupts the heap: docs/backend.md."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and weight.requires_grad
            and tuple(weight.shape[2:]) == (1, 1) and 1 < weight.shape[1] < 8 and tuple(stride) != (1, 1)
            and (padding == "valid" or not isinstance(padding, str) and tuple(padding) == (0, 0)))


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups) -> Tensor:
    """F.conv2d, subsampling first where subsamples_first."""
    if subsamples_first(x, weight, stride, padding):
        x, stride = x[..., ::stride[0], ::stride[1]], (1, 1)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def module_forward(m: nn.Module, x: Tensor) -> Tensor:
    """m(x); a plain nn.Conv2d (no subclass or hooks) that subsamples_first through conv2d."""
    if type(m) is nn.Conv2d and subsamples_first(x, m.weight, m.stride, m.padding) and not _hooked(m):
        return conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    return m(x)


def _conv_bn_act_inference(conv, bn, x, kind, act, residual, tensors):
    """conv_bn_act in eval without autograd: on the CPU pycnn::eval_conv_bn_act (fold and prepared call kept in
    C++: ~15 us a layer less than this function's Python), elsewhere the cached fold, then folded_forward.
    tensors: fold_tensors(conv, bn)."""
    if x.device.type == "cpu" and x.dim() == 4 and _autocast_dtype(x) is None and _registered(conv, bn) \
            and not torch.jit.is_tracing():  # (a traced graph holds the ops the layer runs, as before)
        return torch.ops.pycnn.eval_conv_bn_act(x, *tensors, bn.eps, conv.stride, conv.padding, conv.dilation,
                                                conv.groups, kind, act or "none", residual)
    fold = cached_fold(conv, bn, _folds_weights(kind))
    geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
    return folded_forward(x, fold, tensors[0], geometry, kind, act, residual)


def folded_forward(x: Tensor, fold: EvalFold, weight: Tensor, geometry, kind: str, act: Optional[str],
                   residual: Optional[Tensor]) -> Tensor:
    """act(conv(x) * scale + shift [+ residual]) from an eval fold, without autograd: the pycnn ops called below
    autograd (their Python autograd wrapper costs ~5 us a call), dense convs on oneDNN with packed weights when
    big enough, or as one matrix product (kind "gemm"). geometry: (stride, padding, dilation, groups)."""
    if not _folds_weights(kind):
        dtype = _autocast_dtype(x)
        if dtype is not None:
            x = _cast(x, dtype)
        weight = _cast(weight, x.dtype)
        residual = _cast(residual, x.dtype)
    calls, with_epilogue = _folded_calls(x, fold, weight, geometry, kind, act, residual)
    y = x
    with torch._C._AutoDispatchBelowAutograd():
        for op, args in calls:
            args = [y if a is _PREVIOUS else a for a in args]
            positional, keywords = _argument_kinds(op)
            y = op(*args[:positional], **dict(zip(keywords, args[positional:]))) if keywords else op(*args)
    y = y[0] if isinstance(y, tuple) else y  # pycnn::gconv_forward: (output, saved)
    return y if with_epilogue else epilogue_(y, residual, act)


_PREVIOUS = object()  # in _folded_calls' arguments (all of the schema's, in its order): the previous call's output


@functools.lru_cache(maxsize=None)
def _argument_kinds(op) -> Tuple[int, Tuple[str, ...]]:
    """(how many of op's arguments go by position, the names of the keyword-only ones after them)."""
    arguments = op._schema.arguments
    positional = sum(1 for a in arguments if not a.kwarg_only)
    return positional, tuple(a.name for a in arguments[positional:])


def _folds_weights(kind: str) -> bool:
    """The layer runs on the folded weight and bias (a dense conv), not on the conv weight with the fold's scale
    and shift (pycnn's depthwise and grouped kernels)."""
    return kind in ("dense", "gemm")


def _folded_calls(x: Tensor, fold: EvalFold, weight: Tensor, geometry, kind: str, act: Optional[str],
                  residual: Optional[Tensor]):
    """([(op, arguments)], whether they apply the epilogue) that run a folded layer in inference, each call given
    the previous one's output where its arguments hold _PREVIOUS: pycnn's depthwise or grouped kernel with the
    fold's scale and shift; a dense 1x1 conv of kind "gemm" as one matrix product over the pixels (_gemm_shapes);
    oneDNN's fused conv on the packed folded weight (dense, big enough); else aten's conv on the folded weight.
    The last two without the epilogue (residual, activation): the caller's, in place. Shared by eager inference
    (folded_forward) and the plans pycnn::eval_conv_bn_act keeps (_eval_plan)."""
    stride, padding, dilation, groups = geometry
    if kind == "depthwise":
        return [(torch.ops.pycnn.dwconv_forward.default, [x, weight, fold.scale, fold.shift, residual, list(stride),
                                                          list(padding), list(dilation), act or "none"])], True
    if kind == "grouped":
        return [(torch.ops.pycnn.gconv_forward.default, [x, weight, fold.scale, fold.shift, residual, list(stride),
                                                         list(padding), groups, act or "none", False])], True
    if kind == "gemm" and x.device.type == "cpu" and not torch.jit.is_tracing() \
            and _gemm_shapes(x, fold.weight, stride, padding, dilation, groups):
        # (a traced graph would hold the traced input's sizes in the views: it runs the dense conv)
        n, c, h, w = x.shape
        c_out = fold.weight.shape[0]
        aten = torch.ops.aten
        # (the bias added after the product, not as addmm's addend: that one is copied into the output first, a
        # pass that cost RegNetX-400MF 4-5% at batch 1 against the add)
        return [(aten.as_strided.default, [x, [n * h * w, c], [c, 1], None]),  # the pixels' rows as they lie
                (aten.mm.default, [_PREVIOUS, _gemm_weight(fold)]),
                (aten.add_.Tensor, [_PREVIOUS, fold.bias, 1]),
                (aten.as_strided.default, [_PREVIOUS, [n, c_out, h, w], list(_channels_last_strides(c_out, h, w)),
                                           None])], False
    if _onednn_path(x, fold.weight, residual, act, stride):
        return [_onednn_call(x, _packed(fold, x, geometry), fold.bias, geometry, residual, act)], True
    return [(torch.ops.aten.conv2d.default, [x, fold.weight, fold.bias, list(stride), list(padding), list(dilation),
                                             groups])], False


def _gemm_shapes(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv of a channels_last 4-D input in the weight's dtype: its pixels are
    the rows of an [N*H*W, C] matrix as it lies in memory, so the conv is one matrix product (kind "gemm", on the
    CPU; else the layer runs as dense). MKL's product beats oneDNN's 1x1 conv on small maps (RegNetX-400MF's
    384 -> 384 at 7x7, batch 1), not on large ones: the dispatch races it."""
    return (x.dim() == 4 and x.dtype == weight.dtype and tuple(weight.shape[2:]) == (1, 1)
            and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and tuple(dilation) == (1, 1) and groups == 1
            and x.is_contiguous(memory_format=torch.channels_last))


def _channels_last_strides(c: int, h: int, w: int) -> Tuple[int, int, int, int]:
    hs, ws, cs = max(h, 1), max(w, 1), max(c, 1)  # as torch strides empty dimensions
    return hs * ws * cs, 1, ws * cs, cs


def _gemm_weight(fold: EvalFold) -> Tensor:
    """The folded 1x1 weight as the [C_in, C_out] right-hand matrix of the product, made once per fold (MKL's
    product on the transposed view ran 1.2-1.4x slower)."""
    gemm = fold.packed.get("gemm")
    if gemm is None:
        with torch.inference_mode(False), torch.no_grad(), allocator.outside_scopes():
            gemm = fold.packed["gemm"] = fold.weight.flatten(1).t().contiguous()
    return gemm


# ------------------------------------------------------------------- the eval fold in graphs torch.compile makes

# A graph torch.compile traces cannot read the fold cache (its checks are Python state dynamo would guard on or
# bake in): in the graph, the fold would be recomputed on every call (the folded weights written anew: 22 MB a
# call for RegNetX-400MF) and the dense convs run on unpacked weights with their epilogues as separate passes.
# Eval layers in CPU graphs that hold the allocator scope (GraphFolds) call pycnn::eval_conv_bn_act (a fused
# block pycnn::eval_mbconv) instead: opaque ops, given the modules' own tensors (dynamo passes the parameter and
# buffer objects themselves), that run folded_forward from a cache of their own (graph_fold), as eager
# inference does.
_GRAPH_FOLDS: Dict[int, Tuple[EvalFold, weakref.finalize]] = {}  # id of the conv weight -> (its fold, its finalizer)


def graph_fold(tensors, eps: float, dense: bool) -> EvalFold:
    """cached_fold for the ops of compiled graphs, keyed by the conv weight's identity (_refreshed checks the
    other five's); an entry goes when its weight is freed, or with clear_folds."""
    key = id(tensors[0])
    entry = _GRAPH_FOLDS.get(key)
    old = entry[0] if entry is not None else None
    fold = _refreshed(old, tensors, eps, dense)
    if fold is not old:
        finalizer = entry[1] if entry is not None else weakref.finalize(tensors[0], _GRAPH_FOLDS.pop, key, None)
        _GRAPH_FOLDS[key] = (fold, finalizer)
    return fold


def _registered(conv: nn.Conv2d, bn: _BatchNorm) -> bool:
    """The six tensors a fold reads are the modules' registered parameters and buffers: not a weight that a
    parametrization or pruning recomputes per call (a new tensor each time: nothing to cache)."""
    return ("weight" in conv._parameters and "bias" in conv._parameters and "weight" in bn._parameters
            and "bias" in bn._parameters and "running_mean" in bn._buffers and "running_var" in bn._buffers)


def _output_layout(x: Tensor, weight: Tensor, residual: Optional[Tensor], act: Optional[str], stride, padding,
                   dilation, kind: str) -> Tuple[list, Tuple[int, ...]]:
    """The shape of the conv's output and the strides pycnn::eval_conv_bn_act gives it, the same for the real op
    and its fake: those folded_forward's kernels give, so that no copy is needed. oneDNN's fused conv (its packed
    weight) and the matrix product always give channels_last; aten's conv channels_last where the input's or the
    weight's strides suggest it (PyTorch's rule: a one-channel input, whose strides are ambiguous, into a
    channels_last model's stem gives channels_last); pycnn's depthwise and grouped kernels keep their input's
    memory format."""
    onednn = _folds_weights(kind) and _onednn_path(x, weight, residual, act, stride)
    key = (tuple(stride), tuple(padding), tuple(dilation), kind, onednn)
    if all(type(d) is int for t in (x, weight) for d in (*t.shape, *t.stride())):  # (symbolic sizes: not cached)
        shape, strides = _cached_layout(tuple(x.shape), x.stride(), tuple(weight.shape), weight.stride(), *key)
    else:
        shape, strides = _layout(x, weight, *key)
    return list(shape), strides


@functools.lru_cache(maxsize=1024)  # a compiled graph's layer pays ~7 us a call computing it, ~1 us cached
def _cached_layout(x_shape, x_strides, w_shape, w_strides, stride, padding, dilation, kind: str, onednn: bool):
    meta = functools.partial(torch.empty_strided, device="meta")
    return _layout(meta(x_shape, x_strides), meta(w_shape, w_strides), stride, padding, dilation, kind, onednn)


def _layout(x: Tensor, weight: Tensor, stride, padding, dilation, kind: str, onednn: bool):
    n, _, h, w = x.shape
    c, _, kh, kw = weight.shape
    h = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    w = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    hs, ws, cs = max(h, 1), max(w, 1), max(c, 1)  # as torch strides empty dimensions
    if not _folds_weights(kind):
        channels_last = ops.kernel_memory_format(x) == torch.channels_last
    else:
        gemm = kind == "gemm" and _gemm_shapes(x, weight, stride, padding, dilation,
                                               x.shape[1] // max(weight.shape[1], 1))
        channels_last = onednn or gemm or torch.channels_last in (suggest_memory_format(x),
                                                                  suggest_memory_format(weight))
    if channels_last:
        return (n, c, h, w), _channels_last_strides(c, h, w)
    return (n, c, h, w), (cs * hs * ws, hs * ws, ws, 1)


def _eval_conv_bn_act(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding,
                      dilation, groups, kind, act, residual):
    fold = graph_fold((weight, bias, bn_weight, bn_bias, running_mean, running_var), eps, _folds_weights(kind))
    y = folded_forward(x, fold, weight, (stride, padding, dilation, groups), kind, act, residual)
    shape, strides = _output_layout(x, weight, residual, act, stride, padding, dilation, kind)
    return y if y.stride() == strides else y.new_empty_strided(shape, strides).copy_(y)


def _eval_plan(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding, dilation,
               groups, kind, act, residual):
    """pycnn::eval_conv_bn_act's plan for calls like this one, which its C++ side (csrc/cpu/eval_conv.cpp) keeps
    until one of the six tensors changes: ([(op name, overload, arguments, the positions of x (the first op's
    input, the previous op's output after), residual and the conv weight in them (-1: absent; the C++ side fills
    them in per call)) per op], the output's strides); None where each call runs _eval_conv_bn_act in Python (a
    residual of another dtype)."""
    if residual is not None and residual.dtype != x.dtype:
        return None
    fold = graph_fold((weight, bias, bn_weight, bn_bias, running_mean, running_var), eps, _folds_weights(kind))
    # pycnn's kernels take the weight in x's dtype (folded_forward's cast): a cast one is the plan's own
    conv_weight = weight if _folds_weights(kind) else _cast(weight, x.dtype)
    calls, with_epilogue = _folded_calls(x, fold, conv_weight, (stride, padding, dilation, groups), kind, act,
                                         residual)
    if not with_epilogue:  # folded_forward's epilogue, in place
        inplace = ACTIVATIONS[act].aten_inplace if act not in (None, "none") else None
        if act not in (None, "none") and inplace is None:
            return None
        if residual is not None:
            calls.append((torch.ops.aten.add_.Tensor, [_PREVIOUS, residual, 1]))
        if inplace is not None:
            calls.append((getattr(torch.ops.aten, inplace[0]).default, [_PREVIOUS, *inplace[1]]))

    def position(args, t):
        # a residual that is x itself is found past x's own position
        return next((i for i, a in enumerate(args) if i > 0 and a is t), -1) if t is not None else -1
    steps = [(op._schema.name, "" if op._overloadname == "default" else op._overloadname, args,
              next(i for i, a in enumerate(args) if a is (x if k == 0 else _PREVIOUS)),
              position(args, residual), position(args, weight)) for k, (op, args) in enumerate(calls)]
    return steps, list(_output_layout(x, weight, residual, act, stride, padding, dilation, kind)[1])


def _eval_conv_bn_act_fake(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, stride, padding,
                           dilation, groups, kind, act, residual):
    return x.new_empty_strided(*_output_layout(x, weight, residual, act, stride, padding, dilation, kind))


def _eval_mbconv(x, pairs, eps, stride, act, residual, se_reduce_weight, se_reduce_bias, se_expand_weight,
                 se_expand_bias, se_act):
    folds = [graph_fold(pairs[k:k + 6], e, True) for k, e in zip(range(0, len(pairs), 6), eps)]
    return _mbconv_from_folds(x, folds, (stride, act, residual, se_reduce_weight, se_reduce_bias, se_expand_weight,
                                         se_expand_bias, se_act))


def _eval_mbconv_fake(x, pairs, eps, stride, act, residual, se_reduce_weight, se_reduce_bias, se_expand_weight,
                      se_expand_bias, se_act):
    weights = pairs[0::6]  # the folded weights have the conv weights' shapes: pycnn::mbconv_forward's fake checks
    expand = (weights[0], None) if len(weights) == 3 else (None, None)
    return torch.ops.pycnn.mbconv_forward(x, *expand, weights[-2], None, weights[-1], None, stride, act, residual,
                                          se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, se_act)


# pycnn::eval_conv_bn_act: schema in csrc/ops.cpp, CPU kernel in C++ (csrc/cpu/eval_conv.cpp) with its plans from
# _eval_plan and, where there is none, the call run by _eval_conv_bn_act (set at the end of this module)
torch.library.register_fake("pycnn::eval_conv_bn_act", _eval_conv_bn_act_fake)
# Plain library ops (a Python custom_op's wrapper layers cost ~35 us a call against the dispatcher's ~9 us); no
# autograd kernel: only called where autograd has nothing to record
_LIBRARY = torch.library.Library("pycnn", "FRAGMENT")
# pairs: (conv weight, conv bias, bn weight, bn bias, running mean, running var) per conv, expand (if any),
# depthwise, project; eps: each BatchNorm's
_LIBRARY.define("eval_mbconv(Tensor x, Tensor?[] pairs, float[] eps, int stride, str act, bool residual, "
                "Tensor? se_reduce_weight, Tensor? se_reduce_bias, Tensor? se_expand_weight, Tensor? se_expand_bias, "
                "str se_act) -> Tensor")
_LIBRARY.impl("eval_mbconv", _eval_mbconv, "CPU")
torch.library.register_fake("pycnn::eval_mbconv", _eval_mbconv_fake, lib=_LIBRARY)


class GraphFolds:
    """Whether the eval layers of the graph dynamo traces call the cached-fold ops: Network.forward sets
    `cached` while tracing a graph that holds the allocator scope (pycnn.allocator; CPU inference, first
    activations of 1.5 MiB and more). Without the scope the ops' outputs come from glibc on every call (faults);
    before the op ran in C++ its dispatch (~10 us a layer) outweighed the fold at batch 1, 224x224 (fresh
    processes, compiled torchvision = 1: RegNetX-400MF 0.87x with the ops against 0.93-0.94x with the fold in the
    graph, EfficientNet-B0 1.00x against 1.08-1.14x); pycnn.allocator gives today's figures. A plain object:
    dynamo traces an attribute of one (of a threading.local, not)."""

    def __init__(self):
        self.cached = False

    @contextlib.contextmanager
    def set(self, cached: bool):
        previous, self.cached = self.cached, cached
        try:
            yield
        finally:
            self.cached = previous


GRAPH_FOLDS = GraphFolds()


def _in_cpu_graph(x: Tensor) -> bool:
    """torch.compile traces a graph (not torch.export's, nor jit's) that runs on the CPU and holds the allocator
    scope (GRAPH_FOLDS): its eval layers call the cached-fold ops (pycnn::eval_conv_bn_act, pycnn::eval_mbconv)."""
    return (torch.compiler.is_compiling() and GRAPH_FOLDS.cached and not exporting()
            and not torch.jit.is_tracing() and x.device.type == "cpu")


def gemm_applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """A plain 1x1, stride-1, unpadded, ungrouped conv of a channels_last CPU tensor of the weight's dtype,
    outside autocast: the pixels of x are the rows of an [N*H*W, C] matrix as it lies in memory, so the conv is
    one matrix product and its backward two. Plain: conv(x) would run nn.Conv2d.forward and nothing else (no
    subclass or parametrization, no hooks: pruning and weight_norm work through them)."""
    return (type(conv) is nn.Conv2d and not _hooked(conv) and x.device.type == "cpu" and _autocast_dtype(x) is None
            and _gemm_shapes(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups))


def _hooked(m: nn.Module) -> bool:
    """Forward or backward hooks on m, or on every module."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


class _Conv1x1AsGemm(torch.autograd.Function):
    """y = x W^T (+ b) over the pixels of a channels_last x (gemm_applies): forward one matrix product, backward
    one for the input's gradient and one for the weight's, each only when needed. MKL's products beat oneDNN's
    1x1 convolution on small wide maps (RegNetX-400MF's 400->400 at 7x7, batch 8: 1.2x forward+backward), not on
    large narrow ones: the dispatch races it (tools/conv1x1_gemm_bench.py)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        matrix = weight.reshape(weight.size(0), c)
        y = rows.mm(matrix.t()) if bias is None else torch.addmm(bias, rows, matrix.t())
        ctx.save_for_backward(x, weight)
        # channels_last (where the input is also contiguous, C or H*W being 1, the conv's output is NCHW: the same
        # values in the same memory order, other strides)
        return y.view(n, h, w, weight.size(0)).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, weight.size(0))  # a copy only if grad is not channels_last
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_rows.mm(weight.reshape(weight.size(0), c)).view(n, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_rows.t().mm(x.permute(0, 2, 3, 1).reshape(-1, c)).view_as(weight)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def conv1x1_as_gemm(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """conv(x) for a conv and input that gemm_applies to, as matrix products."""
    return _Conv1x1AsGemm.apply(x, conv.weight, conv.bias)


def _macs(x: Tensor, w: Tensor, stride) -> int:
    """Multiply-adds of the convolution (output pixels estimated from the input's, over the strides)."""
    return (x.shape[0] * (x.shape[2] // stride[0]) * (x.shape[3] // stride[1])) * w.numel()


_MAX_PACKS = 8  # packed weights kept per layer (one per input shape and layout seen)


def _packed(fold: EvalFold, x: Tensor, geometry) -> Tensor:
    """fold.weight reordered once into oneDNN's blocked format for inputs like x (as inductor's freezing does);
    reordering on every call is what an unpacked weight costs."""
    key = (tuple(x.shape), x.is_contiguous())
    packed = fold.packed.get(key)
    if packed is None:
        if len(fold.packed) >= _MAX_PACKS:
            fold.packed.clear()
        with torch.inference_mode(False), torch.no_grad(), allocator.outside_scopes():
            stride, padding, dilation, groups = geometry
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                fold.weight, list(padding), list(stride), list(dilation), groups, list(x.shape))
        fold.packed[key] = packed
    return packed


# oneDNN's fused convolution (the one inductor uses on the CPU): the activation, and a residual add followed by
# relu, run in the convolution's epilogue. name -> (unary attr, scalars).
_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_ACTS = {None: ("none", []), "none": ("none", []),
                **{a.name: (a.onednn[0], list(a.onednn[1])) for a in ACTIVATIONS.values() if a.onednn}}


def _onednn_takes(x: Tensor, w: Tensor, residual: Optional[Tensor], act: Optional[str]) -> bool:
    """Whether oneDNN's fused convolution computes this conv and epilogue: on the CPU, in float32."""
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.dim() == 4
            and act in _ONEDNN_ACTS and (residual is None or act in (None, "none", "relu")))


def _onednn_fusable(x: Tensor, w: Tensor, residual: Optional[Tensor], act: Optional[str]) -> bool:
    """_onednn_takes, in inference (it records no autograd)."""
    return _onednn_takes(x, w, residual, act) and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))


def _onednn_path(x: Tensor, w: Tensor, residual: Optional[Tensor], act: Optional[str], stride) -> bool:
    """Whether folded_forward (inference only) runs a dense conv on oneDNN's fused convolution: it takes it, and it
    is big enough. (Whatever the grad mode: pycnn::eval_conv_bn_act's fake, which decides its layout by it, may be
    traced with it on.)"""
    return _onednn_takes(x, w, residual, act) and _macs(x, w, stride) >= ONEDNN_MIN_MACS


def _onednn_conv_act(x, w, b, geometry, residual, act):
    op, args = _onednn_call(x, w, b, geometry, residual, act)
    return op(*args)


def _onednn_call(x, w, b, geometry, residual, act):
    """(op, arguments) of oneDNN's fused conv: act(conv(x, w) + b [+ residual])."""
    unary, scalars = _ONEDNN_ACTS[act]
    stride, padding, dilation, groups = geometry
    geometry = [list(padding), list(stride), list(dilation), groups]
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise.default, [x, w, b, *geometry, unary, scalars, ""]
    return torch.ops.mkldnn._convolution_pointwise.binary, [x, residual.to(x.dtype), w, b, *geometry, "add", 1.0,
                                                            None if unary == "none" else unary, [], ""]


def squeeze_excite(se: nn.Module, x: Tensor, act: str, post_act: Optional[str], residual: Optional[Tensor] = None,
                   kernel: str = "pycnn") -> Tensor:
    """post_act(x * sigmoid(fc2(act(fc1(mean_hw(x))))) [+ residual]); `se` holds fc1 and fc2 (1x1 convs)."""
    if kernel == "torch":
        y = se(x)
        return activation(y + residual if residual is not None else y, post_act)
    x = _cast(x, _autocast_dtype(x))
    fc1, fc2 = se.fc1, se.fc2
    args = (x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    kwargs = dict(act=act, post_act=post_act or "none", residual=_cast(residual, x.dtype))
    if _inference(args + (residual,)):
        with torch._C._AutoDispatchBelowAutograd():  # nothing to record: skip the op's Python autograd layer
            return ops.se(*args, **kwargs)
    return ops.se(*args, **kwargs)


# -------------------------------------------------------------------------------- the inverted-residual block

def mbconv_fusable(modules, x: Tensor, residual: Optional[Tensor], se: Optional[nn.Module] = None) -> bool:
    """Whether pycnn.mbconv can run the block (conv, bn pairs in order; `se` the SqueezeExcite between the
    depthwise and the project conv, if any) on x: eval BatchNorms, no autograd to record, a device and dtype
    its kernels take (opspec.MBCONV_DTYPES) without autocast, zero padding, and a residual (if any) that is x
    itself. Graphs torch.compile traces run it too; exported ones (torch.export, ONNX) keep the parts."""
    if torch.jit.is_tracing() or exporting():
        return False
    convs, bns = modules[0::2], modules[1::2]
    if not all(runs_on_pycnn(bn) and not bn.training and bn.running_mean is not None for bn in bns):
        return False
    if not ops.mbconv_kernel_takes(x) or _autocast_dtype(x) is not None:
        return False
    # a graph dynamo traces has no data pointers to compare: there the shortcut must be x itself (real tensors,
    # also those of a measurement while tracing, compare by data pointer: dispatch.measure detaches each input)
    if residual is not None and not (residual is x if torch.compiler.is_dynamo_compiling()
                                     else _same_tensor(residual, x)):
        return False
    se_params = list(_se_params(se)) if se is not None else []
    if not all(c.padding_mode == "zeros" and c.weight.dtype == x.dtype for c in convs) \
            or any(t is not None and t.dtype != x.dtype for t in se_params):
        return False
    return _no_autograd([x] + [_param(m, n) for m in modules for n in ("weight", "bias")] + se_params)


def _se_params(se: nn.Module) -> tuple:
    """(fc1.weight, fc1.bias, fc2.weight, fc2.bias): pycnn.mbconv's SE arguments."""
    return tuple(_param(fc, n) for fc in (se.fc1, se.fc2) for n in ("weight", "bias"))


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """a and b view the same values (the block's identity shortcut, perhaps detached by dispatch.measure)."""
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
                      and a.dtype == b.dtype)


def mbconv_block(modules, x: Tensor, act: str, stride: int, residual: bool, se: Optional[nn.Module] = None,
                 se_act: Optional[str] = None) -> Tensor:
    """The block (expand conv, bn, dw conv, bn, [se,] project conv, bn; or without expand) as one pycnn.mbconv
    call, every BatchNorm folded into its conv: from the cache (cached_fold); in a CPU graph torch.compile traces,
    one pycnn::eval_mbconv call (its own cache); in other traced graphs computed in the graph (the cache's checks
    are Python state). Only where mbconv_fusable."""
    pairs = list(zip(modules[0::2], modules[1::2]))
    se_args = _se_params(se) if se is not None else (None,) * 4
    tail = (stride, act, residual, *se_args, se_act or "none")
    if _in_cpu_graph(x) and all(_registered(conv, bn) for conv, bn in pairs):
        tensors = [t for conv, bn in pairs for t in fold_tensors(conv, bn)]
        return torch.ops.pycnn.eval_mbconv(x, tensors, [bn.eps for _, bn in pairs], *tail)
    if torch.compiler.is_compiling():
        folds = [fold_into_weights(conv.weight, *fold_bn(conv, bn)) for conv, bn in pairs]
        expand = folds[0] if len(folds) == 3 else (None, None)
        return torch.ops.pycnn.mbconv_forward(x, *expand, *folds[-2], *folds[-1], *tail)
    return _mbconv_from_folds(x, [cached_fold(conv, bn, dense=True) for conv, bn in pairs], tail)


def _mbconv_from_folds(x: Tensor, folds, tail) -> Tensor:
    """pycnn.mbconv below autograd with each conv's folded weight and bias (EvalFolds: expand if any, depthwise,
    project); tail: stride, act, residual, the SE arguments."""
    expand = (folds[0].weight, folds[0].bias) if len(folds) == 3 else (None, None)
    # the folds' tensors are their own, never edited in place: the kernel keeps their layouts (its 1x1 weights'
    # GEMM panels cost as much as a late block's products at batch 1) until they are replaced or freed
    with torch._C._AutoDispatchBelowAutograd(), _C._WeightFormsScope():
        return torch.ops.pycnn.mbconv_forward(x, *expand, folds[-2].weight, folds[-2].bias, folds[-1].weight,
                                              folds[-1].bias, *tail)


# pycnn::eval_conv_bn_act's Python side: the plans of its C++ kernel, the op where there is none
_C._eval_conv_set_python(_eval_plan, _eval_conv_bn_act, _MAX_PACKS)
