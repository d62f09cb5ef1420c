"""The bn_act CUDA kernels, run on the CPU by the emulator, against PyTorch (float64 reference)."""

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import REFERENCE_ACT, assert_within_one_ulp, torch_running_stats_update

TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 2e-2, torch.bfloat16: 1.5e-1}


def reference(x, w, b, r, rm, rv, training, act, dy):
    x, r = x.double().requires_grad_(), (r.double().requires_grad_() if r is not None else None)
    w, b = w.double().requires_grad_(), b.double().requires_grad_()
    z = F.batch_norm(x, rm.double().clone(), rv.double().clone(), w, b, training, 0.0, 1e-5)
    y = REFERENCE_ACT[act](z + r if r is not None else z)
    grads = torch.autograd.grad(y, [x, w, b] + ([r] if r is not None else []), dy.double())
    return y, grads


# (shape, dtype, layout, act, residual, training, storage offset): covers the vector paths (C % 4 == 0 for
# float32, C % 8 == 0 for half types, C % 2 == 0 for float64), the scalar path (odd C, misaligned storage),
# several row blocks per channel, eval mode and every activation.
CASES = [
    ((2, 8, 5, 3), torch.float32, "channels_last", "relu", False, True, 0),
    ((3, 5, 4, 3), torch.float32, "nchw", "silu", True, True, 0),
    ((2, 16, 3, 3), torch.float16, "channels_last", "relu6", True, True, 0),
    ((1, 8, 7, 5), torch.bfloat16, "nchw", "hardswish", False, True, 0),
    ((2, 6, 3, 5), torch.float64, "channels_last", "silu", True, False, 0),
    ((2, 12, 3, 3), torch.float32, "channels_last", "none", True, False, 1),
    ((4, 3, 1, 1), torch.float16, "nchw", "relu", False, True, 0),
    ((2, 40, 9, 7), torch.float32, "channels_last", "relu", True, True, 0),
]


def make(shape, dtype, layout, offset, seed):
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    flat = (torch.randn(n + offset, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
    x = flat[offset:].view(shape) if layout == "nchw" else \
        flat[offset:].view(shape[0], shape[2], shape[3], shape[1]).permute(0, 3, 1, 2)
    return x


@pytest.mark.parametrize("shape,dtype,layout,act,with_residual,training,offset", CASES)
def test_bn_act_kernels_match_pytorch(emu, shape, dtype, layout, act, with_residual, training, offset):
    c = shape[1]
    x = make(shape, dtype, layout, offset, 0)
    r = make(shape, dtype, layout, offset, 1) if with_residual else None
    dy = make(shape, dtype, layout, 0, 2)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w = torch.linspace(0.5, 1.5, c, dtype=acc)
    b = torch.linspace(-0.4, 0.4, c, dtype=acc)
    rm, rv = torch.linspace(-0.2, 0.2, c, dtype=acc), torch.linspace(0.5, 2.0, c, dtype=acc)

    y, mean, var = emu.bn_act.forward(x, w, b, r, rm, rv, training, 1e-5, act, 2)
    y_ref, grads_ref = reference(x, w, b, r, rm, rv, training, act, dy)
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    if training:
        xd = x.double()
        torch.testing.assert_close(mean.double(), xd.mean((0, 2, 3)), rtol=tol, atol=tol)
        torch.testing.assert_close(var.double(), xd.var((0, 2, 3), unbiased=False), rtol=tol, atol=tol)
    dx, dw, db, dr = emu.bn_act.backward(dy, x, w, b, r, mean, var, training, 1e-5, act, 2)
    got = [dx, dw, db] + ([dr] if with_residual else [])
    assert (dr is None) == (not with_residual)
    for name, g, ref in zip(["dx", "dweight", "dbias", "dresidual"], got, grads_ref):
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(g.double(), ref, rtol=tol, atol=tol * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("running_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("momentum", [0.1, 0.8, None])
def test_update_stats_kernel_matches_pytorch(emu, running_dtype, momentum):
    """More channels than the block's threads (each thread loops); every thread reads the batch count before
    thread 0 increments it (run under every scheduling order: without the barrier, momentum=None fails)."""
    save_dtype = torch.float64 if running_dtype == torch.float64 else torch.float32
    g = torch.Generator().manual_seed(3)
    c = 300
    # one sign, statistics apart: no cancellation in lerp (see test_bn_act.stats_operands)
    ours = [(torch.rand(c, generator=g) * 0.5 + 0.5).to(running_dtype), (torch.rand(c, generator=g) + 0.5).to(running_dtype),
            torch.tensor(6), (torch.rand(c, generator=g) + 1.5).to(save_dtype), (torch.rand(c, generator=g) + 2.5).to(save_dtype)]
    ref = [t.clone() for t in ours]
    emu.bn_act.update_stats(*ours, momentum, 12)
    torch_running_stats_update(*ref, momentum, 12)
    for name, a, b in zip(["running_mean", "running_var", "num_batches_tracked"], ours, ref):
        assert_within_one_ulp(a, b, name)


def test_a_missing_barrier_in_the_row_reduction_is_caught():
    """A copy of bn_act.cu without the barrier of its shared-memory tree gives wrong statistics under some
    scheduling order (the harness sees the race, not only the real GPU)."""
    import emu_build
    from conftest import ORDERS, schedule

    broken = emu_build.build_patched(
        "bn_act_nobarrier",
        {"csrc/cuda/bn_act.cu": [("      smem[t] = s;\n    }\n    __syncthreads();", "      smem[t] = s;\n    }")]},
        only=["bn_act"])
    x = make((4, 8, 6, 5), torch.float32, "channels_last", 0, 0)
    w, b = torch.ones(8), torch.zeros(8)
    truth = x.double().mean((0, 2, 3))
    wrong = []
    for order in ORDERS:
        with schedule(broken, *order):
            _, mean, _ = broken.bn_act.forward(x, w, b, None, None, None, True, 1e-5, "none", 2)
        wrong.append(not torch.allclose(mean.double(), truth, atol=1e-5))
    assert any(wrong), "the planted race went unnoticed under every scheduling order"
