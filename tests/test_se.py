"""pycnn.se / SqueezeExcite against the eager composition (PyTorch is the reference):
adaptive_avg_pool2d -> conv2d 1x1 -> act -> conv2d 1x1 -> sigmoid -> mul [+ residual] -> post_act."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import pycnn
from pycnn.nn import SqueezeExcite
import kernel_checks
from kernel_checks import HALF_DTYPES, LAYOUTS, REFERENCE_ACT, assert_half_precision_rule, max_errors

# (N, C, H, W, C_r): channels not a multiple of 8, 1x1 spatial, odd sizes, batch 1.
SHAPES = [(2, 8, 5, 5, 2), (1, 13, 7, 9, 3), (4, 24, 1, 1, 6), (3, 17, 6, 4, 5), (2, 40, 3, 3, 10)]


def make_input(shape, layout, dtype=torch.float32, device="cpu", seed=0):
    return kernel_checks.make_input(shape, layout, dtype, device, seed, shift=0.3)


def make_params(c, cr, dtype=torch.float32, device="cpu", seed=1, bias=True):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(cr, c, 1, 1, generator=g, dtype=torch.float64) / c ** 0.5
    w2 = torch.randn(c, cr, 1, 1, generator=g, dtype=torch.float64) / cr ** 0.5
    b1 = torch.randn(cr, generator=g, dtype=torch.float64) * 0.3 if bias else None
    b2 = torch.randn(c, generator=g, dtype=torch.float64) * 0.3 if bias else None
    to = lambda t: t.to(device=device, dtype=dtype) if t is not None else None
    return to(w1), to(b1), to(w2), to(b2)


def reference(x, w1, b1, w2, b2, act="relu", post_act="none", residual=None):
    """The eager composition, as torchvision.ops.SqueezeExcitation computes it (+ the block's merge)."""
    w1 = w1.reshape(w1.size(0), w1.size(1), 1, 1)
    w2 = w2.reshape(w2.size(0), w2.size(1), 1, 1)
    s = F.adaptive_avg_pool2d(x, 1)
    s = torch.sigmoid(F.conv2d(REFERENCE_ACT[act](F.conv2d(s, w1, b1)), w2, b2))
    y = x * s
    if residual is not None:
        y = y + residual
    return REFERENCE_ACT[post_act](y)


def grads_of(fn, tensors, grad):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y = fn(*leaves)
    present = [t for t in leaves if t is not None]
    gs = torch.autograd.grad(y, present, grad)
    it = iter(gs)
    return y, [next(it) if t is not None else None for t in leaves]


def ours(x, w1, b1, w2, b2, act="relu", post_act="none", residual=None):
    return pycnn.ops.se(x, w1, b1, w2, b2, act=act, post_act=post_act, residual=residual)


def check_parity(shape, layout, act, post_act, with_residual, bias=True, tol=None, device="cpu", dtype=torch.float32,
                 weight_2d=False):
    n, c, h, w, cr = shape
    x = make_input((n, c, h, w), layout, dtype=dtype, device=device)
    r = make_input((n, c, h, w), layout, dtype=dtype, device=device, seed=7) if with_residual else None
    w1, b1, w2, b2 = make_params(c, cr, dtype=dtype, device=device, bias=bias)
    if weight_2d:
        w1, w2 = w1.flatten(1), w2.flatten(1)
    grad = make_input((n, c, h, w), "nchw", dtype=dtype, device=device, seed=3)
    inputs = [x, w1, b1, w2, b2, r]
    y, g = grads_of(lambda x, w1, b1, w2, b2, r: ours(x, w1, b1, w2, b2, act, post_act, r), inputs, grad)
    y_ref, g_ref = grads_of(lambda x, w1, b1, w2, b2, r: reference(x, w1, b1, w2, b2, act, post_act, r), inputs, grad)
    tol = tol or dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_ref, **tol)
    for name, a, b in zip(["input", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias", "residual"], g, g_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape and a.dtype == b.dtype, name
            torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad {name}: {m}")
    if layout != "strided":  # the output keeps the input's memory format
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt)
    return y


@pytest.mark.parametrize("shape,layout,act,post_act,with_residual", list(itertools.product(
    SHAPES, LAYOUTS, ["relu", "silu"], ["none", "relu"], [False, True])))
def test_matches_eager_composition(shape, layout, act, post_act, with_residual):
    check_parity(shape, layout, act, post_act, with_residual)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_without_bias_and_with_linear_weights(layout):
    check_parity((2, 11, 4, 3, 3), layout, "relu", "none", True, bias=False)
    check_parity((2, 11, 4, 3, 3), layout, "silu", "relu", False, weight_2d=True)


# Wide layers: channels_last pools in blocks of 256 channels (C = 300 leaves a partial one); the excitation
# runs in the kernel's own loops up to 2^20 multiply-adds per FC (first shape) and in ATen GEMMs above (second).
# fc2 takes dot products of w2's rows from C_r = 32 on (third shape), w2 transposed below.
@pytest.mark.parametrize("shape", [(1, 300, 5, 7, 20), (2, 1030, 3, 3, 520), (2, 200, 3, 3, 40)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_wide_layers_both_excitation_paths(shape, layout):
    check_parity(shape, layout, "silu", "relu", True, tol=dict(rtol=1e-4, atol=1e-5))
    check_parity(shape, layout, "relu", "none", False, bias=False, tol=dict(rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize("act", ["none", "relu6", "hardswish"])
def test_other_activations(act):
    check_parity((2, 10, 3, 5, 4), "channels_last", act, act, True)


def test_float32_weights_with_half_input():
    x = make_input((2, 12, 4, 4), "channels_last", dtype=torch.bfloat16)
    w1, b1, w2, b2 = make_params(12, 4)  # float32
    y = ours(x, w1, b1, w2, b2)
    y_ref = reference(x.float(), w1, b1, w2, b2)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref, rtol=1e-2, atol=1e-2)


def test_saved_vectors_are_not_differentiable():
    x = make_input((2, 6, 3, 3), "nchw").requires_grad_()
    w1, b1, w2, b2 = [t.requires_grad_() for t in make_params(6, 2)]
    out, pooled, hidden, gate = torch.ops.pycnn.se_forward(x, w1, b1, w2, b2, None, "relu", "none")
    assert out.requires_grad and not pooled.requires_grad and not hidden.requires_grad and not gate.requires_grad
    torch.testing.assert_close(pooled, x.mean((2, 3)))
    torch.testing.assert_close(hidden, pooled @ w1.flatten(1).t() + b1)


def test_empty_batch():
    x = torch.randn(0, 6, 3, 3)
    w1, b1, w2, b2 = make_params(6, 2)
    assert ours(x, w1, b1, w2, b2).shape == x.shape


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act,post_act", [("relu", "none"), ("silu", "relu"), ("hardswish", "silu")])
def test_gradcheck_float64(layout, act, post_act):
    x = make_input((2, 5, 3, 4), layout, dtype=torch.float64).requires_grad_()
    r = make_input((2, 5, 3, 4), layout, dtype=torch.float64, seed=4).requires_grad_()
    params = [t.requires_grad_() for t in make_params(5, 3, dtype=torch.float64)]

    def f(x, w1, b1, w2, b2, r):
        return torch.ops.pycnn.se_forward(x, w1, b1, w2, b2, r, act, post_act)[0]

    assert torch.autograd.gradcheck(f, (x, *params, r))


OPCHECK_CASES = [
    ("nchw", "relu", "none", True, True),
    ("channels_last", "silu", "relu", True, False),
    ("nchw", "silu", "relu", False, True),
    ("channels_last", "relu", "none", False, False),
]


@pytest.mark.parametrize("layout,act,post_act,with_residual,bias", OPCHECK_CASES)
def test_opcheck(layout, act, post_act, with_residual, bias):
    x = make_input((2, 7, 3, 5), layout).requires_grad_()
    r = make_input((2, 7, 3, 5), layout, seed=2).requires_grad_() if with_residual else None
    w1, b1, w2, b2 = [t.requires_grad_() if t is not None else None for t in make_params(7, 3, bias=bias)]
    args = (x, w1, b1, w2, b2, r, act, post_act)
    torch.library.opcheck(torch.ops.pycnn.se_forward.default, args)
    _, pooled, hidden, gate = torch.ops.pycnn.se_forward(*args)
    dy = torch.randn_like(x)
    torch.library.opcheck(torch.ops.pycnn.se_backward.default,
                          (dy, x.detach(), w1.detach(), w2.detach(), r.detach() if r is not None else None,
                           pooled, hidden, gate, act, post_act),
                          test_utils=("test_schema", "test_faketensor"))


HALF_NAMES = ["output", "grad_input", "grad_fc1_weight", "grad_fc1_bias", "grad_fc2_weight", "grad_fc2_bias",
              "grad_residual"]


def half_precision_errors(dtype, device, shape=(4, 24, 9, 9, 6), act="silu", post_act="relu"):
    """Max error against a float64 reference for the output and every gradient: ours in `dtype`, and
    PyTorch's own composition in `dtype`."""
    n, c, h, w, cr = shape
    x = make_input((n, c, h, w), "channels_last", device=device)
    r = make_input((n, c, h, w), "channels_last", device=device, seed=5)
    params = list(make_params(c, cr, device=device))
    g = (torch.ones(n, c, h, w, device=device) * 0.1
         + torch.arange(n * c * h * w, device=device).reshape(n, c, h, w).remainder(7) * 0.05)

    def run(fn, dt):
        y, gs = grads_of(lambda x, w1, b1, w2, b2, r: fn(x, w1, b1, w2, b2, act, post_act, r),
                         [t.to(dt) for t in [x, *params, r]], g.to(dt))
        return [y] + gs

    truth = run(reference, torch.float64)
    return max_errors(run(ours, dtype), truth), max_errors(run(reference, dtype), truth)



@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_rule_cpu(dtype):
    mine, theirs = half_precision_errors(dtype, "cpu")
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


def test_errors_name_the_argument():
    x = torch.randn(2, 6, 3, 3)
    w1, b1, w2, b2 = make_params(6, 2)
    op = torch.ops.pycnn.se_forward
    with pytest.raises(RuntimeError, match="input must be 4-D"):
        op(torch.randn(2, 6, 3), w1, b1, w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="input must be float32, float16, bfloat16 or float64"):
        op(torch.ones(2, 6, 3, 3, dtype=torch.int32), w1, b1, w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match=r"fc1_weight must have shape \[C_r, C\] = \[2, 6\]"):
        op(x, torch.randn(2, 5, 1, 1), b1, w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match=r"fc2_weight must have shape \[C, C_r\] = \[6, 2\]"):
        op(x, w1, b1, torch.randn(6, 3), b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc2_weight must have shape"):
        op(x, w1, b1, torch.randn(6, 2, 3, 3), b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc1_bias must be 1-D with 2 elements"):
        op(x, w1, torch.randn(3), w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc2_bias must be 1-D with 6 elements"):
        op(x, w1, b1, w2, torch.randn(2), None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc1_weight has dtype Double but must have the input's dtype"):
        op(x, w1.double(), b1, w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc2_weight has dtype Half but fc1_weight has dtype Float"):
        op(x.half(), w1, b1, w2.half(), b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="fc2_bias has dtype Double but its weight has dtype Float"):
        op(x, w1, b1, w2, b2.double(), None, "relu", "none")
    with pytest.raises(RuntimeError, match="residual must have the input's shape"):
        op(x, w1, b1, w2, b2, torch.randn(2, 6, 3, 2), "relu", "none")
    with pytest.raises(RuntimeError, match="residual has dtype"):
        op(x, w1, b1, w2, b2, x.double(), "relu", "none")
    with pytest.raises(RuntimeError, match="H \\* W > 0"):
        op(torch.randn(2, 6, 0, 3), w1, b1, w2, b2, None, "relu", "none")
    with pytest.raises(RuntimeError, match="unknown activation 'tanh'"):
        op(x, w1, b1, w2, b2, None, "tanh", "none")
    with pytest.raises(RuntimeError, match="unknown activation 'gelu'"):
        op(x, w1, b1, w2, b2, None, "relu", "gelu")
    with pytest.raises(ValueError, match="unknown post_act 'gelu'"):
        pycnn.ops.se(x, w1, b1, w2, b2, post_act="gelu")
    with pytest.raises(ValueError, match="unknown act"):
        SqueezeExcite(6, 2, act="tanh")
    with pytest.raises(ValueError, match="expected 4D input"):
        SqueezeExcite(6, 2)(torch.randn(6, 3))
    out, pooled, hidden, gate = op(x, w1, b1, w2, b2, None, "relu", "none")
    bop = torch.ops.pycnn.se_backward
    with pytest.raises(RuntimeError, match=r"hidden must have shape \[2, 2\]"):
        bop(x, x, w1, w2, None, pooled, gate, gate, "relu", "none")
    with pytest.raises(RuntimeError, match="gate must have dtype Float"):
        bop(x, x, w1, w2, None, pooled, hidden, gate.double(), "relu", "none")
    with pytest.raises(RuntimeError, match="grad_output must have the input's shape"):
        bop(x[:1], x, w1, w2, None, pooled, hidden, gate, "relu", "none")


# ----------------------------------------------------------------------------------- module ----

def test_state_dict_matches_torchvision_and_output():
    torchvision = pytest.importorskip("torchvision")
    for act, tv_act in (("relu", torch.nn.ReLU), ("silu", torch.nn.SiLU)):
        ref = torchvision.ops.SqueezeExcitation(20, 5, activation=tv_act)
        mine = SqueezeExcite(20, 5, act=act)
        assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        mine.load_state_dict(ref.state_dict())  # strict
        for layout in ("nchw", "channels_last"):
            x = make_input((3, 20, 7, 5), layout)
            torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-6)
        # and back: torchvision loads ours
        ref.load_state_dict(SqueezeExcite(20, 5).state_dict())


def test_state_dict_matches_timm_semodule():
    timm = pytest.importorskip("timm")
    ref = timm.layers.SEModule(32, rd_channels=8)
    mine = SqueezeExcite(32, 8)
    mine.load_state_dict(ref.state_dict())
    x = make_input((2, 32, 5, 5), "channels_last")
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-6)


def test_module_residual_post_act_and_training():
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.ops.SqueezeExcitation(12, 3)
    mine = SqueezeExcite(12, 3, post_act="relu")
    mine.load_state_dict(ref.state_dict())
    x = make_input((2, 12, 6, 6), "channels_last").requires_grad_()
    r = make_input((2, 12, 6, 6), "channels_last", seed=9)
    y = mine(x, r)
    y_ref = F.relu(ref(x) + r)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    y_ref.sum().backward()  # accumulates into x.grad as well: compare parameter grads
    for (name, p), q in zip(mine.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert "post_act=relu" in repr(mine)


def test_module_follows_autocast_like_the_compiled_models():
    """pycnn.nn.SqueezeExcite runs through fused.squeeze_excite: under autocast it computes in the autocast dtype
    (as a compiled network's SE and PyTorch's convolutions do), its float32 weights as they are."""
    mine = SqueezeExcite(12, 3)
    x = make_input((2, 12, 5, 5), "nchw")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mine(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), mine(x.bfloat16().float()), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------- CUDA ----

@pytest.mark.cuda
@pytest.mark.parametrize("shape,layout,act,post_act,with_residual", list(itertools.product(
    SHAPES + [(8, 64, 14, 14, 16), (2, 40, 7, 7, 10), (4, 96, 56, 56, 4), (2, 1152, 7, 7, 48), (3, 3712, 7, 7, 928)],
    LAYOUTS, ["relu", "silu"], ["none", "relu"], [False, True])))
def test_cuda_matches_eager_float32(shape, layout, act, post_act, with_residual):
    check_parity(shape, layout, act, post_act, with_residual, device="cuda", tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(4, 24, 9, 9, 6), (8, 64, 14, 14, 16), (2, 20, 5, 5, 5), (2, 368, 7, 7, 92)])
def test_cuda_half_precision_rule(dtype, shape):
    mine, theirs = half_precision_errors(dtype, "cuda", shape=shape)
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


@pytest.mark.cuda
def test_cuda_misaligned_and_float32_weights():
    base = torch.randn(2 * 16 * 5 * 5 + 1, device="cuda", dtype=torch.float16)
    x = base[1:].view(2, 5, 5, 16).permute(0, 3, 1, 2)  # channels_last, storage offset breaks 16-byte alignment
    w1, b1, w2, b2 = make_params(16, 4, device="cuda")
    torch.testing.assert_close(ours(x, w1, b1, w2, b2).float(), reference(x.float(), w1, b1, w2, b2),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.cuda
def test_cuda_opcheck_and_device_mismatch():
    x = make_input((2, 16, 3, 5), "channels_last", device="cuda").requires_grad_()
    w1, b1, w2, b2 = [t.requires_grad_() for t in make_params(16, 4, device="cuda")]
    torch.library.opcheck(torch.ops.pycnn.se_forward.default, (x, w1, b1, w2, b2, None, "relu", "none"))
    with pytest.raises(RuntimeError, match="fc1_weight is on cpu but input is on cuda"):
        torch.ops.pycnn.se_forward(x, w1.cpu(), b1, w2, b2, None, "relu", "none")
