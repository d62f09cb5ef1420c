"""The dwconv CUDA kernels, run on the CPU by the emulator, against F.conv2d (float64 reference)."""

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import reference_epilogue

TOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 3e-2, torch.bfloat16: 2e-1}

# n, c, h, w, k, stride, padding, dilation, dtype, act, residual, layout. Vector paths (C % (16 / itemsize)
# == 0) and scalar ones (odd C), every k, stride and dilation 2, asymmetric strides, k7 dilation 2 stride 2
# (fewer channels per block: the shared-memory budget), several tiles per grad_out block (num_sms = 1 on
# a ~30x30 image), negative padding offsets in grad_in with stride 2, every activation, both layouts.
CASES = [
    (2, 8, 9, 9, 3, [1, 1], [1, 1], [1, 1], torch.float32, "relu6", True, "cl"),
    (1, 12, 7, 6, 5, [2, 2], [2, 2], [1, 1], torch.float32, "silu", False, "nchw"),
    (1, 5, 6, 7, 3, [2, 1], [1, 0], [1, 2], torch.float32, "hardswish", True, "cl"),
    (2, 16, 5, 5, 7, [1, 1], [3, 3], [1, 1], torch.float16, "silu", True, "cl"),
    (1, 24, 9, 8, 3, [2, 2], [2, 2], [2, 2], torch.bfloat16, "relu", False, "cl"),
    (1, 8, 3, 2, 7, [1, 1], [3, 3], [1, 1], torch.float32, "none", False, "cl"),
    (1, 6, 4, 5, 1, [2, 2], [0, 0], [1, 1], torch.float64, "silu", True, "cl"),
    (2, 4, 6, 6, 5, [1, 1], [4, 4], [2, 2], torch.float64, "relu", False, "nchw"),
    (1, 40, 8, 8, 5, [1, 1], [2, 2], [1, 1], torch.float32, "relu", True, "cl"),
    (1, 9, 7, 7, 3, [2, 2], [1, 1], [1, 1], torch.float16, "relu6", False, "cl"),
    (1, 16, 13, 13, 7, [2, 2], [6, 6], [2, 2], torch.float16, "none", False, "cl"),
]
LARGE_CASES = [  # forward scheduling order only: several tiles per block make these slow to emulate
    (1, 32, 33, 37, 3, [1, 1], [1, 1], [1, 1], torch.float32, "silu", True, "cl"),
    (2, 64, 30, 30, 5, [2, 2], [2, 2], [1, 1], torch.float16, "hardswish", True, "cl"),
    (3, 13, 29, 31, 3, [2, 2], [1, 1], [1, 1], torch.bfloat16, "relu6", False, "nchw"),
]


def check_case(mod, case):
    n, c, h, w_, k, s, p, d, dt, act, with_r, lay = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w_, generator=g, dtype=torch.float64)
    wt = torch.randn(c, 1, k, k, generator=g, dtype=torch.float64) * 0.5
    acc = torch.float64 if dt == torch.float64 else torch.float32  # scale/bias: the accumulation dtype
    sc = (torch.rand(c, generator=g) + 0.5).to(acc)
    b = torch.randn(c, generator=g).to(acc)
    oh = (h + 2 * p[0] - d[0] * (k - 1) - 1) // s[0] + 1
    ow = (w_ + 2 * p[1] - d[1] * (k - 1) - 1) // s[1] + 1
    r = torch.randn(n, c, oh, ow, generator=g, dtype=torch.float64) if with_r else None
    dy = torch.randn(n, c, oh, ow, generator=g, dtype=torch.float64)
    fmt = torch.channels_last if lay == "cl" else torch.contiguous_format
    cvt = lambda t: None if t is None else t.to(dt).contiguous(memory_format=fmt)
    xs, ws, rs, dys = cvt(x), wt.to(dt), cvt(r), cvt(dy)
    y = mod.dwconv.forward(xs, ws, sc, b, rs, s, p, d, act)
    outs = [y, *mod.dwconv.backward(dys, xs, ws, sc, b, rs, s, p, d, act, 1)]
    # float64 reference from the same (rounded) inputs
    xr, wr = xs.double().requires_grad_(), ws.double().requires_grad_()
    scr, br = sc.double().requires_grad_(), b.double().requires_grad_()
    rr = rs.double().requires_grad_() if rs is not None else None
    yr = reference_epilogue(F.conv2d(xr, wr, None, s, p, d, groups=c), scr, br, rr, act)
    refs = [yr, *torch.autograd.grad(yr, [xr, wr, scr, br] + ([rr] if rr is not None else []), dys.double())]
    assert (outs[5] is None) == (not with_r)
    for name, got, ref in zip(["y", "dx", "dweight", "dscale", "dbias", "dresidual"], outs, refs):
        assert got.shape == ref.shape, name
        err = (got.double() - ref).abs().max().item() / (1 + ref.abs().max().item())
        assert err <= TOL[dt], f"{name}: relative error {err:.2e} > {TOL[dt]}"


@pytest.mark.parametrize("case", CASES)
def test_dwconv_kernels_match_pytorch(emu, case):
    check_case(emu, case)


@pytest.mark.parametrize("case", LARGE_CASES)
def test_dwconv_kernels_several_tiles_per_block(emu_forward, case):
    check_case(emu_forward, case)
