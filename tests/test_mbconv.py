"""pycnn.mbconv (the fused inverted-residual block, eval) against its unfused composition: F.conv2d expand 1x1 +
bias + act -> depthwise kxk + bias + act -> project 1x1 + bias [+ input] (PyTorch is the reference)."""

import pytest
import torch
import torch.nn.functional as F

import pycnn  # noqa: F401  (loads the ops)
from pycnn import ops

REF_ACT = {"relu6": F.relu6, "silu": F.silu, "relu": F.relu, "hardswish": F.hardswish, "none": lambda t: t}

# (C, E, C_out, k, stride, residual, act, H, W): MobileNetV2 blocks (relu6; E == C: expansion ratio 1, no expand
# conv), EfficientNet blocks (silu, k 5), odd channel counts, odd and even sizes with stride 2, sizes below k.
CASES = [
    (32, 32, 16, 3, 1, False, "relu6", 6, 5),     # MobileNetV2 first block (t = 1)
    (16, 96, 24, 3, 2, False, "relu6", 7, 8),
    (24, 144, 24, 3, 1, True, "relu6", 5, 6),
    (64, 384, 96, 3, 1, False, "relu6", 4, 4),
    (96, 576, 160, 3, 2, False, "relu6", 5, 3),
    (160, 960, 160, 3, 1, True, "relu6", 3, 3),
    (40, 240, 40, 5, 1, True, "silu", 6, 5),      # EfficientNet-B0
    (24, 144, 40, 5, 2, False, "silu", 9, 7),
    (16, 16, 16, 3, 1, True, "silu", 5, 4),       # t = 1 with residual
    (7, 21, 7, 3, 1, True, "relu6", 5, 7),        # odd channels
    (5, 15, 9, 5, 2, False, "hardswish", 6, 5),
    (9, 9, 5, 5, 1, False, "relu", 3, 2),         # no expand, odd, H/W < k
    (3, 17, 3, 3, 2, False, "none", 1, 1),
    # wider rows: GEMM tiles of several full register blocks per row
    (16, 96, 24, 3, 2, False, "relu6", 5, 17),
    (24, 72, 24, 5, 1, True, "silu", 4, 16),
]


def make_block(case, dtype=torch.float64, seed=0, batch=2):
    c, e, co, k, s, res, act, h, w = case
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    x = rand(batch, c, h, w).contiguous(memory_format=torch.channels_last)
    expand = (rand(e, c, 1, 1, scale=c ** -0.5), rand(e, scale=0.5)) if e != c else (None, None)
    dw = (rand(e, 1, k, k, scale=1.0 / k), rand(e, scale=0.5))
    project = (rand(co, e, 1, 1, scale=e ** -0.5), rand(co, scale=0.5))
    return x, expand, dw, project


