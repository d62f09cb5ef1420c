"""pycnn.mbconv (the fused inverted-residual block, eval) against its unfused composition: F.conv2d expand 1x1 +
bias + act -> depthwise kxk + bias + act -> project 1x1 + bias [+ input] (PyTorch is the reference)."""

import pytest
import torch

from kernel_checks import assert_mbconv_matches_reference, make_mbconv_block, make_mbconv_se, mbconv_reference

import pycnn  # noqa: F401  (loads the ops)
from pycnn import ops

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


def run(x, expand, dw, project, stride, act, residual, se=None, se_act="relu"):
    return ops.mbconv(x, *expand, *dw, *project, stride=stride, act=act, residual=residual, se=se, se_act=se_act)


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
    x, expand, dw, project = make_mbconv_block(case)
    y = run(x, expand, dw, project, s, act, res)
    ref = mbconv_reference(x, expand, dw, project, s, act, res)
    assert y.shape == ref.shape and y.dtype == torch.float64
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert (y - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_float32_within_4x_pytorch_error(case):
    c, e, co, k, s, res, act, h, w = case
    block64 = make_mbconv_block(case)
    ref = mbconv_reference(*block64, s, act, res)
    block32 = cast(block64, torch.float32)
    torch_err = (mbconv_reference(*block32, s, act, res).double() - ref).abs().max().item()
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
        se_cases = [(case, make_mbconv_se(case[1], reduced, torch.float32), se_act)
                    for case, reduced, se_act in (SE_CASES[0], SE_CASES[1], SE_CASES[5])]
        plain = [CASES[1], CASES[2], CASES[7], CASES[9]] + ODD_EXPANSIONS
        for case, se, se_act in [(case, None, "relu") for case in plain] + se_cases:
            c, e, co, k, s, res, act, h, w = case
            block64 = make_mbconv_block(case, batch=1)
            se64 = None if se is None else tuple(t.double() for t in se)
            ref = mbconv_reference(*block64, s, act, res, se64, se_act)
            assert (run(*block64, s, act, res, se64, se_act) - ref).abs().max().item() < 1e-9, case
            block32 = cast(block64, torch.float32)
            torch_err = (mbconv_reference(*block32, s, act, res, se, se_act).double() - ref).abs().max().item()
            ours_err = (run(*block32, s, act, res, se, se_act).double() - ref).abs().max().item()
            assert ours_err <= 4 * max(torch_err, 1e-6), (case, ours_err, torch_err)
    finally:
        _C._set_cpu_isa(previous)


def test_nchw_input_and_batch_above_threads():
    case = (24, 144, 24, 3, 1, True, "relu6", 5, 6)
    x, expand, dw, project = make_mbconv_block(case, batch=5)
    y = run(x.contiguous(), expand, dw, project, 1, "relu6", True)
    assert (y - mbconv_reference(x, expand, dw, project, 1, "relu6", True)).abs().max().item() < 1e-9


@pytest.mark.parametrize("case", [CASES[2], CASES[7], CASES[11]], ids=["mbv2-res", "effnet-s2", "no-expand"])
def test_opcheck(case):
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_mbconv_block(case, dtype=torch.float32)
    torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res))


def test_requires_grad_is_a_clear_error():
    x, expand, dw, project = make_mbconv_block(CASES[2])
    x.requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference only"):
        run(x, expand, dw, project, 1, "relu6", True)
    with torch.no_grad():
        run(x, expand, dw, project, 1, "relu6", True)


