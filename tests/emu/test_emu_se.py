"""The SE CUDA kernels (csrc/cuda/se.cu), run on the CPU by the emulator, against PyTorch (float64 reference).

Every case runs forward (se_pool_kernel, se_excite_scale_kernel) and backward (se_grad_gate_kernel, then
se_backward_kernel, whose three kinds of blocks - dx/dresidual per image and row chunk, dw2/db2 per tile of
channels, dw1/db1 per tile of reduced channels - are all part of every backward launch) under every
scheduling order (the ``emu`` fixture), through the same tensors -> params -> launcher glue as the CUDA op
(csrc/cuda/se_run.h, bound by bind_se.cpp with an explicit SM count).
"""

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

from emu_util import Guarded
from kernel_checks import REFERENCE_ACT

ACC = {torch.float32: torch.float32, torch.float64: torch.float64, torch.float16: torch.float32,
       torch.bfloat16: torch.float32}
# Outputs in the element type are computed in the accumulation type from the same (rounded) inputs as the
# reference and rounded once: about one ULP of the element type (the largest errors seen are ~1/5 of these
# bounds for the half types, ~1/10 for float32). The saved vectors (pooled, hidden, gate) and float32 weight
# gradients of half inputs stay in the accumulation type and are held to that type's tolerance.
TOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}

# n, c, h, w: input shape; cr: reduced channels; offsets: storage offsets (elements) of x, residual, dy
# (NHWC storage; a nonzero offset misaligns the 16-byte vectors); layout "nchw" inputs are copied to NHWC by
# the glue (aligned), "nhwc" ones are used in place (Guarded: out-of-bounds reads give NaN, writes are
# reported); wacc: fc weights in the accumulation type (float32 with half inputs: weights_acc) instead of the
# input dtype; w4d: weights [out, in, 1, 1] (else [out, in]); sms: the SM count sizing the grids; form: the
# (forward, backward) path the case must take: "vec" (16-byte vectors) or "scalar"; multi: more than one
# partial (pool / grad-gate row chunk) and more than one excite/apply row chunk per image.
Case = namedtuple("Case", "id n c h w cr dtype layout offsets wacc w4d bias residual act post sms form multi")
F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
CASES = [
    # float32: vector (C % 4 == 0), scalar (odd C), scalar because only the residual is misaligned
    Case("f32-vec", 1, 32, 7, 10, 4, F32, "nhwc", (0, 0, 0), True, True, True, True, "relu", "none", 1,
         ("vec", "vec"), True),
    Case("f32-scalar-oddC", 2, 13, 6, 7, 3, F32, "nchw", (0, 0, 0), True, False, False, False, "silu", "relu", 1,
         ("scalar", "scalar"), True),
    Case("f32-scalar-residual-misaligned", 2, 16, 5, 5, 4, F32, "nhwc", (0, 1, 0), True, True, True, True, "relu",
         "relu", 1, ("scalar", "scalar"), True),
    # float16: vector with float32 weights, scalar (misaligned x) with float16 weights, vector forward and
    # scalar backward (only dy misaligned)
    Case("f16-vec-wacc", 1, 64, 7, 7, 4, F16, "nhwc", (0, 0, 0), True, True, True, True, "silu", "relu", 1,
         ("vec", "vec"), True),
    Case("f16-scalar-misaligned-w16", 2, 16, 5, 5, 4, F16, "nhwc", (1, 1, 1), False, True, False, True, "relu",
         "none", 1, ("scalar", "scalar"), True),
    Case("f16-vec-fwd-scalar-bwd", 2, 16, 4, 5, 3, F16, "nhwc", (0, 0, 1), False, False, True, True, "silu",
         "relu", 1, ("vec", "scalar"), False),
    # bfloat16: vector with bfloat16 weights, scalar (C % 8 != 0) with float32 weights
    Case("bf16-vec-w16", 1, 32, 9, 9, 6, BF16, "nhwc", (0, 0, 0), False, True, True, False, "relu", "relu", 1,
         ("vec", "vec"), True),
    Case("bf16-scalar-C12-wacc", 3, 12, 4, 5, 5, BF16, "nchw", (0, 0, 0), True, True, False, True, "silu", "none", 2,
         ("scalar", "scalar"), True),
    # float64: vector (C % 2 == 0), scalar (misaligned by one element)
    Case("f64-vec", 2, 8, 9, 9, 2, F64, "nhwc", (0, 0, 0), True, True, True, True, "silu", "relu", 1,
         ("vec", "vec"), True),
    Case("f64-scalar-misaligned", 2, 6, 5, 7, 3, F64, "nhwc", (1, 1, 1), True, False, False, False, "relu", "none", 1,
         ("scalar", "scalar"), True),
    # C_r > 32 (the 32-wide dz1 loop runs twice) and HW >= 2 * C_r: the row chunks are sized by 2 * C_r
    Case("f32-cr40-chunks-by-cr", 1, 24, 10, 10, 40, F32, "nhwc", (0, 0, 0), True, True, True, True, "relu", "relu",
         1, ("vec", "vec"), True),
    # N > 8 and N * kTile > 256 threads (the tiles' per-image loops wrap), channel and reduced tiles with tails
    Case("f32-n40-tiles", 40, 20, 2, 2, 9, F32, "nchw", (0, 0, 0), True, False, True, True, "silu", "relu", 4,
         ("vec", "vec"), False),
    Case("f16-n10-scalar", 10, 12, 3, 3, 3, F16, "nhwc", (0, 0, 0), True, True, True, True, "relu", "relu", 2,
         ("scalar", "scalar"), False),
    # C > 256 threads and C_r > 32: every per-channel loop wraps; two blocks across channel vectors
    Case("f16-C264-cr36", 2, 264, 3, 3, 36, F16, "nhwc", (0, 0, 0), True, True, True, True, "silu", "none", 2,
         ("vec", "vec"), False),
    # one partial and one chunk (many SMs)
    Case("bf16-vec-one-chunk", 2, 16, 3, 3, 2, BF16, "nhwc", (0, 0, 0), True, False, True, True, "relu", "none", 132,
         ("vec", "vec"), False),
]