def reference(x, expand, dw, project, stride, act, residual, se=None, se_act="relu"):
    f = REF_ACT[act]
    t = x if expand[0] is None else f(F.conv2d(x, expand[0], expand[1]))
    k = dw[0].size(2)
    t = f(F.conv2d(t, dw[0], dw[1], stride=stride, padding=k // 2, groups=t.size(1)))
    if se is not None:  # torchvision.ops.SqueezeExcitation
        t = t * torch.sigmoid(F.conv2d(REF_ACT[se_act](F.conv2d(t.mean((2, 3), keepdim=True), se[0], se[1])),
                                       se[2], se[3]))
    y = F.conv2d(t, project[0], project[1])
    return y + x if residual else y


def run(x, expand, dw, project, stride, act, residual, se=None, se_act="relu"):
    return ops.mbconv(x, *expand, *dw, *project, stride=stride, act=act, residual=residual, se=se, se_act=se_act)


def make_se(e, reduced, dtype=torch.float64, seed=1):
    """fc1 (reduced, e, 1, 1) and fc2 (e, reduced, 1, 1) with biases, as torchvision's SqueezeExcitation."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    return (rand(reduced, e, 1, 1, scale=e ** -0.5), rand(reduced), rand(e, reduced, 1, 1, scale=reduced ** -0.5),
            rand(e))


# (block case, SE reduced channels, SE act): EfficientNet-B0's blocks (silu), narrow and wide images, no expand,
# stride 2, residual, odd channel counts.
SE_CASES = [
    ((32, 32, 16, 3, 1, False, "silu", 18, 17), 8, "silu"),     # EfficientNet's first block (t = 1)
    ((16, 96, 24, 3, 2, False, "silu", 9, 8), 4, "silu"),
    ((24, 144, 24, 3, 1, True, "silu", 5, 16), 6, "silu"),      # residual
    ((40, 240, 80, 3, 2, False, "silu", 7, 7), 10, "relu"),
    ((112, 672, 112, 5, 1, True, "silu", 3, 3), 28, "silu"),    # 7x7-like: weights dominate
    ((7, 21, 5, 5, 1, False, "relu6", 6, 19), 3, "hardswish"),  # odd channels
    ((9, 9, 9, 3, 1, True, "relu", 4, 4), 1, "none"),           # no expand, residual, one reduced channel
]


def cast(block, dtype):
    x, expand, dw, project = block
    c = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return (x.to(dtype).contiguous(memory_format=torch.channels_last), tuple(map(c, expand)), tuple(map(c, dw)),
            tuple(map(c, project)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_float64_parity(case):
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_block(case)
    y = run(x, expand, dw, project, s, act, res)
    ref = reference(x, expand, dw, project, s, act, res)
    assert y.shape == ref.shape and y.dtype == torch.float64
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert (y - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_float32_within_4x_pytorch_error(case):
    c, e, co, k, s, res, act, h, w = case
    block64 = make_block(case)
    ref = reference(*block64, s, act, res)
    block32 = cast(block64, torch.float32)
    torch_err = (reference(*block32, s, act, res).double() - ref).abs().max().item()
    ours_err = (run(*block32, s, act, res).double() - ref).abs().max().item()
    assert ours_err <= 4 * max(torch_err, 1e-6), (ours_err, torch_err)


# Expanded widths that are not a multiple of any variant's GEMM tile: the packed panels must cover every
# column the GEMM walks (a read past them is caught by tools/asan_check.sh, not by the values).
ODD_EXPANSIONS = [(8, 17, 8, 3, 1, True, "relu6", 9, 9), (12, 72, 12, 3, 1, False, "silu", 9, 9),
                  (8, 21, 16, 5, 2, False, "hardswish", 9, 11)]


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_cpu_variant(isa):
    """float32 runs the best variant the CPU has: each one the machine has against the float64 reference
    (float64 itself within 1e-9), over plain blocks, odd expanded widths and blocks with SE."""
    from pycnn import _C
    previous = _C._cpu_isa()
    got = _C._set_cpu_isa(isa)
    try:
        if got != isa:
            pytest.skip(f"this CPU has no {isa}")
        se_cases = [(case, make_se(case[1], reduced, torch.float32), se_act)
                    for case, reduced, se_act in (SE_CASES[0], SE_CASES[1], SE_CASES[5])]
        plain = [CASES[1], CASES[2], CASES[7], CASES[9]] + ODD_EXPANSIONS
        for case, se, se_act in [(case, None, "relu") for case in plain] + se_cases:
            c, e, co, k, s, res, act, h, w = case
            block64 = make_block(case, batch=1)
            se64 = None if se is None else tuple(t.double() for t in se)
            ref = reference(*block64, s, act, res, se64, se_act)
            assert (run(*block64, s, act, res, se64, se_act) - ref).abs().max().item() < 1e-9, case
            block32 = cast(block64, torch.float32)
            torch_err = (reference(*block32, s, act, res, se, se_act).double() - ref).abs().max().item()
            ours_err = (run(*block32, s, act, res, se, se_act).double() - ref).abs().max().item()
            assert ours_err <= 4 * max(torch_err, 1e-6), (case, ours_err, torch_err)
    finally:
        _C._set_cpu_isa(previous)


def test_nchw_input_and_batch_above_threads():
    case = (24, 144, 24, 3, 1, True, "relu6", 5, 6)
    x, expand, dw, project = make_block(case, batch=5)
    y = run(x.contiguous(), expand, dw, project, 1, "relu6", True)
    assert (y - reference(x, expand, dw, project, 1, "relu6", True)).abs().max().item() < 1e-9


@pytest.mark.parametrize("case", [CASES[2], CASES[7], CASES[11]], ids=["mbv2-res", "effnet-s2", "no-expand"])
def test_opcheck(case):
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_block(case, dtype=torch.float32)
    torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res))


def test_requires_grad_is_a_clear_error():
    x, expand, dw, project = make_block(CASES[2])
    x.requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference only"):
        run(x, expand, dw, project, 1, "relu6", True)
    with torch.no_grad():
        run(x, expand, dw, project, 1, "relu6", True)


def test_bad_arguments_name_the_argument():
    x, (we, be), (wd, bd), (wp, bp) = make_block(CASES[2])
    call = torch.ops.pycnn.mbconv_forward
    with pytest.raises(RuntimeError, match="expand_weight must have shape"):
        call(x, we[:, :5], be, wd, bd, wp, bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="expand_weight must have shape"):
        call(x, we.new_zeros(()), be, wd, bd, wp, bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="dw_weight has dtype"):
        call(x, we, be, wd.float(), bd, wp, bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="dw_weight's kernel size must be odd"):
        call(x, we, be, torch.zeros(144, 1, 4, 4, dtype=x.dtype), bd, wp, bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="project_weight must have shape"):
        call(x, we, be, wd, bd, wp[:, :10], bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="project_bias must be 1-D"):
        call(x, we, be, wd, bd, wp, bp[:3], 1, "relu6", True)
    with pytest.raises(RuntimeError, match="stride must be 1 or 2"):
        call(x, we, be, wd, bd, wp, bp, 3, "relu6", False)
    with pytest.raises(RuntimeError, match="residual needs stride 1"):
        call(x, we, be, wd, bd, wp, bp, 2, "relu6", True)
    with pytest.raises(RuntimeError, match="input must be float32 or float64"):
        call(x.half(), we.half(), be, wd.half(), bd, wp.half(), bp, 1, "relu6", True)
    with pytest.raises(RuntimeError, match="unknown activation"):
        call(x, we, be, wd, bd, wp, bp, 1, "gelu", True)
    with pytest.raises(ValueError, match="unknown activation"):
        ops.mbconv(x, we, be, wd, bd, wp, bp, act="gelu")
    with pytest.raises(RuntimeError, match="expand_bias is given without expand_weight"):
        call(x, None, be, wd, bd, wp, bp, 1, "relu6", True)



def _se_id(value):
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("case,reduced,se_act", SE_CASES, ids=_se_id)
def test_float64_parity_with_se(case, reduced, se_act):
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_block(case, batch=3)
    se = make_se(e, reduced)
    y = run(x, expand, dw, project, s, act, res, se, se_act)
    ref = reference(x, expand, dw, project, s, act, res, se, se_act)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("case,reduced,se_act", SE_CASES[:4], ids=_se_id)
def test_float32_with_se_within_4x_pytorch_error(case, reduced, se_act):
    c, e, co, k, s, res, act, h, w = case
    block64, se64 = make_block(case), make_se(e, reduced)
    ref = reference(*block64, s, act, res, se64, se_act)
    block32, se32 = cast(block64, torch.float32), tuple(t.float() for t in se64)
    torch_err = (reference(*block32, s, act, res, se32, se_act).double() - ref).abs().max().item()
    ours_err = (run(*block32, s, act, res, se32, se_act).double() - ref).abs().max().item()
    assert ours_err <= 4 * max(torch_err, 1e-6), (ours_err, torch_err)


def test_se_without_biases_and_nan_propagates_through_the_scale():
    case, reduced, se_act = SE_CASES[1]
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_block(case)
    w1, _, w2, _ = make_se(e, reduced)
    y = run(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)
    assert (y - reference(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)).abs().max() < 1e-9
    x = x.clone()
    x[0, 0, 1, 1] = float("nan")  # one value: the mean, so the scale of every channel of image 0 is NaN
    y = run(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)
    assert torch.isnan(y[0]).all() and not torch.isnan(y[1]).any()


def test_opcheck_with_se():
    for case, reduced, se_act in (SE_CASES[1], SE_CASES[2]):
        c, e, co, k, s, res, act, h, w = case
        x, expand, dw, project = make_block(case, dtype=torch.float32)
        se = make_se(e, reduced, dtype=torch.float32)
        torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res, *se, se_act))


def test_bad_se_arguments_name_the_argument():
    case, reduced, se_act = SE_CASES[2]
    x, (we, be), (wd, bd), (wp, bp) = make_block(case)
    w1, b1, w2, b2 = make_se(144, reduced)
    call = torch.ops.pycnn.mbconv_forward
    head = (x, we, be, wd, bd, wp, bp, 1, "silu", True)
    with pytest.raises(RuntimeError, match="se_reduce_weight and se_expand_weight are given together"):
        call(*head, w1, b1, None, b2, "silu")
    with pytest.raises(RuntimeError, match="SE bias is given without the SE weights"):
        call(*head, None, b1, None, None, "silu")
    with pytest.raises(RuntimeError, match="se_reduce_weight must have shape"):
        call(*head, w1[:, :7], b1, w2, b2, "silu")
    with pytest.raises(RuntimeError, match="se_expand_weight must have shape"):
        call(*head, w1, b1, w2[:, :2], b2, "silu")
    with pytest.raises(RuntimeError, match="se_expand_weight has dtype"):
        call(*head, w1, b1, w2.float(), b2, "silu")
    with pytest.raises(RuntimeError, match="se_reduce_bias"):
        call(*head, w1, b1[:2], w2, b2, "silu")
    with pytest.raises(RuntimeError, match="unknown activation"):
        call(*head, w1, b1, w2, b2, "gelu")
    with pytest.raises(ValueError, match="se must be"):
        ops.mbconv(x, we, be, wd, bd, wp, bp, act="silu", residual=True, se=(w1, b1))
    with pytest.raises(RuntimeError, match="inference only"):  # an SE weight that wants a gradient
        run(x, (we, be), (wd, bd), (wp, bp), 1, "silu", True, (w1.requires_grad_(True), b1, w2, b2))
