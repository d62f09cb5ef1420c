"""pycnn.dwconv / DepthwiseConvBNAct2d against F.conv2d(groups=C) + scale/bias + activation (PyTorch is the
reference)."""

import collections
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycnn
from pycnn import ops
from pycnn.nn import DepthwiseConvBNAct2d
from kernel_checks import (HALF_DTYPES, LAYOUTS, REFERENCE_ACT, assert_half_precision_rule, make_input, max_errors,
                           reference_epilogue)

ACTS = list(REFERENCE_ACT)

# (N, C, H, W, k, stride, padding, dilation): channels not a multiple of 8, H/W smaller than the kernel,
# odd sizes, stride 2 with odd sizes, batch 1, dilation 2, k 1, asymmetric stride/padding.
CASES = [
    (2, 8, 9, 9, 3, 1, 1, 1),
    (1, 13, 7, 5, 5, 2, 2, 1),
    (2, 19, 3, 2, 7, 1, 3, 1),
    (1, 6, 11, 10, 3, 2, 2, 2),
    (3, 35, 6, 7, 5, 1, 4, 2),
    (2, 40, 5, 6, 1, 1, 0, 1),
    (1, 33, 9, 8, 7, 2, 0, 1),
    (2, 10, 7, 6, 3, (2, 1), (1, 0), (1, 2)),
]


