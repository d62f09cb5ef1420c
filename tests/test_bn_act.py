"""pycnn.bn_act / BatchNormAct2d against nn.BatchNorm2d + activation (PyTorch is the reference)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pycnn
from pycnn.nn import BatchNormAct2d
import kernel_checks
from kernel_checks import (HALF_DTYPES, LAYOUTS, REFERENCE_ACT, assert_half_precision_rule, max_errors,
                           torch_running_stats_update, assert_within_one_ulp)

SHAPES = [(2, 8, 5, 5), (1, 3, 7, 9), (4, 13, 1, 1), (3, 17, 6, 4)]


def make_input(shape, layout, dtype=torch.float32, device="cpu", seed=0):
    return kernel_checks.make_input(shape, layout, dtype, device, seed, scale=2, shift=0.5)


def make_pair(channels, act, dtype=torch.float32, device="cpu", momentum=0.1):
    ours = BatchNormAct2d(channels, act=act, momentum=momentum).to(device=device, dtype=dtype)
    ref = nn.BatchNorm2d(channels, momentum=momentum).to(device=device, dtype=dtype)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
        ours.running_mean.uniform_(-0.3, 0.3)
        ours.running_var.uniform_(0.5, 2.0)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def run_both(ours, ref, act, x, residual):
    xo = x.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    ro = residual.detach().clone().requires_grad_() if residual is not None else None
    rr = residual.detach().clone().requires_grad_() if residual is not None else None
    y = ours(xo, ro)
    z = ref(xr)
    y_ref = REFERENCE_ACT[act](z + rr if rr is not None else z)
    grad = torch.randn_like(y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    return (y, xo, ro), (y_ref, xr, rr)


# Wider channel counts than SHAPES: several 16-channel chunks plus a tail per pixel in channels_last, batch 1.
WIDE_SHAPES = [(1, 70, 5, 5), (2, 40, 3, 7)]


@pytest.mark.parametrize("shape,layout,act,with_residual,training", list(itertools.product(
    SHAPES, LAYOUTS, ["none", "relu", "relu6", "silu"], [False, True], [True, False])) + list(itertools.product(
    WIDE_SHAPES, ["nchw", "channels_last"], ["none", "silu"], [False, True], [True])))
def test_matches_batchnorm2d_and_activation(shape, layout, act, with_residual, training):
    check_matches_batchnorm2d(shape, layout, act, with_residual, training, "cpu", tol=1e-5)


def check_matches_batchnorm2d(shape, layout, act, with_residual, training, device, tol):
    """BatchNormAct2d against nn.BatchNorm2d + activation on `device`: output, every gradient, the running
    statistics and the output's memory format."""
    ours, ref = make_pair(shape[1], act, device=device)
    ours.train(training)
    ref.train(training)
    x = make_input(shape, layout, device=device)
    residual = make_input(shape, layout, device=device, seed=1) if with_residual else None
    (y, xo, ro), (y_ref, xr, rr) = run_both(ours, ref, act, x, residual)
    tol = dict(rtol=tol, atol=tol)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(xo.grad, xr.grad, **tol)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **tol)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **tol)
    if with_residual:
        torch.testing.assert_close(ro.grad, rr.grad, **tol)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **tol)
    torch.testing.assert_close(ours.running_var, ref.running_var, **tol)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()
    if layout != "strided":  # the output keeps the input's memory format
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_statistics_over_several_steps(momentum):
    ours, ref = make_pair(6, "relu", momentum=momentum)
    for step in range(4):
        x = make_input((3, 6, 4, 5), "nchw", seed=step) * (step + 1)
        ours(x)
        ref(x)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-6, atol=1e-6)
    assert ours.num_batches_tracked.item() == 4


def test_statistics_are_stable_for_a_large_mean():
    # var(x) is 1 while mean(x) is 1e4: naive sum of squares in float32 loses every digit.
    x = make_input((8, 4, 16, 16), "channels_last") / 2 + 1e4
    ours, ref = make_pair(4, "none")
    ref64 = nn.BatchNorm2d(4).double()
    ref64.load_state_dict(ours.state_dict())
    ours(x)
    ref64(x.double())
    torch.testing.assert_close(ours.running_var.double(), ref64.running_var, rtol=1e-4, atol=1e-4)


def test_state_dict_keys_are_batchnorm2d_keys():
    assert list(BatchNormAct2d(5).state_dict()) == list(nn.BatchNorm2d(5).state_dict())
    ours = BatchNormAct2d(5, act="silu")
    ours.load_state_dict(nn.BatchNorm2d(5).state_dict())  # strict


