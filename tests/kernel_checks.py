"""What the kernel tests share: the reference activations (PyTorch's, for every activation pycnn's kernels run),
the input layouts of the parity grids and the half-precision error rule (docs/design.md, testing)."""
import itertools

import torch
import torch.nn.functional as F

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


# ---- pycnn.mbconv's blocks (tests/test_mbconv.py and the emulated CUDA kernel, tests/emu/test_emu_mbconv.py)

def make_mbconv_block(case, dtype=torch.float64, seed=0, batch=2):
    """A seeded float64 block (cast to dtype) for a case (C, E, C_out, k, stride, residual, act, H, W):
    channels_last input and (weight, bias) of the expand (None, None when E == C), depthwise and project convs."""
    c, e, co, k, s, res, act, h, w = case
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    x = rand(batch, c, h, w).contiguous(memory_format=torch.channels_last)
    expand = (rand(e, c, 1, 1, scale=c ** -0.5), rand(e, scale=0.5)) if e != c else (None, None)
    dw = (rand(e, 1, k, k, scale=1.0 / k), rand(e, scale=0.5))
    project = (rand(co, e, 1, 1, scale=e ** -0.5), rand(co, scale=0.5))
    return x, expand, dw, project


def make_mbconv_se(e, reduced, dtype=torch.float64, seed=1):
    """fc1 (reduced, e, 1, 1) and fc2 (e, reduced, 1, 1) with biases, as torchvision's SqueezeExcitation."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    return (rand(reduced, e, 1, 1, scale=e ** -0.5), rand(reduced), rand(e, reduced, 1, 1, scale=reduced ** -0.5),
            rand(e))


def mbconv_reference(x, expand, dw, project, stride, act, residual, se=None, se_act="relu"):
    """The unfused composition pycnn.mbconv is checked against (PyTorch's convs and activations)."""
    f = REFERENCE_ACT[act]
    t = x if expand[0] is None else f(F.conv2d(x, expand[0], expand[1]))
    k = dw[0].size(2)
    t = f(F.conv2d(t, dw[0], dw[1], stride=stride, padding=k // 2, groups=t.size(1)))
    if se is not None:  # torchvision.ops.SqueezeExcitation
        t = t * torch.sigmoid(F.conv2d(REFERENCE_ACT[se_act](F.conv2d(t.mean((2, 3), keepdim=True), se[0], se[1])),
                                       se[2], se[3]))
    y = F.conv2d(t, project[0], project[1])
    return y + x if residual else y


def assert_mbconv_matches_reference(run, case, dtype, reduced=0, se_act="relu", batch=2, device="cpu", nan_at=None):
    """run(x, expand, dw, project, stride, act, residual, se, se_act) in `dtype` on `device` against the float64
    composition on the CPU: float64 within 1e-9, float32 within 4x PyTorch's own float32 error, float16/bfloat16
    by the half-precision rule. `reduced` > 0 adds an SE. nan_at=(n, c, h, w): that input value is NaN, and so must
    the output be wherever the reference's is (and only there)."""
    c, e, co, k, s, res, act, h, w = case
    block = make_mbconv_block(case, batch=batch)
    se = make_mbconv_se(e, reduced) if reduced else None
    if nan_at is not None:
        block[0][nan_at] = float("nan")
    truth = mbconv_reference(*block, s, act, res, se, se_act)

    def on(tensors, dt, dev):
        if tensors is None:
            return None
        cast = tuple(None if t is None else t.to(device=dev, dtype=dt) for t in tensors)
        return cast

    def args(dt, dev):
        x, expand, dw, project = block
        x = x.to(device=dev, dtype=dt).contiguous(memory_format=torch.channels_last)
        return (x, on(expand, dt, dev), on(dw, dt, dev), on(project, dt, dev), s, act, res, on(se, dt, dev), se_act)

    y = run(*args(dtype, device))
    assert y.shape == truth.shape and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    y = y.cpu().double()
    if nan_at is not None:
        assert torch.equal(torch.isnan(y), torch.isnan(truth)), "NaN where the reference has none, or none where it has"
        keep = ~torch.isnan(truth)
        y, truth = y[keep], truth[keep]
    err = (y - truth).abs().max().item() if y.numel() else 0.0
    if dtype == torch.float64:
        assert err < 1e-9, err
        return
    theirs_device = device if dtype != torch.float32 else "cpu"
    theirs_out = mbconv_reference(*args(dtype, theirs_device)[:4], s, act, res, args(dtype, theirs_device)[7], se_act)
    theirs_out = theirs_out.cpu().double()
    if nan_at is not None:
        theirs_out = theirs_out[keep]
    theirs = (theirs_out - truth).abs().max().item() if truth.numel() else 0.0
    if dtype == torch.float32:
        assert err <= 4 * max(theirs, 1e-6), (err, theirs)
    else:
        assert_half_precision_rule(["y"], [err], [theirs], dtype)
