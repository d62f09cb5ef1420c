"""Cases for tools/emu_vs_gpu.py: the same tiny inputs through the real CUDA op and through the emulator.

A case is a function ``case(target, emu) -> dict[str, Tensor]`` registered with ``@gpu_case``. It builds
its inputs deterministically on the CPU (seeded), then

* ``target == "gpu"``: moves them to CUDA and calls the real op (``torch.ops.pycnn.*``);
* ``target == "emu"``: calls the op's emulation binding (``emu.<op>.<fn>``, tests/emu/bind_<op>.cpp) on the
  CPU tensors;

and returns the outputs by name (any device; they are compared on the CPU). ``exact=True`` demands identical
bits; use it only where both builds perform the same operations in the same order (see docs/emulation.md:
nvcc contracts a*b+c into FMA by default while the host build does not, and the GPU's expf/rsqrtf differ from
the host's in the last bits). Otherwise the maximum difference in ULPs is reported against ``max_ulp``.

Example (for the bn_act op; adapt to its real signature):

    @gpu_case(exact=False, max_ulp=4)
    def bn_act_forward_relu(target, emu):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 5, 3, generator=g)
        w, b = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g)
        if target == "gpu":
            y, mean, var = torch.ops.pycnn.bn_act(x.cuda(), w.cuda(), b.cuda(), ...)
        else:
            y, mean, var = emu.bn_act.forward(x, w, b, ...)
        return {"y": y, "mean": mean, "var": var}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CASES: list["GpuCase"] = []


@dataclass
class GpuCase:
    name: str
    fn: Callable
    exact: bool
    max_ulp: int


def gpu_case(exact: bool = False, max_ulp: int = 0, name: str | None = None):
    def register(fn):
        CASES.append(GpuCase(name or fn.__name__, fn, exact, max_ulp))
        return fn

    return register


# ---- cases ----------------------------------------------------------------------------------------------------
# (one block per op; keep shapes tiny but with tails, e.g. C not a multiple of the vector width)


def _bn_act_inputs(shape, dtype, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 1.5 + 0.3).to(dtype).contiguous(memory_format=torch.channels_last)
    r = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    c = shape[1]
    w, b = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    return x, r, dy, w, b


def _bn_act_case(target, emu, shape, dtype, act):
    import torch

    x, r, dy, w, b = _bn_act_inputs(shape, dtype)
    if target == "gpu":
        args = [t.cuda() for t in (x, w, b, r)]
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        y, mean, var = torch.ops.pycnn.bn_act_forward(*args, None, None, True, 1e-5, act)
        dx, dw, db, dr = torch.ops.pycnn.bn_act_backward(dy.cuda(), args[0], args[1], args[2], args[3], mean, var,
                                                         True, 1e-5, act)
    else:
        # the emulated launch uses the GPU's grid (same SM count): the same partial sums in the same order
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 2
        y, mean, var = emu.bn_act.forward(x, w, b, r, None, None, True, 1e-5, act, sms)
        dx, dw, db, dr = emu.bn_act.backward(dy, x, w, b, r, mean, var, True, 1e-5, act, sms)
    return {"y": y, "mean": mean, "var": var, "dx": dx, "dweight": dw, "dbias": db, "dresidual": dr}


@gpu_case(exact=False, max_ulp=8)
def bn_act_float32_relu(target, emu):
    import torch
    return _bn_act_case(target, emu, (2, 24, 5, 3), torch.float32, "relu")


@gpu_case(exact=False, max_ulp=8)
def bn_act_float16_silu_scalar_path(target, emu):
    import torch
    return _bn_act_case(target, emu, (3, 7, 4, 5), torch.float16, "silu")


def _se_inputs(shape, cr, dtype, wdtype, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    nhwc = lambda t: t.to(dtype).contiguous(memory_format=torch.channels_last)
    x = nhwc(torch.randn(shape, generator=g) + 0.3)
    r = nhwc(torch.randn(shape, generator=g))
    dy = nhwc(torch.randn(shape, generator=g))
    c = shape[1]
    w1 = (torch.randn(cr, c, 1, 1, generator=g) / c ** 0.5).to(wdtype)
    w2 = (torch.randn(c, cr, 1, 1, generator=g) / cr ** 0.5).to(wdtype)
    b1, b2 = (torch.randn(cr, generator=g) * 0.3).to(wdtype), (torch.randn(c, generator=g) * 0.3).to(wdtype)
    return x, r, dy, w1, b1, w2, b2


def _se_case(target, emu, shape, cr, dtype, wdtype, act, post_act, residual=True, backward=True):
    import torch

    x, r, dy, w1, b1, w2, b2 = _se_inputs(shape, cr, dtype, wdtype)
    r = r if residual else None
    if target == "gpu":
        x, dy, w1, b1, w2, b2 = [t.cuda() for t in (x, dy, w1, b1, w2, b2)]
        r = r.cuda() if r is not None else None
        y, pooled, hidden, gate = torch.ops.pycnn.se_forward(x, w1, b1, w2, b2, r, act, post_act)
        grads = torch.ops.pycnn.se_backward(dy, x, w1, w2, r, pooled, hidden, gate, act, post_act) \
            if backward else ()
    else:
        # the GPU's SM count: the same row chunks, so the same partial sums in the same order
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 2
        y, pooled, hidden, gate = emu.se.forward(x, w1, b1, w2, b2, r, act, post_act, sms)
        grads = emu.se.backward(dy, x, w1, w2, r, pooled, hidden, gate, act, post_act, sms) if backward else ()
    out = {"y": y, "pooled": pooled, "hidden": hidden, "gate": gate}
    out.update((k, g) for k, g in zip(["dx", "dw1", "db1", "dw2", "db2", "dresidual"], grads) if g is not None)
    return out


# Not bit-exact: nvcc contracts the FC dot products and the gradient sums into FMAs, and the GPU's expf (sigmoid,
# silu) differs from the host's in the last bits. The limits are twice the largest distance of the emulation
# from the correctly rounded float64 result (the GPU is assumed no farther): small in the forward without a
# residual; large for float32 gradients, whose smallest elements come out of cancellation (dx = g * gate +
# dpooled / hw, the weight-gradient sums) - a wrong term would still be millions of ULPs off. Half outputs are
# rounded once from float, so they agree to a rounding step.
@gpu_case(exact=False, max_ulp=32)
def se_float32_forward_silu_vector_path(target, emu):
    import torch
    return _se_case(target, emu, (2, 24, 5, 3), 6, torch.float32, torch.float32, "silu", "relu", residual=False,
                    backward=False)


@gpu_case(exact=False, max_ulp=8192)
def se_float32_residual_silu_relu_vector_path(target, emu):
    import torch
    return _se_case(target, emu, (2, 24, 5, 3), 6, torch.float32, torch.float32, "silu", "relu")


@gpu_case(exact=False, max_ulp=64)
def se_float16_relu_scalar_path_float32_weights(target, emu):
    import torch
    return _se_case(target, emu, (3, 13, 4, 5), 5, torch.float16, torch.float32, "relu", "none")


def _mbconv_case(target, emu, case, reduced, dtype):
    """pycnn.mbconv_forward on one block (tests/kernel_checks.py's seeded inputs), with SE when reduced > 0."""
    import torch
    from kernel_checks import make_mbconv_block, make_mbconv_se

    c, e, co, k, s, res, act, h, w = case
    x, expand, dw, project = make_mbconv_block(case, dtype=dtype)
    se = make_mbconv_se(e, reduced, dtype=dtype) if reduced else (None,) * 4
    args = [x, *expand, *dw, *project]
    if target == "gpu":
        args, se = [None if t is None else t.cuda() for t in args], [None if t is None else t.cuda() for t in se]
        y = torch.ops.pycnn.mbconv_forward(*args, s, act, res, *se, "silu")
    else:
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 2
        y = emu.mbconv.forward(*args, s, act, res, *se, "silu", sms)
    return {"y": y}


# Not bit-exact: nvcc contracts the expand, depthwise and projection sums into FMAs and the GPU's expf (silu)
# differs from the host's in the last bits; the projection's outputs near 0 come out of cancellation. The limits
# are twice the emulation's largest distance from the correctly rounded float64 result on these inputs (4505 and
# 393 ULPs: the float16 SE path rounds d to float16 before the scale, as the unfused block does).
@gpu_case(exact=False, max_ulp=9010)
def mbconv_float32_block_tiles_with_tails(target, emu):
    import torch
    return _mbconv_case(target, emu, (7, 21, 5, 5, 2, False, "relu6", 11, 19), 0, torch.float32)


@gpu_case(exact=False, max_ulp=786)
def mbconv_float16_with_se_and_residual(target, emu):
    import torch
    return _mbconv_case(target, emu, (24, 72, 24, 3, 1, True, "silu", 5, 9), 6, torch.float16)