def test_without_affine_and_without_running_stats():
    x = make_input((2, 5, 3, 3), "nchw")
    for kwargs in [dict(affine=False), dict(track_running_stats=False)]:
        ours = BatchNormAct2d(5, act="relu", **kwargs)
        ref = nn.BatchNorm2d(5, **kwargs)
        for mode in (True, False):
            ours.train(mode)
            ref.train(mode)
            torch.testing.assert_close(ours(x), F.relu(ref(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["none", "relu6", "silu", "hardswish"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_float64(act, layout, training):
    x = make_input((2, 3, 3, 4), layout, dtype=torch.float64).requires_grad_()
    r = make_input((2, 3, 3, 4), layout, dtype=torch.float64, seed=3).requires_grad_()
    w = torch.rand(3, dtype=torch.float64).add_(0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)

    def f(x, w, b, r):
        out, _, _ = torch.ops.pycnn.bn_act_forward(x, w, b, r, rm, rv, training, 1e-5, act)
        return out

    assert torch.autograd.gradcheck(f, (x, w, b, r))


OPCHECK_CASES = [
    ("nchw", "relu", True, True),
    ("channels_last", "silu", True, False),
    ("nchw", "relu6", False, True),
    ("channels_last", "none", False, False),
]


@pytest.mark.parametrize("layout,act,training,with_residual", OPCHECK_CASES)
def test_opcheck(layout, act, training, with_residual):
    x = make_input((2, 4, 3, 5), layout).requires_grad_()
    r = make_input((2, 4, 3, 5), layout, seed=2) if with_residual else None
    w = torch.rand(4).add_(0.5).requires_grad_()
    b = torch.randn(4).requires_grad_()
    rm, rv = torch.zeros(4), torch.ones(4)
    torch.library.opcheck(torch.ops.pycnn.bn_act_forward.default, (x, w, b, r, rm, rv, training, 1e-5, act))
    _, mean, var = torch.ops.pycnn.bn_act_forward(x, w, b, r, rm, rv, training, 1e-5, act)
    dy = torch.randn_like(x)
    torch.library.opcheck(torch.ops.pycnn.bn_act_backward.default,
                          (dy, x.detach(), w.detach(), b.detach(), r, mean, var, training, 1e-5, act),
                          test_utils=("test_schema", "test_faketensor"))


HALF_NAMES = ["output", "grad_input", "grad_residual", "grad_weight", "grad_bias"]


def half_precision_errors(dtype, device, act="silu", shape=(4, 24, 9, 9)):
    """Max error against a float64 reference: ours in `dtype`, PyTorch's own op in `dtype`."""
    x = make_input(shape, "channels_last", device=device)
    r = make_input(shape, "channels_last", device=device, seed=5)
    ours, _ = make_pair(shape[1], act, device=device)
    ref64 = nn.BatchNorm2d(shape[1]).to(device=device, dtype=torch.float64)
    ref64.load_state_dict(ours.state_dict())
    ref_half = nn.BatchNorm2d(shape[1]).to(device)
    ref_half.load_state_dict(ours.state_dict())

    def grads_of(fn, xx, rr, params):
        xx = xx.detach().clone().requires_grad_()
        rr = rr.detach().clone().requires_grad_()
        y = fn(xx, rr)
        g = torch.ones_like(y) * 0.1 + torch.arange(y.numel(), device=device).reshape(y.shape).remainder(7).to(y.dtype) * 0.05
        gs = torch.autograd.grad(y, [xx, rr] + params, g)
        return [y] + list(gs)

    truth = grads_of(lambda a, b: REFERENCE_ACT[act](ref64(a) + b), x.double(), r.double(),
                     [ref64.weight, ref64.bias])
    mine = grads_of(lambda a, b: ours(a, b), x.to(dtype), r.to(dtype), [ours.weight, ours.bias])
    theirs = grads_of(lambda a, b: REFERENCE_ACT[act](ref_half(a) + b), x.to(dtype), r.to(dtype),
                      [ref_half.weight, ref_half.bias])
    return max_errors(mine, truth), max_errors(theirs, truth)



@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_rule_cpu(dtype):
    mine, theirs = half_precision_errors(dtype, "cpu")
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


def test_errors_name_the_argument():
    x = torch.randn(2, 4, 3, 3)
    w, b = torch.ones(4), torch.zeros(4)
    rm, rv = torch.zeros(4), torch.ones(4)
    op = torch.ops.pycnn.bn_act_forward
    with pytest.raises(RuntimeError, match="input must be 4-D"):
        op(torch.randn(2, 4, 3), w, b, None, rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="input must be float32, float16, bfloat16 or float64"):
        op(torch.ones(2, 4, 3, 3, dtype=torch.int32), w, b, None, rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="weight must be 1-D with 4 elements"):
        op(x, torch.ones(5), b, None, rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="running_var must be 1-D with 4 elements"):
        op(x, w, b, None, rm, torch.ones(3), False, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="residual must have the input's shape"):
        op(x, w, b, torch.randn(2, 4, 3, 2), rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="residual has dtype"):
        op(x, w, b, x.double(), rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="more than 1 value per channel"):
        op(torch.randn(1, 4, 1, 1), w, b, None, rm, rv, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="running_mean and running_var are required"):
        op(x, w, b, None, None, None, False, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="unknown activation 'tanh'"):
        op(x, w, b, None, rm, rv, True, 1e-5, "tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        BatchNormAct2d(4, act="tanh")
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNormAct2d(4)(torch.randn(4, 3))
    # N * H * W == 1 in eval mode is fine, as in nn.BatchNorm2d
    m = BatchNormAct2d(4).eval()
    assert m(torch.randn(1, 4, 1, 1)).shape == (1, 4, 1, 1)


def test_build_info_and_cuda_registration():
    info = pycnn.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(info) >= {"torch_version", "cuda", "cuda_arch_list", "cxx_compiler", "cuda_compiler"}
    if torch.version.cuda:  # a CUDA build of torch: the CUDA kernels are compiled and registered
        assert info["cuda"] and info["cuda_kernels_registered"]
        assert info["cuda_arch_list"]


# ------------------------------------------------------------------------------------- CUDA ----

@pytest.mark.cuda
@pytest.mark.parametrize("shape,layout,act,with_residual,training", list(itertools.product(
    SHAPES + [(8, 64, 14, 14), (2, 40, 7, 7)], LAYOUTS, ["relu", "silu"], [False, True], [True, False])))
def test_cuda_matches_batchnorm2d_float32(shape, layout, act, with_residual, training):
    check_matches_batchnorm2d(shape, layout, act, with_residual, training, "cuda", tol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(4, 24, 9, 9), (8, 64, 14, 14), (2, 20, 5, 5)])
def test_cuda_half_precision_rule(dtype, shape):
    mine, theirs = half_precision_errors(dtype, "cuda", shape=shape)
    assert_half_precision_rule(HALF_NAMES, mine, theirs, dtype)


@pytest.mark.cuda
def test_cuda_opcheck_and_device_mismatch():
    x = make_input((2, 16, 3, 5), "channels_last", device="cuda").requires_grad_()
    w = torch.rand(16, device="cuda").add_(0.5).requires_grad_()
    b = torch.randn(16, device="cuda").requires_grad_()
    rm, rv = torch.zeros(16, device="cuda"), torch.ones(16, device="cuda")
    torch.library.opcheck(torch.ops.pycnn.bn_act_forward.default, (x, w, b, None, rm, rv, True, 1e-5, "relu"))
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        torch.ops.pycnn.bn_act_forward(x, torch.ones(16), b, None, rm, rv, True, 1e-5, "relu")


# ---- the running-statistics update (pycnn::bn_act_update_stats_) --------------------------------------------
STATS_CASES = list(itertools.product([torch.float32, torch.float64, torch.float16, torch.bfloat16],
                                     [torch.float32, torch.float64], [0.1, 0.7, 1.0, None]))


def stats_operands(running_dtype, save_dtype, channels=37, device="cpu", seed=0):
    # positive, and the batch statistics apart from the running ones: lerp does not cancel, so one unit in the
    # last place bounds the fused-multiply-add difference of PyTorch's vectorized lerp
    g = torch.Generator().manual_seed(seed)
    rm = (torch.rand(channels, generator=g) * 0.5 + 0.5).to(device=device, dtype=running_dtype)
    rv = (torch.rand(channels, generator=g) + 0.5).to(device=device, dtype=running_dtype)
    sm = (torch.rand(channels, generator=g, dtype=torch.float64) + 1.5).to(device=device, dtype=save_dtype)
    sv = (torch.rand(channels, generator=g, dtype=torch.float64) + 2.5).to(device=device, dtype=save_dtype)
    nbt = torch.tensor(4, device=device)
    return rm, rv, nbt, sm, sv


@pytest.mark.parametrize("running_dtype,save_dtype,momentum", STATS_CASES)
def test_update_stats_matches_pytorch_ops(running_dtype, save_dtype, momentum):
    ours = stats_operands(running_dtype, save_dtype)
    ref = [t.clone() for t in ours]
    torch.ops.pycnn.bn_act_update_stats_(*ours, momentum, 50)
    torch_running_stats_update(*ref, momentum, 50)
    for name, a, b in zip(["running_mean", "running_var", "num_batches_tracked"], ours, ref):
        # the same roundings; where PyTorch's vectorized lerp fuses a multiply-add the last bit may differ
        assert_within_one_ulp(a, b, name)
    assert int(ours[2]) == 5


def test_update_stats_without_num_batches_tracked_and_opcheck():
    rm, rv, _, sm, sv = stats_operands(torch.float32, torch.float32)
    before = rm.clone()
    torch.ops.pycnn.bn_act_update_stats_(rm, rv, None, sm, sv, 0.25, 8)
    torch.testing.assert_close(rm, before + 0.25 * (sm - before))
    for momentum, nbt in [(0.1, torch.tensor(3)), (None, torch.tensor(3)), (0.5, None)]:
        torch.library.opcheck(torch.ops.pycnn.bn_act_update_stats_.default,
                              (*stats_operands(torch.float32, torch.float32)[:2], nbt,
                               *stats_operands(torch.float32, torch.float32)[3:], momentum, 8))


@pytest.mark.parametrize("change,message", [
    (dict(count=1), "count .values per channel. must be more than 1"),
    (dict(momentum=None, nbt=None), "momentum=None .a cumulative average. needs num_batches_tracked"),
    (dict(nbt=torch.tensor(3.0)), "num_batches_tracked must be one int64 value"),
    (dict(sm=torch.zeros(37, dtype=torch.float16)), "save_mean must be float32 or float64"),
    (dict(rv=torch.ones(36)), "running_var must be 1-D with 37 elements"),
    (dict(rv=torch.ones(37, dtype=torch.float64)), "running_var has dtype Double but running_mean has dtype Float"),
    (dict(rm=torch.zeros(37, dtype=torch.int32)), "running_mean must be float32, float64, float16 or bfloat16"),
    (dict(rm=torch.zeros(74)[::2]), "must be contiguous"),
])
def test_update_stats_rejects_bad_arguments(change, message):
    rm, rv, nbt, sm, sv = stats_operands(torch.float32, torch.float32)
    args = dict(rm=rm, rv=rv, nbt=nbt, sm=sm, sv=sv, momentum=0.1, count=8)
    args.update(change)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.pycnn.bn_act_update_stats_(args["rm"], args["rv"], args["nbt"], args["sm"], args["sv"],
                                             args["momentum"], args["count"])


def test_update_stats_bumps_the_version_counters():
    """As lerp_ did: cached eval folds (pycnn.fused.EvalFold) are keyed by them."""
    rm, rv, nbt, sm, sv = stats_operands(torch.float32, torch.float32)
    for mode in (torch.enable_grad, torch.no_grad, torch.inference_mode):  # lerp_ bumps them under each
        before = [t._version for t in (rm, rv, nbt)]
        with mode():
            torch.ops.pycnn.bn_act_update_stats_(rm, rv, nbt, sm, sv, 0.1, 8)
        assert all(t._version > v for t, v in zip((rm, rv, nbt), before)), mode.__name__


@pytest.mark.cuda
@pytest.mark.parametrize("running_dtype,save_dtype,momentum", STATS_CASES)
def test_cuda_update_stats_matches_pytorch_ops(running_dtype, save_dtype, momentum):
    ours = stats_operands(running_dtype, save_dtype, channels=300, device="cuda")
    ref = [t.clone() for t in ours]
    torch.ops.pycnn.bn_act_update_stats_(*ours, momentum, 50)
    torch_running_stats_update(*ref, momentum, 50)
    for name, a, b in zip(["running_mean", "running_var", "num_batches_tracked"], ours, ref):
        assert_within_one_ulp(a, b, name)


@pytest.mark.cuda
def test_cuda_update_stats_opcheck_and_device_mismatch():
    rm, rv, nbt, sm, sv = stats_operands(torch.float16, torch.float32, device="cuda")
    torch.library.opcheck(torch.ops.pycnn.bn_act_update_stats_.default, (rm, rv, nbt, sm, sv, None, 8))
    with pytest.raises(RuntimeError, match="save_mean is on cpu but running_mean is on cuda"):
        torch.ops.pycnn.bn_act_update_stats_(rm, rv, nbt, sm.cpu(), sv, 0.1, 8)


def test_training_forward_is_two_calls():
    """The op and the running-statistics update: nothing else per call (each call is a launch on a GPU)."""
    bn = BatchNormAct2d(8, act="silu")
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad(), torch.profiler.profile() as prof:
        bn(x)
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    assert top == ["pycnn::bn_act_forward", "pycnn::bn_act_update_stats_"]