def nhwc_tensor(n, c, h, w, dtype, layout, offset, seed, shift=0.0):
    """(tensor as N, C, H, W, Guarded buffer or None). NHWC storage starting `offset` elements into a guarded
    buffer (the elements before it are NaN), or a plain NCHW tensor."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(n, h, w, c, generator=g, dtype=torch.float64) + shift
    if layout == "nchw":
        return src.permute(0, 3, 1, 2).contiguous().to(dtype), None
    buf = Guarded(shape=(src.numel() + offset,), dtype=dtype)
    buf.t[offset:].copy_(src.flatten())
    return buf.t[offset:].view(n, h, w, c).permute(0, 3, 1, 2), buf


def fc_params(c, cr, dtype, w4d, bias, seed=5):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(cr, c, generator=g, dtype=torch.float64) / c ** 0.5
    w2 = torch.randn(c, cr, generator=g, dtype=torch.float64) / cr ** 0.5
    b1 = torch.randn(cr, generator=g, dtype=torch.float64) * 0.3
    b2 = torch.randn(c, generator=g, dtype=torch.float64) * 0.3
    guards = []

    def put(t, shape):
        gt = Guarded(t.to(dtype).reshape(shape))
        guards.append(gt)
        return gt.t

    w1 = put(w1, (cr, c, 1, 1) if w4d else (cr, c))
    w2 = put(w2, (c, cr, 1, 1) if w4d else (c, cr))
    b1, b2 = (put(b1, (cr,)), put(b2, (c,))) if bias else (None, None)
    return w1, b1, w2, b2, guards


def reference(x, w1, b1, w2, b2, r, act, post, dy):
    """float64 eager composition: adaptive avg pool, 1x1 conv, act, 1x1 conv, sigmoid, scale, + residual, post
    act; its saved vectors and the gradients of every input (biases that are None are zeros)."""
    cr, c = w1.shape[0], w1.shape[1]
    zeros = lambda k: torch.zeros(k, dtype=torch.float64)
    leaves = [x.double(), w1.double().reshape(cr, c, 1, 1), b1.double() if b1 is not None else zeros(cr),
              w2.double().reshape(c, cr, 1, 1), b2.double() if b2 is not None else zeros(c)]
    if r is not None:
        leaves.append(r.double())
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    xd, w1d, b1d, w2d, b2d = leaves[:5]
    pooled = F.adaptive_avg_pool2d(xd, 1)
    hidden = F.conv2d(pooled, w1d, b1d)
    gate = torch.sigmoid(F.conv2d(REFERENCE_ACT[act](hidden), w2d, b2d))
    y = xd * gate
    if r is not None:
        y = y + leaves[5]
    y = REFERENCE_ACT[post](y)
    grads = torch.autograd.grad(y, leaves, dy.double())
    saved = [t.detach().flatten(1) for t in (pooled, hidden, gate)]
    return y.detach(), saved, grads


def assert_close(name, got, ref, tol):
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(got.double(), ref.reshape(got.shape), rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_se_kernels_match_pytorch(emu, case):
    n, c, h, w, cr, dtype = case.n, case.c, case.h, case.w, case.cr, case.dtype
    x, xg = nhwc_tensor(n, c, h, w, dtype, case.layout, case.offsets[0], 0, shift=0.3)
    r, rg = nhwc_tensor(n, c, h, w, dtype, case.layout, case.offsets[1], 1) if case.residual else (None, None)
    dy, dyg = nhwc_tensor(n, c, h, w, dtype, case.layout, case.offsets[2], 2)
    wdtype = ACC[dtype] if case.wacc else dtype
    w1, b1, w2, b2, wguards = fc_params(c, cr, wdtype, case.w4d, case.bias)
    acc = ACC[dtype]

    # the case reaches the path it names (the launchers' own plans for these tensors)
    fwd_plan = emu.se.forward_plan(x, r, cr, case.sms)
    bwd_plan = emu.se.backward_plan(dy, x, r, cr, case.sms)
    form = tuple("vec" if plan["vec"] > 1 else "scalar" for plan in (fwd_plan, bwd_plan))
    assert form == case.form, (fwd_plan, bwd_plan)
    if case.multi:
        for plan in (fwd_plan, bwd_plan):
            assert plan["partials"] > 1 and plan["chunks"] > 1, plan

    y, pooled, hidden, gate = emu.se.forward(x, w1, b1, w2, b2, r, case.act, case.post, case.sms)
    y_ref, saved_ref, grads_ref = reference(x, w1, b1, w2, b2, r, case.act, case.post, dy)
    tol, acc_tol = TOL[dtype], TOL[acc]
    assert y.dtype == dtype and y.shape == x.shape
    assert_close("y", y, y_ref, tol)
    for name, got, ref in zip(["pooled", "hidden", "gate"], [pooled, hidden, gate], saved_ref):
        assert got.dtype == acc
        assert_close(name, got, ref, acc_tol)

    saved = [Guarded(t) for t in (pooled, hidden, gate)]  # out-of-bounds reads of them give NaN
    dx, dw1, db1, dw2, db2, dr = emu.se.backward(dy, x, w1, w2, r, *[s.t for s in saved], case.act, case.post,
                                                  case.sms)
    assert (dr is None) == (r is None)
    got = [dx, dw1, db1, dw2, db2] + ([dr] if r is not None else [])
    for name, g, ref, like in zip(["dx", "dw1", "db1", "dw2", "db2", "dresidual"], got, grads_ref,
                                  [x, w1, None, w2, None, x]):
        want = dtype if name in ("dx", "dresidual") else wdtype
        assert g.dtype == want, name
        if like is not None:
            assert g.shape == like.shape, name
        assert_close(name, g, ref, TOL[want])

    for name, gb in [("x", xg), ("residual", rg), ("dy", dyg)] + [("saved", s) for s in saved] + \
            [("weights", gw) for gw in wguards]:
        if gb is not None:
            gb.check(name)


def test_shared_memory_above_48k_is_raised_and_used(emu):
    """C = 3072 in float64: the excite kernel needs 8 * (2C + C_r) > 48 KiB of shared memory and the backward
    8 * (2C + C_r + 256); the launchers must raise the limit (cudaFuncSetAttribute), which the emulator
    enforces like CUDA."""
    n, c, cr = 1, 3072, 1
    x, _ = nhwc_tensor(n, c, 1, 1, F64, "nhwc", 0, 0, shift=0.3)
    dy, _ = nhwc_tensor(n, c, 1, 1, F64, "nhwc", 0, 2)
    assert emu.se.forward_plan(x, None, cr, 4)["smem"] > 48 * 1024
    assert emu.se.backward_plan(dy, x, None, cr, 4)["smem"] > 48 * 1024
    w1, b1, w2, b2, _ = fc_params(c, cr, F64, True, True)
    y, pooled, hidden, gate = emu.se.forward(x, w1, b1, w2, b2, None, "silu", "relu", 4)
    y_ref, saved_ref, grads_ref = reference(x, w1, b1, w2, b2, None, "silu", "relu", dy)
    assert_close("y", y, y_ref, TOL[F64])
    for name, got, ref in zip(["pooled", "hidden", "gate"], [pooled, hidden, gate], saved_ref):
        assert_close(name, got, ref, TOL[F64])
    grads = emu.se.backward(dy, x, w1, w2, None, pooled, hidden, gate, "silu", "relu", 4)
    assert grads[5] is None
    for name, g, ref in zip(["dx", "dw1", "db1", "dw2", "db2"], grads[:5], grads_ref):
        assert_close(name, g, ref, TOL[F64])


def test_empty_batch_succeeds_without_launching(emu_module):
    emu = emu_module
    se_kernels = ["se_pool_kernel", "se_excite_scale_kernel", "se_grad_gate_kernel", "se_backward_kernel"]
    before = {k: emu.launched().get(k, 0) for k in se_kernels}
    # the launchers: nothing to do is success (n, hw, C or C_r zero)
    for shape in [(0, 9, 16, 4), (2, 0, 16, 4), (2, 9, 0, 4), (2, 9, 16, 0)]:
        assert emu.se.launch_empty(*shape) == (0, 0), shape
    # the glue: empty outputs, zero weight gradients
    x = torch.empty(0, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    w1, b1, w2, b2, _ = fc_params(16, 4, F32, True, True)
    y, pooled, hidden, gate = emu.se.forward(x, w1, b1, w2, b2, None, "relu", "none", 4)
    assert y.shape == x.shape and pooled.shape == (0, 16) and hidden.shape == (0, 4) and gate.shape == (0, 16)
    dx, dw1, db1, dw2, db2, dr = emu.se.backward(x, x, w1, w2, None, pooled, hidden, gate, "relu", "none", 4)
    assert dx.shape == x.shape and dr is None
    for g, like in [(dw1, w1), (db1, b1), (dw2, w2), (db2, b2)]:
        assert g.shape == like.shape and not g.any()
    assert {k: emu.launched().get(k, 0) for k in se_kernels} == before


def test_the_gpu_cases_run_in_emulation(emu_forward):
    """The emulation half of the SE cases of gpu_cases.py (tools/emu_vs_gpu.py) keeps working without a GPU."""
    import gpu_cases

    cases = [c for c in gpu_cases.CASES if c.name.startswith("se_")]
    assert cases
    for case in cases:
        out = case.fn("emu", emu_forward)
        assert {"y", "pooled", "hidden", "gate"} <= set(out)
        for name, t in out.items():
            assert t.isfinite().all(), f"{case.name}: {name}"


def test_the_cases_cover_every_path():
    """The table above keeps covering what the kernels branch on (a static check of CASES)."""
    for dtype in (F32, F64, F16, BF16):
        forms = {f for case in CASES if case.dtype == dtype for f in case.form}
        assert forms == {"vec", "scalar"}, dtype
    for dtype in (F16, BF16):
        assert {case.wacc for case in CASES if case.dtype == dtype} == {True, False}, dtype
    assert {case.residual for case in CASES} == {True, False}
    assert {case.bias for case in CASES} == {True, False}
    assert {case.act for case in CASES} == {"relu", "silu"} and {case.post for case in CASES} == {"none", "relu"}
    assert any(case.multi for case in CASES) and any(not case.multi for case in CASES)
    assert any(case.n > 32 for case in CASES) and any(8 < case.n <= 32 for case in CASES)
    assert any(case.c > 256 for case in CASES) and any(case.cr > 32 for case in CASES)
    assert any(case.cr % 8 and case.c % 8 for case in CASES)  # tails of both tiles


def test_a_missing_barrier_in_the_block_sums_is_caught():
    """A copy of se.cu without the barrier of the shared-memory tree that sums a block's rows (pool and
    grad-gate kernels) gives wrong pooled means under some scheduling order."""
    import emu_build
    from conftest import ORDERS, schedule

    broken = emu_build.build_patched(
        "se_nobarrier",
        {"csrc/cuda/se.cu": [("        smem[t * VEC + k] = s[k];\n      }\n    }\n    __syncthreads();\n",
                              "        smem[t * VEC + k] = s[k];\n      }\n    }\n")]},
        only=["se"])
    n, c, h, w, cr = 1, 8, 6, 5, 2
    x, _ = nhwc_tensor(n, c, h, w, F32, "nhwc", 0, 0, shift=0.3)
    w1, b1, w2, b2, _ = fc_params(c, cr, F32, True, True)
    truth = x.double().mean((2, 3))
    wrong = []
    for order in ORDERS:
        with schedule(broken, *order):
            _, pooled, _, _ = broken.se.forward(x, w1, b1, w2, b2, None, "relu", "none", 1)
        wrong.append(not torch.allclose(pooled.double(), truth, atol=1e-5))
    assert any(wrong), "the planted race went unnoticed under every scheduling order"
