"""pycnn.gconv / GroupedConvBNAct2d against F.conv2d(groups=g) + scale/bias + activation (PyTorch is the
reference)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pycnn import ops
from pycnn.nn import GroupedConvBNAct2d
from kernel_checks import (HALF_DTYPES, LAYOUTS, REFERENCE_ACT, assert_half_precision_rule, make_input, max_errors,
                           reference_epilogue)


# (N, C_in, C_out, H, W, k, stride, padding, groups)
CASES = [
    (2, 8, 8, 5, 5, 3, 1, 1, 8),       # group width 1
    (2, 8, 12, 6, 7, 3, 2, 1, 4),      # group width 2, 3 outputs per group, stride 2
    (1, 9, 6, 5, 4, 3, 1, 1, 3),       # group width 3, batch 1
    (2, 16, 16, 7, 7, 3, 2, 1, 2),     # group width 8, stride 2 with odd sizes
    (1, 32, 32, 4, 5, 3, 1, 1, 2),     # group width 16
    (2, 6, 10, 2, 1, 3, 1, 1, 2),      # H, W smaller than the kernel
    (2, 20, 20, 9, 9, 1, 2, 0, 5),     # 1x1, stride 2, group width 4
    (1, 24, 48, 5, 5, 3, 1, 0, 3),     # no padding, 16 outputs per group
    (2, 34, 17, 3, 3, 3, 2, 1, 17),    # one output per group
    (1, 40, 40, 4, 6, 3, 1, (0, 1), 2),  # group width 20 (a T tile tail), asymmetric padding
    (1, 5, 7, 3, 3, 1, 1, 0, 1),       # ordinary (groups=1) 1x1 conv
    # the forward's staged input (blocks of 16 channels, several tiles of pixels a row)
    (1, 64, 64, 6, 30, 3, 1, 1, 2),    # group width 32: two whole blocks; a row of four tiles of 8
    (1, 32, 32, 4, 12, 3, 1, 1, 2),    # a row of one tile of 12 pixels
    (1, 48, 48, 4, 23, 3, 2, 1, 2),    # stride 2, a block and a half, one tile of 12
    (2, 48, 48, 5, 27, 3, 2, 1, 2),    # group width 24, a block and a half, stride 2: two tiles (one of 14, avx512)
    (1, 36, 36, 4, 13, 3, 1, 1, 2),    # group width 18: a block and 2 channels
    (1, 32, 32, 3, 29, 1, 1, 0, 2),    # 1x1 at stride 1 (tap by tap), four tiles of 8
    (1, 32, 32, 4, 28, 3, 1, 1, 2),    # rows of two tiles of 14 (avx512; four of 8 elsewhere)
    (2, 48, 48, 3, 27, 3, 1, 1, 2),    # group width 24, tiles of 14 and 13
    (1, 32, 32, 3, 14, 1, 1, 0, 2),    # 1x1 tap by tap, one tile of 14
    (1, 32, 32, 4, 42, 3, 3, 1, 2),    # stride 3 (tap by tap, the stride read at run time), one tile of 14
    (1, 32, 32, 3, 56, 3, 2, 1, 2),    # stride 2, rows of two tiles of 14 (avx512)
    (3, 16, 16, 5, 9, 3, 1, 1, 1),     # one group, three images: threads' work starts inside an image
    # the weight gradient's three taps of a row together (avx512, group widths of a multiple of 8)
    (1, 32, 32, 5, 7, 3, 1, 2, 2),     # padding 2: two output columns at each edge read taps in the padding
    (2, 32, 16, 4, 6, 3, 1, (0, 1), 2),  # asymmetric padding, 16 inputs and 8 outputs per group
    # packed narrow groups (several whole groups a register: group width 2, 4 or 8, C_out a multiple of 16)
    (2, 64, 64, 7, 9, 3, 1, 1, 16),    # group width 4; a row of 9 is no whole number of tiles
    (1, 32, 32, 6, 11, 3, 2, 1, 4),    # group width 8, stride 2
    (2, 32, 32, 5, 5, 3, 1, 0, 16),    # group width 2, no padding
    (1, 48, 48, 4, 4, 1, 1, 0, 12),    # 1x1, group width 4, three 16-lane blocks
    (1, 16, 16, 9, 9, 3, 2, 1, 4),     # group width 4, one block, stride 2 with an odd size
    (1, 16, 16, 8, 8, 1, 2, 0, 4),     # 1x1 stride 2: input pixels no output reads (their gradient is zero)
    (1, 32, 32, 6, 6, 3, 2, 0, 8),     # no padding, even size, stride 2: the last row and column unread
    (1, 32, 32, 5, 6, 3, 1, (0, 1), 8),  # asymmetric padding
    (1, 16, 16, 5, 5, 3, 1, 2, 4),     # padding 2
    (1, 16, 16, 8, 8, 3, 3, 1, 8),     # stride 3, group width 2
]
# (act, with scale, with bias, with residual)
EPILOGUES = [("none", False, False, False), ("relu", True, True, False), ("silu", True, True, True),
             ("hardswish", False, True, True), ("relu6", True, False, False)]


def out_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make_args(case, layout, scale, bias, residual, dtype=torch.float32, device="cpu", seed=0):
    n, c_in, c_out, h, w, k, s, p, groups = case
    ph, pw = pair(p)
    x = make_input((n, c_in, h, w), layout, dtype, device, seed)
    wt = make_input((c_out, c_in // groups, k, k), "nchw", dtype, device, seed + 1,
                     scale=(c_in // groups * k * k) ** -0.5)
    g = torch.Generator().manual_seed(seed + 2)
    sc = (torch.rand(c_out, generator=g) + 0.5).to(device) if scale else None
    b = (torch.randn(c_out, generator=g) * 0.3).to(device) if bias else None
    r = make_input((n, c_out, out_size(h, k, s, ph), out_size(w, k, s, pw)), layout, dtype, device,
                    seed + 3) if residual else None
    return x, wt, sc, b, r


def reference(x, w, scale, bias, residual, stride, padding, groups, act):
    return reference_epilogue(F.conv2d(x, w, None, stride, padding, 1, groups), scale, bias, residual, act)


def outputs_and_grads(fn, tensors, grad_seed=7):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y = fn(*leaves)
    g = torch.Generator().manual_seed(grad_seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(device=y.device, dtype=y.dtype)
    y.backward(dy)
    return [y] + [t.grad if t is not None else None for t in leaves]


def run_pair(case, layout, act, scale, bias, residual, dtype=torch.float32, device="cpu"):
    _, _, _, _, _, _, s, p, groups = case
    x, w, sc, b, r = make_args(case, layout, scale, bias, residual, dtype, device)
    ours = outputs_and_grads(lambda *a: ops.gconv(a[0], a[1], a[2], a[3], stride=s, padding=p, groups=groups,
                                                  act=act, residual=a[4]), [x, w, sc, b, r])
    ref = outputs_and_grads(lambda *a: reference(*a, s, pair(p), groups, act), [x, w, sc, b, r])
    return ours, ref


NAMES = ["output", "grad_input", "grad_weight", "grad_scale", "grad_bias", "grad_residual"]


def assert_all_close(ours, ref, **tol):
    for name, a, b in zip(NAMES, ours, ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}", **tol)


@pytest.mark.parametrize("case,layout,epilogue", list(itertools.product(CASES, LAYOUTS, EPILOGUES)))
def test_matches_conv2d_and_epilogue(case, layout, epilogue):
    act, scale, bias, residual = epilogue
    ours, ref = run_pair(case, layout, act, scale, bias, residual)
    assert_all_close(ours, ref, rtol=1e-4, atol=1e-4)
    if layout != "strided":  # the output keeps the input's memory format
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert ours[0].is_contiguous(memory_format=fmt) or ours[0].is_contiguous()


NAN_CASES = [(2, 64, 64, 7, 9, 3, 1, 1, 16), (1, 32, 32, 6, 11, 3, 2, 1, 4), (2, 8, 12, 6, 7, 3, 2, 1, 4),
             (1, 32, 32, 5, 7, 3, 1, 1, 2), (1, 48, 48, 7, 9, 3, 2, 1, 2)]  # (16 and 24 a group: the staged rows)


@pytest.mark.parametrize("case", NAN_CASES)
@pytest.mark.parametrize("where", ["input", "grad_output"])
def test_nan_propagates_as_in_pytorch(case, where):
    """A NaN input pixel, or a NaN in the output's gradient at a corner (whose taps reach into the padding), makes
    NaN exactly where F.conv2d's output and gradients have one (its group's channels only; padding taps add
    nothing, not zero times NaN), the packed narrow-group kernel, the per-group one and its row-taps forms alike.
    (Weights are taken finite: a padding column multiplies its zeros by the weight, so an infinite weight there gives
    NaN where oneDNN's convolution, which skips the padding, gives an infinity.)"""
    _, _, _, _, _, _, s, p, groups = case
    x, w, _, _, _ = make_args(case, "channels_last", False, False, False)
    if where == "input":
        x[0, 5, 2, 3] = float("nan")
    results = []
    for conv in (lambda a, b: ops.gconv(a, b, None, None, stride=s, padding=p, groups=groups),
                 lambda a, b: F.conv2d(a, b, None, s, p, 1, groups)):
        a, b = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y = conv(a, b)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
        if where == "grad_output":
            dy[0, 5, 0, 0] = float("nan")
        results.append([y, *torch.autograd.grad(y, (a, b), dy)])
    for name, a, b in zip(["output", "grad_input", "grad_weight"], *results):
        assert torch.equal(a.isnan(), b.isnan()), name
        torch.testing.assert_close(a.nan_to_num(), b.nan_to_num(), rtol=1e-4, atol=1e-4, msg=name)


def test_backward_without_saved_conv_recomputes_it():
    case = (2, 12, 12, 5, 5, 3, 1, 1, 3)
    x, w, sc, b, r = make_args(case, "nchw", True, True, True)
    args = (x, w, sc, b, r, [1, 1], [1, 1], 3, "silu")
    y, saved = torch.ops.pycnn.gconv_forward(*args, True)
    y2, nothing = torch.ops.pycnn.gconv_forward(*args, False)
    assert saved.shape == y.shape and nothing.numel() == 0
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    dy = torch.randn_like(y)
    with_saved = torch.ops.pycnn.gconv_backward(dy, x, w, sc, b, r, saved, [1, 1], [1, 1], 3, "silu")
    recomputed = torch.ops.pycnn.gconv_backward(dy, x, w, sc, b, r, nothing, [1, 1], [1, 1], 3, "silu")
    for a, c in zip(with_saved, recomputed):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
    # no scale and no activation: nothing is saved, ever
    _, saved = torch.ops.pycnn.gconv_forward(x, w, None, b, r, [1, 1], [1, 1], 3, "none", True)
    assert saved.numel() == 0


@pytest.mark.parametrize("case", [(2, 6, 6, 4, 5, 3, 2, 1, 3), (1, 4, 8, 3, 3, 3, 1, 1, 1),
                                  (2, 8, 4, 3, 4, 1, 1, 0, 4), (1, 6, 6, 2, 3, 3, 1, (1, 0), 2)])
@pytest.mark.parametrize("act", ["none", "relu6", "silu", "hardswish"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradcheck_float64(case, act, layout):
    _, _, _, _, _, _, s, p, groups = case
    x, w, sc, b, r = make_args(case, layout, True, True, True, dtype=torch.float64)
    sc, b = sc.double(), b.double()
    tensors = [t.requires_grad_() for t in (x, w, sc, b, r)]

    def f(x, w, sc, b, r):
        return ops.gconv(x, w, sc, b, stride=s, padding=p, groups=groups, act=act, residual=r)

    assert torch.autograd.gradcheck(f, tensors)


FLOAT64_CASES = [(1, 24, 24, 3, 14, 3, 1, 1, 3), (2, 48, 48, 4, 28, 3, 2, 1, 2), (1, 32, 16, 4, 13, 3, 1, (0, 1), 2),
                 (3, 16, 16, 5, 9, 3, 1, 1, 1)]


@pytest.mark.parametrize("case", FLOAT64_CASES)
def test_float64_matches_conv2d(case):
    """float64, against F.conv2d's own gradients, to 1e-10: group widths of 8 and 24, rows of 13, 14 and 28 pixels,
    threads' work split inside a group (3 groups) and inside an image. (float64 always runs the baseline variant,
    cpu/isa_kernels.h: avx512's 14-pixel tiles and row-taps weight gradient are float32 only; CASES test them.)"""
    ours, ref = run_pair(case, "channels_last", "relu", True, True, True, dtype=torch.float64)
    assert_all_close(ours, ref, rtol=1e-10, atol=1e-10)


OPCHECK_CASES = [
    ((2, 8, 8, 4, 5, 3, 1, 1, 4), "nchw", "relu", True, True, False),
    ((1, 6, 9, 5, 3, 3, 2, 1, 3), "channels_last", "silu", True, True, True),
    ((2, 4, 4, 3, 3, 1, 1, 0, 2), "nchw", "none", False, True, True),
    ((1, 16, 16, 3, 4, 3, 1, 1, 2), "channels_last", "none", False, False, False),
]


@pytest.mark.parametrize("case,layout,act,scale,bias,residual", OPCHECK_CASES)
def test_opcheck(case, layout, act, scale, bias, residual):
    _, _, _, _, _, _, s, p, groups = case
    x, w, sc, b, r = make_args(case, layout, scale, bias, residual)
    for t in (x, w, sc, b, r):
        if t is not None:
            t.requires_grad_()
    stride, padding = list(pair(s)), list(pair(p))
    torch.library.opcheck(torch.ops.pycnn.gconv_forward.default,
                          (x, w, sc, b, r, stride, padding, groups, act, True))
    y, saved = torch.ops.pycnn.gconv_forward(x, w, sc, b, r, stride, padding, groups, act, True)
    dy = torch.randn_like(y)
    detach = lambda t: t.detach() if t is not None else None  # noqa: E731
    torch.library.opcheck(torch.ops.pycnn.gconv_backward.default,
                          (dy.detach(), x.detach(), w.detach(), detach(sc), detach(b), detach(r), saved.detach(),
                           stride, padding, groups, act),
                          test_utils=("test_schema", "test_faketensor"))


HALF_NAMES = ["output", "grad_input", "grad_weight", "grad_scale", "grad_bias", "grad_residual"]


def half_precision_errors(dtype, device, case=(4, 32, 32, 9, 9, 3, 1, 1, 4), act="silu"):
    """Max error of each output/gradient against a float64 reference: ours in `dtype`, PyTorch's own
    composition in `dtype`."""
    _, _, _, _, _, _, s, p, groups = case
    x, w, sc, b, r = make_args(case, "channels_last", True, True, True, device=device)

    def run(fn, dt):
        tensors = [t.to(dt) for t in (x, w)] + [sc, b] + [r.to(dt)]
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        y = fn(*leaves)
        g = torch.ones_like(y) * 0.1 + torch.arange(y.numel(), device=device).reshape(y.shape).remainder(7).to(y.dtype) * 0.05
        return [y] + list(torch.autograd.grad(y, leaves, g))

    ref_fn = lambda *a: reference(*a, s, pair(p), groups, act)  # noqa: E731
    truth = run(ref_fn, torch.float64)
    mine = run(lambda *a: ops.gconv(a[0], a[1], a[2], a[3], stride=s, padding=p, groups=groups, act=act,
                                    residual=a[4]), dtype)
    theirs = run(ref_fn, dtype)
    return max_errors(mine, truth), max_errors(theirs, truth)



@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_rule_cpu(dtype):
    mine, theirs = half_precision_errors(dtype, "cpu")
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


def test_errors_name_the_argument():
    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(8, 2, 3, 3)
    op = torch.ops.pycnn.gconv_forward

    def call(x=x, w=w, scale=None, bias=None, residual=None, stride=(1, 1), padding=(1, 1), groups=4, act="relu"):
        return op(x, w, scale, bias, residual, list(stride), list(padding), groups, act, False)

    assert call()[0].shape == (2, 8, 5, 5)
    with pytest.raises(RuntimeError, match="input must be 4-D"):
        call(x=torch.randn(8, 5, 5))
    with pytest.raises(RuntimeError, match=r"groups \(3\) must divide the input channels \(8\)"):
        call(groups=3)
    with pytest.raises(RuntimeError, match="groups must be >= 1"):
        call(groups=0)
    with pytest.raises(RuntimeError, match="kernel_size must be 1x1 or 3x3"):
        call(w=torch.randn(8, 2, 5, 5))
    with pytest.raises(RuntimeError, match="kernel_size must be 1x1 or 3x3"):
        call(w=torch.randn(8, 2, 3, 1))
    with pytest.raises(RuntimeError, match=r"weight must have shape \(C_out, C_in / groups, k, k\)"):
        call(w=torch.randn(8, 4, 3, 3))
    with pytest.raises(RuntimeError, match=r"groups \(4\) must divide the output channels"):
        call(w=torch.randn(6, 2, 3, 3))
    with pytest.raises(RuntimeError, match="weight must be 4-D"):
        call(w=torch.randn(8, 2, 3))
    with pytest.raises(RuntimeError, match="weight has dtype Double but input has dtype Float"):
        call(w=w.double())
    with pytest.raises(RuntimeError, match="input must be float32, float16, bfloat16 or float64"):
        call(x=torch.ones(2, 8, 5, 5, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="scale must be 1-D with 8 elements"):
        call(scale=torch.ones(4))
    with pytest.raises(RuntimeError, match="bias must be 1-D with 8 elements"):
        call(bias=torch.ones(8, 1))
    with pytest.raises(RuntimeError, match="residual must have the output's shape"):
        call(residual=torch.randn(2, 8, 4, 4))
    with pytest.raises(RuntimeError, match="residual has dtype"):
        call(residual=torch.randn(2, 8, 5, 5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="stride must be >= 1"):
        call(stride=(0, 1))
    with pytest.raises(RuntimeError, match="padding must be >= 0"):
        call(padding=(-1, 1))
    with pytest.raises(RuntimeError, match="smaller than kernel_size"):
        call(x=torch.randn(2, 8, 2, 5), padding=(0, 0))
    with pytest.raises(RuntimeError, match="unknown activation 'tanh'"):
        call(act="tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        ops.gconv(x, w, groups=4, act="tanh")
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        ops.gconv(x, w, groups=4, stride=(1, 1, 1))
    with pytest.raises(ValueError, match="group_width"):
        GroupedConvBNAct2d(8, 8, 3, group_width=3)
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3"):
        GroupedConvBNAct2d(8, 8, 5, groups=2)
    dy = torch.randn(2, 8, 5, 5)
    with pytest.raises(RuntimeError, match="grad_output must have the output's shape"):
        torch.ops.pycnn.gconv_backward(torch.randn(2, 8, 4, 4), x, w, None, None, None, torch.empty(0),
                                       [1, 1], [1, 1], 4, "relu")
    with pytest.raises(RuntimeError, match="saved must be empty or have the output's shape"):
        torch.ops.pycnn.gconv_backward(dy, x, w, None, None, None, torch.randn(3), [1, 1], [1, 1], 4, "relu")


# ------------------------------------------------------------------------------------ module ----

class Reference(nn.Module):
    def __init__(self, c_in, c_out, k, stride, padding, groups, act, bias):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act

    def forward(self, x, residual=None):
        z = self.bn(self.conv(x))
        return REFERENCE_ACT[self.act](z + residual if residual is not None else z)


def make_modules(c_in, c_out, k, stride, groups, act, bias, padding=None):
    ours = GroupedConvBNAct2d(c_in, c_out, k, stride=stride, groups=groups, act=act, bias=bias, padding=padding)
    ref = Reference(c_in, c_out, k, stride, k // 2 if padding is None else padding, groups, act, bias)
    with torch.no_grad():
        ours.bn.weight.uniform_(0.5, 1.5)
        ours.bn.bias.uniform_(-0.5, 0.5)
        ours.bn.running_mean.uniform_(-0.3, 0.3)
        ours.bn.running_var.uniform_(0.5, 2.0)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_module_state_dict_is_the_unfused_modules():
    for bias in (False, True):
        ours, ref = make_modules(16, 32, 3, 1, 4, "relu", bias)
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert ours.conv.weight.shape == (32, 4, 3, 3)
        GroupedConvBNAct2d(16, 32, 3, group_width=4, bias=bias).load_state_dict(ref.state_dict())  # strict
    assert GroupedConvBNAct2d(24, 24, 3, group_width=8).conv.groups == 3


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("c_in,c_out,k,stride,groups,act,bias,with_residual", [
    (16, 16, 3, 1, 4, "relu", False, True),
    (12, 24, 3, 2, 3, "silu", True, False),
    (10, 10, 1, 1, 5, "hardswish", False, False),
    (8, 8, 3, 2, 8, "relu6", True, False),
])
def test_module_matches_conv_bn_act(c_in, c_out, k, stride, groups, act, bias, with_residual, layout, training):
    ours, ref = make_modules(c_in, c_out, k, stride, groups, act, bias)
    ours.train(training)
    ref.train(training)
    x = make_input((3, c_in, 7, 6), layout)
    oh, ow = out_size(7, k, stride, k // 2), out_size(6, k, stride, k // 2)
    r = make_input((3, c_out, oh, ow), layout, seed=4) if with_residual else None
    o = outputs_and_grads(lambda x, r: ours(x, r), [x, r])
    e = outputs_and_grads(lambda x, r: ref(x, r), [x, r])
    tol = dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(o, e):
        if a is not None:
            torch.testing.assert_close(a, b, **tol)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name}: {m}", **tol)
    for (name, p), (_, q) in zip(ours.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(p, q, msg=lambda m: f"{name}: {m}", **tol)


def test_module_eval_fold_follows_weight_changes():
    ours, ref = make_modules(8, 8, 3, 1, 2, "relu", True)
    ours.eval()
    ref.eval()
    x = make_input((2, 8, 5, 5), "nchw")
    with torch.no_grad():
        for m in (ours, ref):
            m.bn.running_var.mul_(3)
            m.conv.weight.mul_(-1)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- CUDA ----

CUDA_CASES = CASES + [
    (2, 64, 64, 9, 9, 3, 1, 1, 4),       # group width 16: tensor cores in half precision
    (2, 96, 96, 8, 7, 3, 2, 1, 3),       # group width 32, stride 2
    (1, 168, 168, 7, 7, 3, 1, 1, 1),     # group width 168 (RegNetX-32GF), N tail
    (2, 128, 128, 6, 6, 1, 1, 0, 2),     # 1x1, group width 64
]


@pytest.mark.cuda
@pytest.mark.parametrize("case,layout,epilogue", list(itertools.product(CUDA_CASES, LAYOUTS, EPILOGUES[1:3])))
def test_cuda_matches_conv2d_float32(case, layout, epilogue):
    act, scale, bias, residual = epilogue
    ours, ref = run_pair(case, layout, act, scale, bias, residual, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    assert_all_close(ours, ref, rtol=2e-4, atol=2e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("case", [(4, 32, 32, 9, 9, 3, 1, 1, 4), (4, 64, 64, 9, 9, 3, 2, 1, 2),
                                  (2, 48, 48, 7, 7, 3, 1, 1, 2), (4, 24, 24, 9, 9, 3, 1, 1, 8),
                                  (2, 168, 168, 7, 7, 3, 1, 1, 1), (4, 64, 128, 8, 8, 1, 1, 0, 4)])
def test_cuda_half_precision_rule(dtype, case):
    mine, theirs = half_precision_errors(dtype, "cuda", case=case)
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


@pytest.mark.cuda
def test_cuda_opcheck_module_and_device_mismatch():
    case = (2, 32, 32, 5, 5, 3, 1, 1, 2)
    x, w, sc, b, r = make_args(case, "channels_last", True, True, True, device="cuda", dtype=torch.float16)
    torch.library.opcheck(torch.ops.pycnn.gconv_forward.default,
                          (x, w.requires_grad_(), sc, b, r, [1, 1], [1, 1], 2, "relu", True))
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        torch.ops.pycnn.gconv_forward(x, w.detach().cpu(), None, None, None, [1, 1], [1, 1], 2, "relu", False)
    ours, ref = make_modules(32, 32, 3, 1, 2, "relu", False)
    ours, ref = ours.cuda(), ref.cuda()
    xx = make_input((2, 32, 6, 6), "channels_last", device="cuda")
    for mode in (True, False):
        ours.train(mode)
        ref.train(mode)
        torch.testing.assert_close(ours(xx), ref(xx), rtol=2e-4, atol=2e-4)
