"""What the kernel tests share: the reference activations (PyTorch's, for every activation pycnn's kernels run),
the input layouts of the parity grids and the half-precision error rule (docs/design.md, testing)."""
import itertools

import torch

from pycnn.fused import ACT_FNS
from pycnn.opspec import KERNEL_ACTS

REFERENCE_ACT = {"none": lambda z: z, **{name: ACT_FNS[name] for name in KERNEL_ACTS if name != "none"}}
LAYOUTS = ["nchw", "channels_last", "strided"]  # contiguous, NHWC and a non-contiguous view


def make_input(shape, layout, dtype=torch.float32, device="cpu", seed=0, scale=1.0, shift=0.0):
    """A seeded float64 normal input (times scale, plus shift) in one of LAYOUTS, then cast; "strided" is every
    other column of a wider tensor (not scaled: it tests the view, not the values)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        n, c, h, w = shape
        x = torch.randn(n, c, h, 2 * w, generator=g, dtype=torch.float64)[..., ::2]
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device=device, dtype=dtype)


def reference_epilogue(z, scale, bias, residual, act):
    """act(z * scale + bias + residual) in z's dtype, each absent (None) term skipped: the epilogue the convolution
    kernels fuse after the convolution z, computed by PyTorch."""
    if scale is not None:
        z = z * scale.to(z.dtype).view(1, -1, 1, 1)
    if bias is not None:
        z = z + bias.to(z.dtype).view(1, -1, 1, 1)
    if residual is not None:
        z = z + residual
    return REFERENCE_ACT[act](z)


def grid(*axes):
    """Every combination of the axes' values (a parity grid for pytest.mark.parametrize)."""
    return list(itertools.product(*axes))


HALF_DTYPES = [torch.float16, torch.bfloat16]
# The rule's absolute floor for values near 0: about one unit in the last place at 1 (2^-10, 2^-7).
HALF_FLOOR = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


def max_errors(values, truth):
    """The largest absolute error of each tensor against its float64 truth (lists in the same order)."""
    return [(v.double() - t).abs().max().item() for v, t in zip(values, truth)]


def assert_half_precision_rule(names, mine, theirs, dtype):
    """The flash-attention rule: in float16/bfloat16 each of our errors against a float32 (or float64) reference
    is at most twice PyTorch's own half-precision error on the same inputs, plus the dtype's floor for values
    near 0 (HALF_FLOOR)."""
    assert len(names) == len(mine) == len(theirs), (names, len(mine), len(theirs))
    floor = HALF_FLOOR[dtype]
    for name, e_mine, e_theirs in zip(names, mine, theirs):
        assert e_mine <= 2 * e_theirs + floor, f"{name}: error {e_mine:.3g} vs PyTorch's {e_theirs:.3g}"


def torch_running_stats_update(rm, rv, nbt, save_mean, save_var, momentum, count):
    """nn.BatchNorm2d's running-statistics update written with PyTorch's ops: the reference of
    pycnn::bn_act_update_stats_ (CPU and, emulated, CUDA)."""
    if nbt is not None:
        nbt.add_(1)
    factor = momentum if momentum is not None else 1.0 / nbt.to(rm.dtype)
    rm.lerp_(save_mean.to(rm.dtype), factor)
    rv.lerp_((save_var * (count / (count - 1))).to(rv.dtype), factor)


_SAME_WIDTH_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
                   torch.bfloat16: torch.int16}


def assert_within_one_ulp(actual, expected, name="") -> None:
    """Equal, or neighbours in the dtype's representation (same sign; finite): the bits as integers differ by 1
    at most. Integer tensors: equal."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
    if not actual.is_floating_point():
        assert torch.equal(actual, expected), name
        return
    assert bool(torch.isfinite(expected).all()) and bool(((actual < 0) == (expected < 0)).all()), name
    as_int = _SAME_WIDTH_INT[actual.dtype]
    steps = (actual.cpu().view(as_int).long() - expected.cpu().view(as_int).long()).abs()
    assert int(steps.max()) <= 1, f"{name}: {int((steps > 1).sum())} elements more than one ulp apart"