def test_bad_arguments_name_the_argument():
    x, (we, be), (wd, bd), (wp, bp) = make_mbconv_block(CASES[2])
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
    with pytest.raises(RuntimeError, match="input must be float32 or float64 for the CPU kernel"):
        call(x.half(), we.half(), be, wd.half(), bd, wp.half(), bp, 1, "relu6", True)
    from torch._subclasses.fake_tensor import FakeTensorMode
    fake = FakeTensorMode()
    args = [fake.from_tensor(t.half()) for t in (x, we, be, wd, bd, wp, bp)]
    with fake, pytest.raises(RuntimeError, match="input must be float32 or float64 for the CPU"):
        call(*args, 1, "relu6", True)  # the fake kernel (torch.compile) refuses it as the CPU kernel does
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
    x, expand, dw, project = make_mbconv_block(case, batch=3)
    se = make_mbconv_se(e, reduced)
    y = run(x, expand, dw, project, s, act, res, se, se_act)
    ref = mbconv_reference(x, expand, dw, project, s, act, res, se, se_act)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("case,reduced,se_act", SE_CASES[:4], ids=_se_id)
def test_float32_with_se_within_4x_pytorch_error(case, reduced, se_act):
    c, e, co, k, s, res, act, h, w = case
    block64, se64 = make_mbconv_block(case), make_mbconv_se(e, reduced)
    ref = mbconv_reference(*block64, s, act, res, se64, se_act)
    block32, se32 = cast(block64, torch.float32), tuple(t.float() for t in se64)
    torch_err = (mbconv_reference(*block32, s, act, res, se32, se_act).double() - ref).abs().max().item()
    ours_err = (run(*block32, s, act, res, se32, se_act).double() - ref).abs().max().item()
    assert ours_err <= 4 * max(torch_err, 1e-6), (ours_err, torch_err)


def test_se_without_biases_and_nan_propagates_through_the_scale():
    case, reduced, se_act = SE_CASES[1]
    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_mbconv_block(case)
    w1, _, w2, _ = make_mbconv_se(e, reduced)
    y = run(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)
    assert (y - mbconv_reference(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)).abs().max() < 1e-9
    x = x.clone()
    x[0, 0, 1, 1] = float("nan")  # one value: the mean, so the scale of every channel of image 0 is NaN
    y = run(x, expand, dw, project, s, act, res, (w1, None, w2, None), se_act)
    assert torch.isnan(y[0]).all() and not torch.isnan(y[1]).any()


def test_opcheck_with_se():
    for case, reduced, se_act in (SE_CASES[1], SE_CASES[2]):
        c, e, co, k, s, res, act, h, w = case
        x, expand, dw, project = make_mbconv_block(case, dtype=torch.float32)
        se = make_mbconv_se(e, reduced, dtype=torch.float32)
        torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res, *se, se_act))


def test_bad_se_arguments_name_the_argument():
    case, reduced, se_act = SE_CASES[2]
    x, (we, be), (wd, bd), (wp, bp) = make_mbconv_block(case)
    w1, b1, w2, b2 = make_mbconv_se(144, reduced)
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


# ---- the CUDA kernel (pytest -m cuda on a GPU machine; tests/emu/test_emu_mbconv.py runs its source on the CPU)

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case,reduced,se_act", [(CASES[2], 0, "relu"), (CASES[7], 0, "relu"), (CASES[11], 0, "relu"),
                                                 SE_CASES[1], SE_CASES[2], SE_CASES[6]], ids=_se_id)
def test_cuda_matches_the_composition(case, reduced, se_act, dtype):
    assert_mbconv_matches_reference(run, case, dtype, reduced, se_act, device="cuda")


@pytest.mark.cuda
def test_cuda_opcheck_and_device_mismatch():
    case, reduced, se_act = SE_CASES[2]
    block = make_mbconv_block(case, dtype=torch.float32)  # the case has an expand conv: no None in the pairs
    x = block[0].cuda()
    expand, dw, project = (tuple(t.cuda() for t in pair) for pair in block[1:])
    se = tuple(t.cuda() for t in make_mbconv_se(case[1], reduced, dtype=torch.float32))
    s, act, res = case[4], case[6], case[5]
    torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res))
    torch.library.opcheck(torch.ops.pycnn.mbconv_forward, (x, *expand, *dw, *project, s, act, res, *se, se_act))
    with pytest.raises(RuntimeError, match="dw_weight is on cpu but input is on cuda"):
        torch.ops.pycnn.mbconv_forward(x, *expand, dw[0].cpu(), dw[1], *project, s, act, res)