def output_shape(case):
    n, c, h, w, k, s, p, d = case
    s, p, d = [(v, v) if isinstance(v, int) else v for v in (s, p, d)]
    return (n, c, (h + 2 * p[0] - d[0] * (k - 1) - 1) // s[0] + 1, (w + 2 * p[1] - d[1] * (k - 1) - 1) // s[1] + 1)


def make_args(case, layout, dtype=torch.float64, device="cpu", affine=True, with_residual=False, seed=0):
    n, c, h, w, k, s, p, d = case
    x = make_input((n, c, h, w), layout, dtype, device, seed)
    weight = make_input((c, 1, k, k), "nchw", dtype, device, seed + 1, scale=0.5)
    scale = make_input((c,), "nchw", torch.float32, device, seed + 2).abs_().add_(0.5) if affine else None
    bias = make_input((c,), "nchw", torch.float32, device, seed + 3) if affine else None
    r = make_input(output_shape(case), layout, dtype, device, seed + 4) if with_residual else None
    return x, weight, scale, bias, r


def reference(x, weight, scale, bias, residual, stride, padding, dilation, act):
    z = F.conv2d(x, weight, None, stride, padding, dilation, groups=x.size(1))
    return reference_epilogue(z, scale, bias, residual, act)


def outputs_and_grads(fn, tensors, grad_seed=7):
    """fn(*tensors) and the gradients of every tensor (None entries skipped) for a fixed output gradient."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y = fn(*leaves)
    g = make_input(tuple(y.shape), "nchw", y.dtype, y.device, grad_seed)
    params = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, params, g)
    return [y] + list(grads)


def ours_fn(case, act):
    _, _, _, _, _, s, p, d = case
    return lambda x, w, sc, b, r: ops.dwconv(x, w, sc, b, stride=s, padding=p, dilation=d, act=act, residual=r)


def ref_fn(case, act):
    _, _, _, _, _, s, p, d = case
    return lambda x, w, sc, b, r: reference(x, w, sc, b, r, s, p, d, act)


NAMES = ["output", "grad_input", "grad_weight", "grad_scale", "grad_bias", "grad_residual"]


def assert_all_close(mine, ref, names, rtol, atol):
    """Each result within rtol/atol of the float64 reference, rtol no tighter than the result's own rounding
    (float32 scale and bias beside a float64 input get float32 gradients, as autograd gives a parameter)."""
    assert len(mine) == len(ref)
    for name, a, b in zip(names, mine, ref):
        torch.testing.assert_close(a.double().cpu(), b.double().cpu(), msg=lambda m: f"{name}: {m}",
                                   rtol=max(rtol, torch.finfo(a.dtype).eps), atol=atol)


@pytest.mark.parametrize("case,layout,act,affine,with_residual", [
    (case, layout, ACTS[(i + j) % len(ACTS)], affine, res)
    for i, case in enumerate(CASES) for layout in LAYOUTS for j in range(2)
    for affine, res in [(True, False), (False, True)] + ([(True, True)] if j == 0 else [])])
def test_matches_conv2d_groups(case, layout, act, affine, with_residual):
    args = make_args(case, layout, torch.float32, affine=affine, with_residual=with_residual)
    mine = outputs_and_grads(ours_fn(case, act), args)
    ref = outputs_and_grads(ref_fn(case, act), [t.double() if t is not None else None for t in args])
    names = [n for n, t in zip(NAMES, (True, True, True, affine, affine, with_residual)) if t]
    assert_all_close(mine, ref, names, rtol=1e-5, atol=2e-5)
    assert mine[0].dtype == torch.float32
    if layout != "strided":  # the output keeps the input's memory format
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert mine[0].is_contiguous(memory_format=fmt)


# The CPU kernels' register-blocked path (csrc/cpu/dwconv_kernels.h: k 3/5/7, column stride 1 or 2, column
# dilation 1) needs rows with several interior pixels: blocks of 8/6/4 pixels plus single ones, 20 channels
# (whole vectors plus a tail in float32 and float64), padding above k - 1 (dx by the generic loop). Both
# backward paths: the identity epilogue (no scale, bias, residual or act: dy is the gradient of the conv,
# the training case) and the full one.
REGISTER_BLOCKED_CASES = [
    (2, 20, 6, 21, 3, 1, 1, 1),
    (1, 20, 5, 18, 3, 2, 1, 1),
    (1, 20, 7, 17, 5, 2, 2, 1),
    (1, 20, 9, 19, 7, 1, 3, 1),
    (1, 20, 6, 15, 3, 1, 3, 1),
    # Stride 2 with interior blocks (forward and dx), k 7, padding 0 and odd widths, widths below k.
    (1, 24, 5, 40, 3, 2, 1, 1),
    (1, 20, 9, 23, 7, 2, 3, 1),
    (1, 20, 6, 16, 3, 2, 0, 1),
    (2, 16, 5, 4, 5, 2, 1, 1),
    (1, 16, 7, 6, 7, 1, 3, 1),
]


@pytest.mark.parametrize("case", REGISTER_BLOCKED_CASES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("identity", [True, False])
def test_register_blocked_rows(case, layout, dtype, identity):
    args = [t.to(dtype) if t is not None and t.dim() == 1 else t  # scale and bias in float64 too
            for t in make_args(case, layout, dtype, affine=not identity, with_residual=not identity)]
    act = "none" if identity else "relu6"
    mine = outputs_and_grads(ours_fn(case, act), args)
    ref = outputs_and_grads(ref_fn(case, act), [t.double() if t is not None else None for t in args])
    names = ["output", "grad_input", "grad_weight"] + ([] if identity else ["grad_scale", "grad_bias", "grad_residual"])
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert_all_close(mine, ref, names, **tol)


@pytest.mark.parametrize("case,act,layout", [
    ((1, 3, 5, 6, 3, 1, 1, 1), "silu", "nchw"),
    ((2, 2, 6, 5, 5, 2, 2, 1), "hardswish", "channels_last"),
    ((1, 3, 7, 7, 3, 2, 2, 2), "relu6", "channels_last"),
    ((1, 2, 5, 6, 3, (2, 1), (1, 0), (1, 2)), "none", "nchw"),
])
def test_gradcheck_float64(case, act, layout):
    x, w, sc, b, r = make_args(case, layout, torch.float64, with_residual=True)
    sc, b = sc.double(), b.double()
    _, _, _, _, _, s, p, d = case
    f = lambda x, w, sc, b, r: ops.dwconv(x, w, sc, b, stride=s, padding=p, dilation=d, act=act, residual=r)
    inputs = [t.requires_grad_() for t in (x, w, sc, b, r)]
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("case,layout,act,affine,with_residual", [
    ((2, 5, 4, 5, 3, 2, 1, 1), "nchw", "relu", True, True),
    (CASES[7], "channels_last", "hardswish", False, False),
])
def test_opcheck(case, layout, act, affine, with_residual):
    x, w, sc, b, r = make_args(case, layout, torch.float32, affine=affine, with_residual=with_residual)
    _, _, _, _, _, s, p, d = case
    s, p, d = [ops._pair(v, "", "dwconv") for v in (s, p, d)]
    x.requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.pycnn.dwconv_forward.default, (x, w, sc, b, r, s, p, d, act))
    dy = make_input(output_shape(case), layout, torch.float32, seed=9)
    torch.library.opcheck(torch.ops.pycnn.dwconv_backward.default,
                          (dy, x.detach(), w.detach(), sc, b, r, s, p, d, act),
                          test_utils=("test_schema", "test_faketensor"))


def test_float64_and_bias_only():
    case = CASES[2]
    args = make_args(case, "channels_last", torch.float64, with_residual=True)
    args = (args[0], args[1], None, args[3].double(), args[4])
    mine = outputs_and_grads(ours_fn(case, "silu"), args)
    ref = outputs_and_grads(ref_fn(case, "silu"), args)
    assert_all_close(mine, ref, ["output", "grad_input", "grad_weight", "grad_bias", "grad_residual"],
                     rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------- half precision ----

def half_precision_errors(dtype, device, case=(2, 24, 10, 9, 3, 2, 1, 1), act="silu", layout="channels_last"):
    """Max error against a float64 reference, for the output and every gradient: ours in `dtype`,
    PyTorch's own composition in `dtype` (a fixed, bounded output gradient)."""
    args = make_args(case, layout, torch.float64, device, with_residual=True)

    def run(fn, dt):
        ts = [t.to(dt) if t is not None and i in (0, 1, 4) else t for i, t in enumerate(args)]
        if dt == torch.float64:
            ts[2], ts[3] = ts[2].double(), ts[3].double()
        return outputs_and_grads(fn, ts)

    truth = run(ref_fn(case, act), torch.float64)
    mine = run(ours_fn(case, act), dtype)
    theirs = run(ref_fn(case, act), dtype)
    return max_errors(mine, truth), max_errors(theirs, truth)



@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_rule_cpu(dtype, layout):
    mine, theirs = half_precision_errors(dtype, "cpu", layout=layout)
    assert_half_precision_rule(NAMES, mine, theirs, dtype)


# NCHW edges of the plane kernels (dwconv_nchw_kernels.h): W and H smaller than the dilated kernel with
# stride 2 (the phase planes are mostly padding), a 1-pixel input, asymmetric stride/dilation/padding,
# k 7 with dilation 2, planes wider than a register block.
NCHW_EDGE_CASES = [
    (2, 5, 6, 3, 5, 2, 4, 2),
    (1, 3, 2, 1, 7, 2, 6, 2),
    (1, 2, 1, 1, 3, 2, 1, 1),
    (2, 3, 9, 4, 3, (1, 2), (0, 2), (2, 1)),
    (1, 4, 15, 13, 7, 2, 6, 2),
    (1, 2, 5, 70, 3, 2, 1, 1),
]


@pytest.mark.parametrize("case", NCHW_EDGE_CASES)
@pytest.mark.parametrize("act,affine,with_residual", [("silu", True, True), ("none", True, False),
                                                      ("none", False, True), ("relu6", False, False)])
def test_nchw_edges_float64(case, act, affine, with_residual):
    args = make_args(case, "nchw", torch.float64, affine=affine, with_residual=with_residual)
    args = tuple(t.double() if t is not None else None for t in args)
    mine = outputs_and_grads(ours_fn(case, act), args)
    ref = outputs_and_grads(ref_fn(case, act), args)
    names = [n for n, t in zip(NAMES, (True, True, True, affine, affine, with_residual)) if t]
    assert_all_close(mine, ref, names, rtol=1e-10, atol=1e-10)
    assert mine[0].is_contiguous()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_backward_sums_without_scale_and_bias(layout, act):
    """dwconv_backward returns grad_scale = sum(dz * conv(x)) and grad_bias = sum(dz) per channel even
    when scale and bias are absent (the NCHW kernel gets grad_scale from the weight gradient when there is
    no activation, without recomputing the convolution)."""
    case = (2, 3, 8, 7, 3, 2, 1, 1)
    x, w, _, _, _ = make_args(case, layout, torch.float64)
    dy = make_input(output_shape(case), layout, torch.float64, seed=5)
    _, _, _, _, _, s, p, d = case
    geo = [[s, s], [p, p], [d, d]]
    gx, gw, gs, gb, gr = torch.ops.pycnn.dwconv_backward(dy, x, w, None, None, None, *geo, act)
    u = F.conv2d(x, w, None, s, p, d, groups=x.size(1))
    dz = dy * (u > 0) if act == "relu" else dy
    torch.testing.assert_close(gs, (dz * u).sum((0, 2, 3)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gb, dz.sum((0, 2, 3)), rtol=1e-10, atol=1e-10)
    assert gr is None


# ------------------------------------------------------------------------------------ errors ----

def test_errors_name_the_argument():
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(4, 1, 3, 3)
    op = torch.ops.pycnn.dwconv_forward
    geo = ([1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="input must be 4-D"):
        op(torch.randn(4, 6, 6), w, None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="input must be float32, float16, bfloat16 or float64"):
        op(torch.ones(2, 4, 6, 6, dtype=torch.int32), w, None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match=r"weight must have shape \(C, 1, k, k\) with C = 4"):
        op(x, torch.randn(4, 2, 3, 3), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match=r"weight must have shape \(C, 1, k, k\) with C = 4"):
        op(x, torch.randn(5, 1, 3, 3), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="kernel size must be odd and at most 7"):
        op(x, torch.randn(4, 1, 4, 4), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="kernel size must be odd and at most 7"):
        op(torch.randn(1, 4, 12, 12), torch.randn(4, 1, 9, 9), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="kernel size must be square"):
        op(x, torch.randn(4, 1, 3, 5), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="weight has dtype Double but input has dtype Float"):
        op(x, w.double(), None, None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="scale must be 1-D with 4 elements"):
        op(x, w, torch.ones(3), None, None, *geo, "relu")
    with pytest.raises(RuntimeError, match="bias must be 1-D with 4 elements"):
        op(x, w, None, torch.ones(4, 1), None, *geo, "relu")
    with pytest.raises(RuntimeError, match="residual must have the output's shape"):
        op(x, w, None, None, torch.randn(2, 4, 3, 3), *geo, "relu")
    with pytest.raises(RuntimeError, match="residual has dtype"):
        op(x, w, None, None, x.double(), *geo, "relu")
    with pytest.raises(RuntimeError, match="stride must be 1 or 2"):
        op(x, w, None, None, None, [3, 3], [1, 1], [1, 1], "relu")
    with pytest.raises(RuntimeError, match="dilation must be 1 or 2"):
        op(x, w, None, None, None, [1, 1], [1, 1], [3, 1], "relu")
    with pytest.raises(RuntimeError, match="padding must be non-negative"):
        op(x, w, None, None, None, [1, 1], [-1, 1], [1, 1], "relu")
    with pytest.raises(RuntimeError, match="is too small for kernel size 7"):
        op(torch.randn(1, 4, 3, 3), torch.randn(4, 1, 7, 7), None, None, None, [1, 1], [0, 0], [1, 1], "relu")
    with pytest.raises(RuntimeError, match="unknown activation 'tanh'"):
        op(x, w, None, None, None, *geo, "tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        ops.dwconv(x, w, act="tanh")
    with pytest.raises(RuntimeError, match="grad_output must have the output's shape"):
        torch.ops.pycnn.dwconv_backward(torch.randn(2, 4, 5, 5), x, w, None, None, None, *geo, "relu")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DepthwiseConvBNAct2d(4, 4)
    with pytest.raises(ValueError, match="unknown activation"):
        DepthwiseConvBNAct2d(4, 3, act="gelu")


# ----------------------------------------------------------------------------------- module ----

def reference_module(channels, k, stride, padding, dilation, bias, bn=True):
    layers = [("conv", nn.Conv2d(channels, channels, k, stride, padding, dilation, groups=channels, bias=bias))]
    if bn:
        layers.append(("bn", nn.BatchNorm2d(channels)))
    return nn.Sequential(collections.OrderedDict(layers))


def make_module_pair(channels, k, stride, dilation, act, bias=False, bn=True, device="cpu", dtype=torch.float32):
    ours = DepthwiseConvBNAct2d(channels, k, stride=stride, padding="same", dilation=dilation, act=act, bias=bias,
                                bn=bn).to(device=device, dtype=dtype)
    ref = reference_module(channels, k, stride, dilation * (k - 1) // 2, dilation, bias, bn).to(device=device,
                                                                                                 dtype=dtype)
    if bn:
        with torch.no_grad():
            ours.bn.weight.uniform_(0.5, 1.5)
            ours.bn.bias.uniform_(-0.5, 0.5)
            ours.bn.running_mean.uniform_(-0.3, 0.3)
            ours.bn.running_var.uniform_(0.5, 2.0)
    ref.load_state_dict(ours.state_dict())  # strict: same keys
    return ours, ref


def test_state_dict_keys_are_conv_bn_keys():
    for bias, bn in [(False, True), (True, True), (True, False)]:
        ours = DepthwiseConvBNAct2d(6, 5, bias=bias, bn=bn)
        ref = reference_module(6, 5, 1, 2, 1, bias, bn)
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert ours.conv.weight.shape == (6, 1, 5, 5)
        ours.load_state_dict(ref.state_dict())  # strict


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("k,stride,dilation,act,bias,layout", [
    (3, 1, 1, "relu6", False, "nchw"),
    (5, 2, 1, "silu", True, "channels_last"),
    (3, 2, 2, "hardswish", False, "channels_last"),
])
def test_module_matches_conv_bn_act(training, k, stride, dilation, act, bias, layout):
    channels = 12
    ours, ref = make_module_pair(channels, k, stride, dilation, act, bias=bias)
    ours.train(training)
    ref.train(training)
    x = make_input((2, channels, 9, 8), layout, torch.float32, seed=3)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = ours(xo)
    y_ref = REFERENCE_ACT[act](ref(xr))
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    tol = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(xo.grad, xr.grad, **tol)
    torch.testing.assert_close(ours.conv.weight.grad, ref.conv.weight.grad, **tol)
    torch.testing.assert_close(ours.bn.weight.grad, ref.bn.weight.grad, **tol)
    torch.testing.assert_close(ours.bn.bias.grad, ref.bn.bias.grad, **tol)
    if bias:
        torch.testing.assert_close(ours.conv.bias.grad, ref.conv.bias.grad, **tol)
    torch.testing.assert_close(ours.bn.running_mean, ref.bn.running_mean, **tol)
    torch.testing.assert_close(ours.bn.running_var, ref.bn.running_var, **tol)


def test_module_without_bn_and_with_residual():
    ours, ref = make_module_pair(7, 3, 1, 1, "relu", bias=True, bn=False)
    x = make_input((2, 7, 6, 5), "channels_last", torch.float32)
    r = make_input((2, 7, 6, 5), "channels_last", torch.float32, seed=4)
    torch.testing.assert_close(ours(x, r), F.relu(ref(x) + r), rtol=1e-5, atol=1e-5)
    bn_ours, bn_ref = make_module_pair(7, 3, 1, 1, "silu")
    for mode in (True, False):
        bn_ours.train(mode)
        bn_ref.train(mode)
        torch.testing.assert_close(bn_ours(x, r), F.silu(bn_ref(x) + r), rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------------- CUDA ----

CUDA_CASES = CASES + [
    (4, 32, 28, 28, 3, 1, 1, 1),
    (2, 144, 28, 27, 3, 2, 1, 1),
    (2, 240, 14, 14, 5, 1, 2, 1),
    (1, 672, 15, 15, 5, 2, 2, 1),
    (2, 64, 16, 16, 7, 1, 6, 2),
]


@pytest.mark.cuda
@pytest.mark.parametrize("case,layout,act,affine,with_residual", [
    (case, layout, ACTS[i % len(ACTS)], i % 2 == 0, i % 3 == 0)
    for i, case in enumerate(CUDA_CASES) for layout in LAYOUTS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_conv2d_groups(case, layout, act, affine, with_residual, dtype):
    args = make_args(case, layout, dtype, "cuda", affine=affine, with_residual=with_residual)
    mine = outputs_and_grads(ours_fn(case, act), args)
    # The reference on the CPU: PyTorch's CUDA hardswish rounds 1/6 to float32 even in float64.
    ref = outputs_and_grads(ref_fn(case, act), [t.double().cpu() if t is not None else None for t in args])
    names = [n for n, t in zip(NAMES, (True, True, True, affine, affine, with_residual)) if t]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    # each result in the dtype autograd gives it (so its own rounding is the tolerance's floor)
    assert [t.dtype for t in mine] == [dtype] + [t.dtype for t in args if t is not None]
    assert_all_close(mine, ref, names, **tol)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("case", [(2, 24, 10, 9, 3, 2, 1, 1), (4, 96, 28, 28, 3, 1, 1, 1), (2, 40, 9, 9, 5, 1, 2, 1),
                                  (2, 20, 7, 7, 7, 1, 3, 1)])
def test_cuda_half_precision_rule(dtype, case):
    mine, theirs = half_precision_errors(dtype, "cuda", case=case)
    assert_half_precision_rule(NAMES, mine, theirs, dtype)


@pytest.mark.cuda
def test_cuda_module_and_opcheck_and_device_mismatch():
    ours, ref = make_module_pair(32, 3, 2, 1, "relu6", device="cuda")
    x = make_input((4, 32, 15, 15), "channels_last", torch.float32, "cuda")
    for mode in (True, False):
        ours.train(mode)
        ref.train(mode)
        torch.testing.assert_close(ours(x), F.relu6(ref(x)), rtol=1e-4, atol=1e-4)
    x, w, sc, b, r = make_args(CASES[1], "channels_last", torch.float32, "cuda", with_residual=True)
    geo = ([2, 2], [2, 2], [1, 1])
    torch.library.opcheck(torch.ops.pycnn.dwconv_forward.default,
                          (x.requires_grad_(), w.requires_grad_(), sc, b, r, *geo, "silu"))
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        torch.ops.pycnn.dwconv_forward(x, w.cpu(), sc, b, r, *geo, "silu")
    with pytest.raises(RuntimeError, match="scale is on cpu but input is on cuda"):
        torch.ops.pycnn.dwconv_forward(x, w, sc.cpu(), b, r, *geo, "silu")
