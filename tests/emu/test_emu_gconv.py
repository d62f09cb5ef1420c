"""The gconv CUDA kernels, run on the CPU by the emulator (tests/emu, docs/emulation.md), against PyTorch
(float64 reference; float16/bfloat16 by the half-precision rule against PyTorch's own CPU composition).
Skipped where the emulation harness is not present."""

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import reference_epilogue

pytest.importorskip("emu_build", reason="the emulation harness (tests/emu/conftest.py) is not in this checkout")

SIMT, TENSOR_CORES = 1, 2


def reference(x, w, sc, b, r, stride, padding, groups, act, dy, dtype=torch.float64):
    leaves = [t.to(dtype).requires_grad_() if t is not None and t.is_floating_point() and t.dim() == 4 else t
              for t in (x, w, r)]
    x, w, r = leaves
    sc = sc.double().requires_grad_() if sc is not None else None
    b = b.double().requires_grad_() if b is not None else None
    y = reference_epilogue(F.conv2d(x, w, None, stride, padding, 1, groups), sc, b, r, act)
    wrt = [t for t in (x, w, sc, b, r) if t is not None]
    return [y] + list(torch.autograd.grad(y, wrt, dy.to(dtype)))


def make(case, dtype, scale, bias, residual, layout, seed=0):
    n, ci, co, h, w, k, s, p, g = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, h, w, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(co, ci // g, k, k, generator=gen, dtype=torch.float64) * (ci // g * k * k) ** -0.5
    sc = torch.rand(co, generator=gen) + 0.5 if scale else None
    b = torch.randn(co, generator=gen) * 0.3 if bias else None
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    r = torch.randn(n, co, oh, ow, generator=gen, dtype=torch.float64).to(dtype) if residual else None
    dy = torch.randn(n, co, oh, ow, generator=gen, dtype=torch.float64).to(dtype)
    return x.to(dtype), wt.to(dtype), sc, b, r, dy


def run(mod, case, x, w, sc, b, r, dy, act, path, cc=9, sms=2):
    _, _, _, _, _, _, s, p, g = case
    y, saved = mod.gconv.forward(x, w, sc, b, r, [s, s], [p, p], g, act, True, path, cc, sms)
    grads = mod.gconv.backward(dy, x, w, sc, b, r, saved, [s, s], [p, p], g, act, path, cc, sms)
    return [y] + [t for t in grads if t is not None]


# (N, C_in, C_out, H, W, k, stride, padding, groups): group widths 1, 2, 3, 8, 12, 16 and 20 (vector widths
# 1/2/4/8, the A/B tile vector and scalar loads, BN 16/32), stride 2 with odd sizes, H/W below the kernel.
CASES = [
    (2, 8, 8, 5, 5, 3, 1, 1, 8),
    (1, 8, 12, 5, 4, 3, 2, 1, 4),
    (1, 9, 6, 4, 3, 3, 1, 1, 3),
    (1, 16, 16, 5, 5, 3, 2, 1, 2),
    (1, 24, 24, 3, 3, 3, 1, 1, 2),
    (1, 32, 40, 4, 4, 1, 1, 0, 2),
    (2, 12, 20, 2, 1, 3, 1, 1, 1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path", [SIMT, TENSOR_CORES])
def test_gconv_kernels_float32_and_half(emu_forward, case, path):
    # float32 always runs the SIMT kernels; the tensor-core path is forced for float16.
    dtype = torch.float32 if path == SIMT else torch.float16
    x, w, sc, b, r, dy = make(case, dtype, True, True, True, "channels_last")
    mine = run(emu_forward, case, x, w, sc, b, r, dy, "silu", path)
    truth = reference(x, w, sc, b, r, case[6], case[7], case[8], "silu", dy)
    if dtype == torch.float32:
        for a, t in zip(mine, truth):
            torch.testing.assert_close(a.double(), t, rtol=1e-4, atol=1e-4)
    else:  # float16 inputs, float32 accumulation: within float16 rounding of the result
        for a, t in zip(mine, truth):
            err = (a.double() - t).abs().max().item()
            assert err <= 2e-2 * max(1.0, t.abs().max().item()), err


@pytest.mark.parametrize("act", ["none", "relu6", "hardswish"])
def test_gconv_schedules_and_epilogues(emu, act):
    # Every thread order (barriers around the shared-memory tiles), bfloat16 tensor cores, no scale/bias.
    case = (1, 16, 16, 4, 3, 3, 1, 1, 1)
    x, w, sc, b, r, dy = make(case, torch.bfloat16, False, act != "none", False, "nchw", seed=3)
    mine = run(emu, case, x, w, sc, b, r, dy, act, TENSOR_CORES, sms=1)
    truth = reference(x, w, sc, b, r, 1, 1, 1, act, dy)
    for a, t in zip(mine, truth):
        assert (a.double() - t).abs().max().item() <= 6e-2 * max(1.0, t.abs().max().item())


def test_gconv_old_devices_and_launch_counts(emu_forward):
    # Launch counts as differences: the record is global (the coverage test reads it), never reset here.
    def launches_of(fn):
        before = dict(emu_forward.launched())
        fn()
        after = emu_forward.launched()
        return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}

    case = (1, 16, 16, 3, 3, 3, 1, 1, 1)
    x, w, sc, b, r, dy = make(case, torch.float16, True, False, False, "channels_last", seed=5)
    launched = launches_of(lambda: run(emu_forward, case, x, w, sc, b, r, dy, "relu", 0, cc=7))  # sm_7x: SIMT
    assert "gconv_wmma_kernel" not in launched and launched.get("gconv_forward_simt_kernel") == 1
    launched = launches_of(lambda: run(emu_forward, case, x, w, sc, b, r, dy, "relu", 0, cc=9))  # sm_90: TC
    assert launched.get("gconv_wmma_kernel") == 2  # forward and input gradient
