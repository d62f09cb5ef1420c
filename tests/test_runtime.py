"""The runtime of compiled networks: the eval fold cached and never stale, kernel choices resolved once per
network call signature, NCHW input run in the network's internal layout (channels_last)."""
import copy
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import pycnn
from pycnn import dispatch, fused
from pycnn.lower import to_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOBILENET = os.path.join(ROOT, "archs", "mobilenet_v2.arch")  # depthwise and dense convs
REGNET = os.path.join(ROOT, "archs", "regnet.arch")  # grouped and dense convs, residual epilogues

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def private_kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(dispatch.ENV_KERNELS, raising=False)


def pair(path, network, **overrides):
    torch.manual_seed(0)
    model = pycnn.compile(path, network, input=(3, 32, 32), kernels="pycnn", **overrides)
    with torch.no_grad():  # statistics away from 0/1, so that a stale fold shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval(), to_backend(model, "reference").eval()


@pytest.fixture
def count_folds(monkeypatch):
    calls = []
    real = fused.fold_scale_shift
    monkeypatch.setattr(fused, "fold_scale_shift", lambda *tensors: calls.append(tensors) or real(*tensors))
    return calls


def sgd_step_then_eval(*models):
    """An optimizer step in training, then eval(): weights and running statistics moved."""
    for m in models:
        m.train()
        torch.manual_seed(1)
        m(torch.randn(8, 3, 32, 32)).square().mean().backward()
        torch.optim.SGD(m.parameters(), lr=0.01).step()
        m.eval()


def edit_data_then_eval(m):
    """An edit autograd does not see (.data has its own version counter), then eval(), which refolds."""
    next(p for n, p in m.named_parameters() if n.endswith("weight") and p.dim() == 4).data.mul_(-1)
    m.eval()


def check(model, ref, x, **tol):
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), **(tol or dict(rtol=1e-4, atol=1e-4)))


@pytest.mark.parametrize("path,network,overrides", [(MOBILENET, "mobilenet_v2", dict(width_mult=0.25)),
                                                    (REGNET, "regnetx_200mf", {})])
def test_eval_fold_is_computed_once_and_never_stale(path, network, overrides, count_folds):
    model, ref = pair(path, network, **overrides)
    x = torch.randn(2, 3, 32, 32)
    convs_with_bn = sum(1 for s in model.modules() if isinstance(s, torch.nn.BatchNorm2d)
                        and fused.FOLD_ATTR in s.__dict__)
    assert convs_with_bn == 0
    check(model, ref, x)
    folded = len(count_folds)
    assert folded > 10
    count_folds.clear()
    check(model, ref, x)
    assert count_folds == [], "refolded without a change"
    with torch.inference_mode():
        model(x)
    assert count_folds == []

    def both(change):
        with torch.no_grad():
            change(model)
            change(ref)
        check(model, ref, x)

    # an in-place edit of one weight refolds that layer only
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    name = next(n for n, m in model.named_modules() if m is conv)
    both(lambda m: m.get_submodule(name).weight.mul_(2.0))
    assert len(count_folds) == 1
    count_folds.clear()
    # in-place edits under inference_mode and no_grad, of statistics and affine parameters
    with torch.inference_mode():
        both(lambda m: [b.mul_(1.5) for n, b in m.named_buffers() if n.endswith("running_var")])
    both(lambda m: [p.add_(0.1) for n, p in m.named_parameters() if n.endswith("bias")])
    # load_state_dict (copies in place) and load_state_dict(assign=True) (new tensors)
    state = {k: (v * 0.9 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    both(lambda m: m.load_state_dict(state))
    both(lambda m: m.load_state_dict({k: v.clone() * 1.1 if v.is_floating_point() else v.clone()
                                      for k, v in state.items()}, assign=True))
    sgd_step_then_eval(model, ref)
    check(model, ref, x)
    # the BatchNorms alone in training for one forward (model.train() would drop every fold): only the running
    # statistics' version counters, bumped by the in-place update, tell the folds to refresh
    for m in (model, ref):
        norms = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        for b in norms:
            b.train()
        torch.manual_seed(2)
        with torch.no_grad():
            m(torch.randn(8, 3, 32, 32))
        for b in norms:
            b.eval()
    check(model, ref, x)
    # .to(): float64, then back (the same weights first: the SGD steps differed in float32 rounding)
    model.load_state_dict(ref.state_dict())
    model.double()
    ref.double()
    check(model, ref, x.double(), rtol=1e-9, atol=1e-9)
    model.float()
    ref.float()
    check(model, ref, x)
    both(edit_data_then_eval)


def test_feature_network_drops_folds_as_the_network_does():
    """pycnn.create_model(..., features_only=True) shares the network's modules: its eval() after a .data edit
    refolds, and its .to() works in swap mode (the folds' weak references dropped first)."""
    model = pycnn.create_model("mobilenet_v2", features_only=True, input=(3, 32, 32), width_mult=0.25,
                               kernels="pycnn").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert any(fused.FOLD_ATTR in m.__dict__ for m in model.modules())
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.weight.data.mul_(-1)
    model.eval()
    assert not any(fused.FOLD_ATTR in m.__dict__ for m in model.modules())
    with torch.no_grad():
        model(x)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    try:
        torch.__future__.set_swap_module_params_on_conversion(True)
        model.double()
        model.load_state_dict(model.state_dict())
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    with torch.no_grad():
        assert all(y.dtype == torch.float64 for y in model(x.double()))


def test_eval_with_autograd_keeps_gradients_of_the_fold():
    """In eval with grad mode on and trainable parameters, the fold is recomputed per call (differentiable):
    gradients reach the BatchNorm parameters as in the reference."""
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.25)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):
        for m in (model, ref):
            m.zero_grad()
            m(x).square().sum().backward()
        for (n, a), b in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4, msg=n)


def test_auto_choice_resolved_once_per_input_signature(monkeypatch):
    torch.manual_seed(0)
    model = pycnn.compile(MOBILENET, input=(3, 32, 32), width_mult=0.25).eval()
    keys = []
    real = dispatch.shape_key
    monkeypatch.setattr(dispatch, "shape_key", lambda *a, **k: keys.append(1) or real(*a, **k))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
        assert len(keys) > 10  # every fused step measured (or read) its choice
        keys.clear()
        y = model(x)
        model(torch.randn(1, 3, 32, 32))  # same signature, other values
        assert keys == []
        model(torch.randn(2, 3, 32, 32))  # a new signature: resolved again, once
        assert len(keys) > 10
    keys.clear()
    with torch.no_grad():
        torch.testing.assert_close(model(x), y)
    assert keys == []


def favour(monkeypatch, winner: str) -> list:
    """dispatch.measure replaced: `winner` measures fastest, every other candidate alike (the first listed wins
    among those); returns the candidate tuples raced, as they come."""
    calls = []

    def fake_measure(run, x, residual, params, buffers, kernels=("pycnn", "torch"), repeats=5):
        calls.append(kernels)
        return {k: (0.5 if k == winner else 1.0) for k in kernels}
    monkeypatch.setattr(dispatch, "measure", fake_measure)
    return calls


@pytest.mark.parametrize("grad", [False, True])
def test_grouped_and_depthwise_convs_race_the_folded_conv_too(monkeypatch, tmp_path, grad):
    """kernels="auto": a depthwise or grouped conv_bn_act races pycnn's kernel, PyTorch's conv with the BatchNorm
    folded in (eval) or followed by pycnn's BatchNorm+act (training), and the composition; "folded" runs, equals
    the reference (and its gradients too), and is what the report says. A cached entry measured without "folded"
    is measured again."""
    calls = favour(monkeypatch, "folded")
    from pycnn import runtime
    torch.manual_seed(0)
    model = pycnn.compile(REGNET, "regnetx_200mf", input=(3, 32, 32)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # statistics away from 0/1, so that a wrong fold shows
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model, ref = model.double(), to_backend(model, "reference").double().eval()
    for m in (model, ref):
        m.requires_grad_(grad)
    model_steps = [s for m in model.modules() for steps in runtime.step_lists(m) for s in steps
                   if isinstance(s, runtime.FusedStep)]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(model(x), ref(x), rtol=1e-9, atol=1e-10)
    grouped = [s for s in model_steps if s.kind == "conv_bn_act" and s.attrs["conv"] != "dense"]
    assert grouped and all(s.last_kernel == "folded" for s in grouped)
    assert ("pycnn", "folded", "torch") in calls
    from pycnn.report import kernel_label
    assert all(kernel_label(s).startswith("aten::conv2d+folded BN") for s in grouped)
    assert sum(v.startswith("aten::conv2d+folded BN") for v in model.kernels().values()) >= len(grouped)
    calls.clear()
    model.train()
    # 64x64: at 32x32 the last stage's BatchNorms see 2 values per channel, too ill-conditioned for 1e-9
    x_train = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y, y_ref = model(x_train), ref.train()(x_train)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    if grad:
        weights = torch.randn_like(y)
        for g, g_ref in zip(torch.autograd.grad((y * weights).sum(), list(model.parameters())),
                            torch.autograd.grad((y_ref * weights).sum(), list(ref.parameters()))):
            torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-9)
    assert ("pycnn", "folded", "torch") in calls  # the grouped convs; the others race two
    assert all(s.last_kernel == "folded" for s in grouped)
    assert all(kernel_label(s, training=True).startswith("aten::conv2d+pycnn::bn_act") for s in grouped)
    assert sum(v.startswith("aten::conv2d+pycnn::bn_act") for v in model.kernels().values()) >= len(grouped)
    ref.eval()
    # an entry written before "folded" was a candidate: measured again
    key, entry = next((k, e) for k, e in dispatch.kernel_cache().entries.items() if "folded_ms" in e and "|eval|" in k)
    dispatch.kernel_cache().entries[key] = {"choice": "torch", "pycnn_ms": 1.0, "torch_ms": 0.5}
    for s in model_steps:
        s.kernel_by_token.clear()
    calls.clear()
    model.eval()
    with torch.set_grad_enabled(grad):
        model(x)
    assert ("pycnn", "folded", "torch") in calls


def test_1x1_convs_race_matrix_products(monkeypatch):
    """kernels="auto": a 1x1 stride-1 dense conv_bn_act also races "gemm" (the conv as matrix products over the
    channels_last pixels: in training then pycnn's BatchNorm+act, in eval one product on the folded weight, then
    the epilogue); it runs, equals the reference (in training with its gradients) in float64, and the report says
    so. Strided 1x1 convs race two candidates as before."""
    calls = favour(monkeypatch, "gemm")
    from pycnn import runtime
    from pycnn.report import kernel_label
    torch.manual_seed(0)
    model = pycnn.compile(REGNET, "regnetx_200mf", input=(3, 64, 64)).double().train()
    ref = to_backend(model, "reference").double().train()
    steps = [s for m in model.modules() for steps in runtime.step_lists(m) for s in steps
             if isinstance(s, runtime.FusedStep)]
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # NCHW: the network runs channels_last inside
    y, y_ref = model(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    weights = torch.randn_like(y)
    for g, g_ref in zip(torch.autograd.grad((y * weights).sum(), list(model.parameters())),
                        torch.autograd.grad((y_ref * weights).sum(), list(ref.parameters()))):
        torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-9)
    pointwise = [s for s in steps if s.kind == "conv_bn_act" and s.attrs["conv"] == "dense"
                 and "k=(1, 1)" in s.signature and "s=(1, 1)" in s.signature]
    strided = [s for s in steps if s.kind == "conv_bn_act" and "k=(1, 1)" in s.signature and "s=(2, 2)" in s.signature]
    assert pointwise and strided
    assert all(s.last_kernel == "gemm" for s in pointwise)
    assert all(s.last_kernel != "gemm" for s in strided)
    assert ("pycnn", "gemm", "torch") in calls and ("pycnn", "torch") in calls
    assert all(kernel_label(s, training=True).startswith("aten::mm+pycnn::bn_act") for s in pointwise)
    calls.clear()
    model.eval()
    ref.eval()
    with torch.no_grad():
        for _ in range(2):  # the plans made, then run
            torch.testing.assert_close(model(x), ref(x), rtol=1e-9, atol=1e-10)
    assert ("pycnn", "gemm", "torch") in calls and ("pycnn", "torch") in calls
    assert all(s.last_kernel == "gemm" for s in pointwise)
    assert all(s.last_kernel != "gemm" for s in strided)
    assert all(kernel_label(s).startswith("aten::mm+folded BN") for s in pointwise)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
             and m.stride == (1, 1)]  # their folds hold the product's weight: the plans ran it
    assert len(convs) == len(pointwise) and all("gemm" in fused._GRAPH_FOLDS[id(c.weight)][0].packed for c in convs)
    with torch.no_grad(), warnings.catch_warnings():  # a traced graph runs them as dense convs: its views would
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # hold the traced sizes
        traced = torch.jit.trace(model, x, check_trace=False)
        other = torch.randn(3, 3, 48, 40, dtype=torch.float64)
        torch.testing.assert_close(traced(other), ref(other), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bias", [False, True])
def test_conv1x1_as_gemm_gradients(bias):
    """fused.conv1x1_as_gemm: the conv's output (channels_last) and first and second derivatives in float64, for
    a gradient in either layout; not applicable to strided, padded, grouped or NCHW cases."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias).double()
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert fused.gemm_applies(conv, x)
    y = fused.conv1x1_as_gemm(conv, x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv(x), rtol=1e-12, atol=1e-12)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    torch.autograd.gradcheck(lambda *t: fused._Conv1x1AsGemm.apply(*t, *([] if bias else [None])), params)
    torch.autograd.gradgradcheck(lambda *t: fused._Conv1x1AsGemm.apply(*t, *([] if bias else [None])), params)
    g = torch.randn_like(y).contiguous()  # NCHW gradient
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(conv(x), params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not fused.gemm_applies(conv, x.detach().contiguous())
    for other in (torch.nn.Conv2d(6, 5, 1, stride=2), torch.nn.Conv2d(6, 6, 1, groups=2),
                  torch.nn.Conv2d(6, 5, 3, padding=1)):
        assert not fused.gemm_applies(other.double(), x)
    # conv(x) would run more than nn.Conv2d.forward: a subclass, a parametrization, pruning's hook, a global hook
    from torch.nn.utils import parametrizations, prune
    sub = type("MyConv", (torch.nn.Conv2d,), {})(6, 5, 1).double()
    parametrized = parametrizations.weight_norm(torch.nn.Conv2d(6, 5, 1).double())
    pruned = prune.l1_unstructured(torch.nn.Conv2d(6, 5, 1).double(), "weight", 0.5)
    for other in (sub, parametrized, pruned):
        assert not fused.gemm_applies(other, x)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert not fused.gemm_applies(conv, x)
    finally:
        handle.remove()
    assert fused.gemm_applies(conv, x)
    empty = torch.empty(0, 6, 4, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert fused.conv1x1_as_gemm(conv, empty).shape == (0, 5, 4, 3)


def test_conv1x1_as_gemm_traces_in_one_graph():
    """The gemm kernel inside torch.compile(fullgraph=True) in training: no graph break, the eager result."""
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(8, 8, 1, bias=False), torch.nn.BatchNorm2d(8)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()

    def step(x):
        return fused.conv_bn_act(conv, bn, x, "dense", "relu", x, kernel="gemm")
    eager = step(x)
    g_eager = torch.autograd.grad(eager.sum(), [x, conv.weight])
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(compiled.sum(), [x, conv.weight]), g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gemm_kernel_compiles_to_one_graph_in_training(monkeypatch):
    """A network whose 1x1 convs run "gemm" (measured fastest at trace time) under torch.compile(fullgraph=True)
    in training: one graph over three SGD steps (no recompile), the eager network's loss and weights after them.
    Float64: three steps of this network amplify float32 rounding to percents (its float32 and float64 references
    part by 1.6% at the third step), so in float32 only bitwise-equal paths agree (pycnn's AVX2 kernels sum in
    another order under aot_eager's strides: 0.7% apart). Batch 8: at batch 2 the last stage's BatchNorms
    normalize two values a channel (1x1 maps) and the loss reaches 1e22 within the three steps."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from pycnn import runtime
    favour(monkeypatch, "gemm")
    torch.manual_seed(0)
    model = pycnn.compile(REGNET, "regnetx_200mf", input=(3, 32, 32)).double().train()
    eager = copy.deepcopy(model)
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    losses = {}
    for name, m in (("compiled", compiled), ("eager", eager)):
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                opt.zero_grad()
                loss = m(x).square().mean()
                loss.backward()
                opt.step()
        losses[name] = loss.detach()
    assert counter.frame_count == 1
    steps = [s for m in model.modules() for steps in runtime.step_lists(m) for s in steps
             if isinstance(s, runtime.FusedStep)]
    assert any(s.last_kernel == "gemm" for s in steps)
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-9, atol=1e-12)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    torch._dynamo.reset()


TWO_STEPS = """
network t(input = 8x8x8) {
    body = conv(8, k=3, groups=8) bn relu
           conv(16, k=1) bn relu
}
"""


def test_a_bn_switched_alone_or_another_cpu_variant_resolves_the_kernels_again(monkeypatch):
    from pycnn import _C
    torch.manual_seed(0)
    model = pycnn.compile(TWO_STEPS).eval()
    keys = []
    real = dispatch.shape_key
    monkeypatch.setattr(dispatch, "shape_key", lambda *a, **k: keys.append(k["training"]) or real(*a, **k))
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        model(x)
        assert keys == [False, False]  # both fused steps resolved, in eval
        keys.clear()
        model(x)
        assert keys == []
        model.body.bn1.train()  # one BatchNorm alone: the network itself is still in eval
        model(x)
        assert keys == [True, False]
        keys.clear()
        model.body.bn1.eval()
        model(x)
        assert keys == []  # that signature was seen: its choices are remembered
        variant = _C._cpu_isa()
        other = "baseline" if variant != "baseline" else "avx2"
        try:
            if _C._set_cpu_isa(other) == variant:
                pytest.skip("one CPU kernel variant on this machine")
            model(x)
            assert keys == [False, False]  # another CPU kernel variant: measured again
        finally:
            _C._set_cpu_isa(variant)


# ------------------------------------------------------------------------------------------------ layout

def pycnn_op_layouts(model, x):
    """The set of channels_last flags of the 4-D inputs (larger than 1x1) of the pycnn ops model(x) runs."""
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t = args[0]
            if str(func.name()).startswith("pycnn::") and t.dim() == 4 and t.shape[2] * t.shape[3] > 1:
                seen.add(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous())
            return func(*args, **(kwargs or {}))

    with Record():
        out = model(x)
    return seen, out


@pytest.mark.parametrize("train", [False, True])
def test_nchw_input_runs_channels_last_inside_and_returns_the_reference(train):
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.25, dropout=0.0)
    assert model.input_layout == torch.channels_last and ref.input_layout is None
    model.train(train)
    ref.train(train)
    x = torch.randn(2, 3, 32, 32)
    seen, y = pycnn_op_layouts(model, x)
    assert seen == {True}, "a pycnn op ran on an NCHW tensor"
    y_ref = ref(x)
    assert y.shape == y_ref.shape and y.is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    # the layout change happens once, at the entry: the number of layout copies does not grow with depth
    model.input_layout = None
    seen_nchw, _ = pycnn_op_layouts(model, x)
    assert seen_nchw == {False}


def test_feature_maps_come_back_in_the_callers_layout():
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.25)
    x = torch.randn(2, 3, 64, 64)  # the last map 2x2: its layout is visible
    with torch.no_grad():
        for fmt in (torch.contiguous_format, torch.channels_last):
            xf = x.contiguous(memory_format=fmt)
            f = model.forward_features(xf)
            assert f.is_contiguous(memory_format=fmt) and f.shape[2] * f.shape[3] > 1
            torch.testing.assert_close(f, ref.forward_features(xf), rtol=1e-4, atol=1e-4)
            from pycnn.features import FeatureNetwork
            maps = FeatureNetwork(model)(xf)
            assert all(m.is_contiguous(memory_format=fmt) for m in maps if m.shape[2] * m.shape[3] > 1)
            for a, b in zip(maps, FeatureNetwork(ref)(xf)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_layout_kept_through_to_and_checkpoints_move_to_reference_and_torchvision():
    import torchvision
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.5)
    model = model.to(torch.float64).to("cpu")
    assert model.input_layout == torch.channels_last
    copied = copy.deepcopy(model)
    assert copied.input_layout == torch.channels_last
    state = model.state_dict()
    assert all(v.is_contiguous() for v in state.values())  # checkpoints are plain contiguous tensors
    back = to_backend(model, "reference")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    check(model, back, x, rtol=1e-9, atol=1e-9)
    tv = torchvision.models.mobilenet_v2(width_mult=0.5).double().eval()
    pycnn.weights.to_torchvision(model, tv)
    check(model, tv, x, rtol=1e-9, atol=1e-9)
    again = pycnn.compile(MOBILENET, input=(3, 32, 32), width_mult=0.5, kernels="pycnn").double().eval()
    pycnn.weights.from_torchvision(again, tv)
    assert again.input_layout == torch.channels_last
    check(again, model, x, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ torch.compile

COMPILED = [(MOBILENET, "mobilenet_v2", ("train", "eval"), dict(dropout=0.0)),
            (os.path.join(ROOT, "archs", "efficientnet.arch"), "efficientnet_b0", ("eval",), {}),
            (REGNET, "regnetx_400mf", ("eval",), {})]


@pytest.mark.slow
@pytest.mark.parametrize("path,network,modes,overrides", COMPILED, ids=[c[1] for c in COMPILED])
def test_torch_compile_one_graph_no_recompiles(path, network, modes, overrides):
    """fullgraph (no graph break) and error_on_recompile over three steps per mode: one graph each, with the
    kernel choice "auto" (measured at trace time, a constant of the graph) and NCHW input converted inside the graph."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch.manual_seed(0)
    model = pycnn.compile(path, network, input=(3, 32, 32), **overrides)
    x = torch.randn(2, 3, 32, 32)
    for mode in modes:
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        model.train(mode == "train")
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                if mode == "train":
                    opt.zero_grad()
                    compiled(x).square().mean().backward()
                    opt.step()
                else:
                    with torch.no_grad():
                        compiled(x)
        assert counter.frame_count == 1, f"{mode}: {counter.frame_count} graphs"
    torch._dynamo.reset()


@pytest.mark.parametrize("mode,faster", [("train", "torch"), ("eval", "pycnn"), ("eval", "torch")])
def test_torch_compile_runs_the_kernels_auto_measures_at_trace_time(monkeypatch, faster, mode):
    """kernels="auto" under torch.compile: each fused step's kernel is measured while dynamo traces (on stand-ins
    with the traced input's facts, once per key) and is a constant of the one graph; not pycnn's everywhere."""
    from pycnn import allocator, runtime
    monkeypatch.setattr(allocator, "COMPILED_SCOPE_MIN_ACTIVATION_BYTES", 0)  # the scope's ops in the graph too
    measured = []

    def fake_measure(run, x, residual, params, buffers, kernels=("pycnn", "torch"), repeats=5):
        measured.append((tuple(x.shape), x.requires_grad, torch.is_grad_enabled()))
        run(faster, x, residual)  # the stand-ins are real tensors: the kernel runs on them
        return {k: 1.0 if k == faster else 2.0 for k in kernels}
    monkeypatch.setattr(dispatch, "measure", fake_measure)
    torch.manual_seed(0)
    model = pycnn.compile(MOBILENET, "mobilenet_v2", input=(3, 32, 32), width_mult=0.25, dropout=0.0)
    model.train(mode == "train")
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    x = torch.randn(2, 3, 32, 32)
    rng = torch.get_rng_state()
    with torch.set_grad_enabled(mode == "train"):
        torch.compile(model, fullgraph=True, backend=backend)(x)
    torch._dynamo.reset()
    assert torch.equal(torch.get_rng_state(), rng), "compiling moved the caller's random stream"
    # an mbconv block is measured itself in eval and runs as one op where pycnn wins, else its parts (measured too)
    blocks_too = mode == "eval"
    parts_too = not (mode == "eval" and faster == "pycnn")
    steps = [part for m in model.modules() for steps in runtime.step_lists(m) for s in steps
             if isinstance(s, runtime.FusedStep)
             for part in ([s] if blocks_too or not hasattr(s, "parts") else []) +
             (list(getattr(s, "parts", [])) if parts_too else [])]
    assert len(graphs) == 1 and measured and len(measured) <= len(steps)
    assert all(grad == (mode == "train") for _, _, grad in measured)
    assert {s.last_kernel for s in steps} == {faster}
    calls = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function" and "pycnn" in str(n.target)]
    kernel_calls = [c for c in calls if "network_scope" not in c]
    assert bool(kernel_calls) == (faster == "pycnn"), kernel_calls[:5]
    # inference holds the forward's allocator scope: the first and the last pycnn op of the graph
    scope = ["pycnn.network_scope_enter", "pycnn.network_scope_exit"]
    assert [c for c in calls if "network_scope" in c] == (scope if mode == "eval" else [])
    if mode == "eval":
        assert calls[0] == scope[0] and calls[-1] == scope[1]


def graph_calls(gm) -> list:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def recorded(model):
    """torch.compile(model, fullgraph=True) with a backend that keeps dynamo's graphs and runs them as traced."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=True, backend=backend), graphs


@pytest.fixture
def scoped_graphs(monkeypatch):
    """Compiled inference graphs of any input size hold the allocator scope, and so call the cached-fold ops."""
    from pycnn import allocator
    monkeypatch.setattr(allocator, "COMPILED_SCOPE_MIN_ACTIVATION_BYTES", 0)


@pytest.mark.parametrize("path,network,overrides", [(MOBILENET, "mobilenet_v2", dict(width_mult=0.25)),
                                                    (REGNET, "regnetx_200mf", {})])
@pytest.mark.usefixtures("scoped_graphs")
def test_compiled_eval_serves_the_fold_from_a_cache_never_stale(path, network, overrides, monkeypatch):
    """A CPU graph torch.compile makes for inference and that holds the allocator scope runs each eval layer as
    one pycnn::eval_conv_bn_act or pycnn::eval_mbconv call given the modules' own tensors: no fold computed in
    the graph; folded on the first call only, refolded after in-place edits, load_state_dict, an optimizer step,
    a .data edit and eval(); equal to the reference."""
    model, ref = pair(path, network, **overrides)
    folds = []
    real = fused.fold_scale_shift
    monkeypatch.setattr(fused, "fold_scale_shift", lambda *a: folds.append(a) or real(*a))
    compiled, graphs = recorded(model)
    x = torch.randn(2, 3, 32, 32)
    check(compiled, ref, x)
    calls = graph_calls(graphs[0])
    # every BatchNorm in one of the ops (a block's op takes six tensors per conv and BatchNorm); none in the graph
    covered = sum(1 if str(n.target).startswith("pycnn.eval_conv_bn_act") else len(n.args[1]) // 6
                  for n in graphs[0].graph.nodes if str(n.target).startswith(("pycnn.eval_conv_bn_act",
                                                                              "pycnn.eval_mbconv")))
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert norms > 10 and covered == norms
    assert not any("rsqrt" in c or "batch_norm" in c for c in calls)
    assert len(folds) == norms
    folds.clear()
    check(compiled, ref, x)
    assert folds == [], "refolded without a change"

    def both(change):
        with torch.no_grad():
            change(model)
            change(ref)
        check(compiled, ref, x)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1)
    name = next(n for n, m in model.named_modules() if m is conv)
    both(lambda m: m.get_submodule(name).weight.mul_(2.0))
    assert len(folds) == 1
    both(lambda m: [b.mul_(1.5) for n, b in m.named_buffers() if n.endswith("running_var")])
    state = {k: (v * 0.9 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    both(lambda m: m.load_state_dict(state))
    sgd_step_then_eval(model, ref)  # eager training
    check(compiled, ref, x)
    both(edit_data_then_eval)
    torch._dynamo.reset()


def test_compiled_eval_without_the_scope_folds_in_the_graph():
    """Below the scope's input size (batch 1 at 224x224 in practice) a compiled graph keeps its folds in the
    graph: the cached-fold ops' dispatch and per-call allocations cost more there than the fold."""
    model, ref = pair(REGNET, "regnetx_200mf")
    compiled, graphs = recorded(model)
    check(compiled, ref, torch.randn(2, 3, 32, 32))
    calls = graph_calls(graphs[0])
    assert not any(c.startswith("pycnn.eval_") for c in calls) and any("rsqrt" in c for c in calls)
    torch._dynamo.reset()


@pytest.mark.usefixtures("scoped_graphs")
def test_compiled_eval_fold_cache_goes_with_the_weights():
    """The compiled graphs' fold cache (and the plans of pycnn::eval_conv_bn_act's C++ side) holds its folds by the
    weights' identity, not the weights: an entry is dropped once its weight is freed (a model deleted, or a weight
    replaced), and by .to() (no entries piling up over dtype round trips; tensor swaps, which refuse weakly
    referenced tensors, work)."""
    import gc
    from pycnn import _C
    torch._dynamo.reset()
    for entry in list(fused._GRAPH_FOLDS.values()):
        entry[1]()
    gc.collect()
    planned = _C._eval_conv_entries()  # the C++ side's plans (csrc/cpu/eval_conv.cpp), one entry per conv weight
    model, ref = pair(REGNET, "regnetx_200mf")
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 32, 32)
    check(compiled, ref, x)
    assert len(fused._GRAPH_FOLDS) == norms and _C._eval_conv_entries() == planned + norms
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    conv.weight = torch.nn.Parameter(conv.weight.detach() * 2)  # the old weight is freed; a new entry replaces it
    with torch.no_grad():
        compiled(x)
    assert len(fused._GRAPH_FOLDS) == norms and _C._eval_conv_entries() == planned + norms
    swap = torch.__future__.get_swap_module_params_on_conversion()
    try:
        for mode in (False, True):
            torch.__future__.set_swap_module_params_on_conversion(mode)
            for dtype in (torch.float64, torch.float32):
                model.to(dtype)
                with torch.no_grad():
                    compiled(x.to(dtype))
                assert len(fused._GRAPH_FOLDS) == norms and _C._eval_conv_entries() == planned + norms
            model.load_state_dict(model.state_dict())
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    del compiled, model, conv
    torch._dynamo.reset()
    gc.collect()
    assert len(fused._GRAPH_FOLDS) == 0 and _C._eval_conv_entries() == planned


@pytest.mark.usefixtures("scoped_graphs")
def test_compiled_eval_leaves_recomputed_weights_in_the_graph():
    """A parametrized conv weight is a new tensor on every call: its layer keeps the fold in the graph (nothing
    to cache), the others still call the cached-fold op, the result is the reference's."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w
    model, ref = pair(REGNET, "regnetx_200mf")
    for m in (model, ref):
        parametrize.register_parametrization(next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d)),
                                             "weight", Double())
    compiled, graphs = recorded(model)
    x = torch.randn(2, 3, 32, 32)
    check(compiled, ref, x)
    entries = len(fused._GRAPH_FOLDS)
    check(compiled, ref, x)
    assert len(fused._GRAPH_FOLDS) == entries
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(c.startswith("pycnn.eval_conv_bn_act") for c in graph_calls(graphs[0])) == norms - 1
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.usefixtures("scoped_graphs")
def test_compiled_eval_with_inductor_equals_the_reference(layout):
    """Under inductor (which checks the cached-fold ops' output strides against their fakes'), NCHW and
    channels_last input, maps down to 1x1 (where both layouts' strides are one)."""
    torch._dynamo.reset()
    for path, network, overrides in [(MOBILENET, "mobilenet_v2", dict(width_mult=0.25)), (REGNET, "regnetx_200mf", {})]:
        model, ref = pair(path, network, **overrides)
        x = torch.randn(2, 3, 32, 32)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = torch.compile(model, fullgraph=True)
        for _ in range(2):
            check(compiled, ref, x)
        torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.usefixtures("scoped_graphs")
def test_compiled_eval_with_dynamic_batch_equals_the_reference():
    """A graph compiled for a dynamic batch size, in a scoped graph, equals the reference at two batch sizes (the
    layout cache of the cached-fold op's fake takes plain sizes only)."""
    torch._dynamo.reset()
    model, ref = pair(REGNET, "regnetx_200mf")
    compiled = torch.compile(model.to(memory_format=torch.channels_last), dynamic=True)
    try:
        for batch in (3, 5):
            check(compiled, ref, torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("kind,groups,stride,residual,layout", [
    ("dense", 1, 1, False, "channels_last"), ("dense", 1, 2, False, "nchw"), ("dense", 1, 1, True, "channels_last"),
    ("depthwise", 8, 1, True, "channels_last"), ("depthwise", 8, 2, False, "nchw"),
    ("grouped", 2, 1, False, "channels_last"), ("grouped", 4, 2, False, "nchw")])
def test_eval_conv_bn_act_op(kind, groups, stride, residual, layout):
    """pycnn::eval_conv_bn_act passes the op checks (schema, fake, dispatch) and equals the eager composition."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, stride, 1, groups=groups, bias=kind == "dense")
    bn = torch.nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    for p in list(conv.parameters()) + list(bn.parameters()):
        p.requires_grad_(False)
    x = torch.randn(2, 8, 9, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 8, 9, 9) if residual else None
    args = (x, *fused.fold_tensors(conv, bn), bn.eps, list(conv.stride), list(conv.padding), list(conv.dilation),
            conv.groups, kind, "relu", r)
    y = torch.ops.pycnn.eval_conv_bn_act(*args)
    expected = bn(conv(x)) + (r if residual else 0)
    torch.testing.assert_close(y, expected.relu(), rtol=1e-4, atol=1e-5)
    torch.library.opcheck(torch.ops.pycnn.eval_conv_bn_act.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize("kind,c_in,groups,act,residual", [
    ("dense", 1, 1, "relu", False), ("dense", 3, 1, "relu", False), ("dense", 16, 1, "relu", False),
    ("dense", 64, 1, "relu", False), ("dense", 64, 1, "relu", True), ("dense", 64, 1, "silu", True),
    ("depthwise", 16, 16, "relu", False), ("grouped", 16, 2, "relu", True)])
@pytest.mark.parametrize("model_cl,input_cl", [(True, True), (True, False), (False, True), (False, False)])
def test_eval_conv_bn_act_layout_is_its_kernels(kind, c_in, groups, act, residual, model_cl, input_cl):
    """The layout pycnn::eval_conv_bn_act (and its fake) gives its output is the one its kernels return, so the op
    never copies: channels_last or NCHW model and input, a one-channel stem input (ambiguous strides), dense convs
    small enough for aten's conv and big enough for oneDNN's (64 channels: always channels_last), with and without
    a residual. (A compiled channels_last network with a one-channel input copied its first layers' outputs to
    NCHW and back.)"""
    c_out = 16 if c_in < 64 else 64
    conv = torch.nn.Conv2d(c_in, c_out, 3, 1, 1, groups=groups, bias=False)
    bn = torch.nn.BatchNorm2d(c_out).eval()
    if model_cl:
        conv = conv.to(memory_format=torch.channels_last)
    layout = torch.channels_last if input_cl else torch.contiguous_format
    x = torch.randn(2, c_in, 9, 9).contiguous(memory_format=layout)
    r = torch.randn(2, c_out, 9, 9).contiguous(memory_format=layout) if residual else None
    args = (x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [1, 1], [1, 1], groups, kind, act, r)
    with torch.no_grad():
        y = torch.ops.pycnn.eval_conv_bn_act(*args)
        fold = fused.graph_fold(args[1:7], bn.eps, kind == "dense")
        kernel = fused.folded_forward(x, fold, conv.weight, ((1, 1), (1, 1), (1, 1), groups), kind, act, r)
    assert y.stride() == kernel.stride()
    fused._cached_layout.cache_clear()  # the fake works its layout out itself
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = torch.ops.pycnn.eval_conv_bn_act(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                                  for a in args))
    assert fake.stride() == y.stride()


@pytest.mark.parametrize("kind,c,groups,act,residual", [
    ("dense", 64, 1, "relu", "x"), ("dense", 64, 1, "relu6", None), ("dense", 8, 1, "silu", "x"),
    ("dense", 8, 1, "gelu", "other"), ("depthwise", 16, 16, "relu6", "x"), ("grouped", 16, 4, "relu", "x"),
    ("grouped", 16, 4, "none", "other")])
def test_eval_conv_bn_act_plans_serve_new_inputs(kind, c, groups, act, residual):
    """pycnn::eval_conv_bn_act's C++ side keeps a plan per layer and input signature: calls after the first, with
    new inputs, equal the eager composition too, the residual being x itself (a shortcut without a conv) or
    another tensor; dense convs big enough for oneDNN (64 channels) and too small for it (8), an activation aten
    has no in-place op for (gelu: run in Python). A plan must not keep its first input (seen: the residual x
    served from the first call's input)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, 1, 1, groups=groups, bias=False)
    bn = torch.nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    for _ in range(3):
        x = torch.randn(2, c, 12, 12).contiguous(memory_format=torch.channels_last)
        r = x if residual == "x" else torch.randn_like(x) if residual == "other" else None
        with torch.no_grad():
            y = torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [1, 1], [1, 1],
                                                 groups, kind, act, r)
            z = bn(conv(x)) + (r if r is not None else 0)
            expected = fused.activation(z, act)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act,residual,layout", [
    ("relu", "x", "channels_last"), ("relu6", None, "channels_last"), ("silu", "other", "nchw"),
    ("gelu", "other", "channels_last"), ("none", None, "channels_last"), ("relu", None, "nchw")])
def test_eval_conv_bn_act_gemm(act, residual, layout):
    """kind "gemm" (a 1x1 conv as one matrix product over the pixels of a channels_last input, then the epilogue;
    an NCHW input runs as "dense"): the op checks, the eager composition's values on new inputs after the first
    call (the plan), and the layout its fake promises."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 32, 1, bias=True)
    bn = torch.nn.BatchNorm2d(32).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for k in range(3):
        x = torch.randn(2, 32, 7, 5).contiguous(memory_format=fmt)
        r = x if residual == "x" else torch.randn_like(x) if residual == "other" else None
        args = (x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [0, 0], [1, 1], 1, "gemm", act, r)
        with torch.no_grad():
            y = torch.ops.pycnn.eval_conv_bn_act(*args)
            expected = fused.activation(bn(conv(x)) + (r if r is not None else 0), act)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            fake = torch.ops.pycnn.eval_conv_bn_act(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                                      for a in args))
        assert fake.stride() == y.stride()
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last)
        if k == 0:
            for p in list(conv.parameters()) + list(bn.parameters()):
                p.requires_grad_(False)
            torch.library.opcheck(torch.ops.pycnn.eval_conv_bn_act.default, args,
                                  test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_eval_conv_bn_act_plan_made_during_a_change_is_not_kept():
    """A plan Python makes while one of the tensors its fold reads changes (another thread's in-place edit; here
    made inside the planning, with a call that plans another input size from the changed tensors) serves that
    call only: later calls of both sizes see the change."""
    from pycnn import _C
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(64, 64, 1, bias=False), torch.nn.BatchNorm2d(64).eval()
    small, large = (torch.randn(2, 64, s, s).contiguous(memory_format=torch.channels_last) for s in (16, 20))

    def call(x):
        return torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [0, 0], [1, 1], 1,
                                                "dense", "relu", None)
    edits = []

    def planner(*args):
        plan = fused._eval_plan(*args)
        if not edits:
            edits.append(bn.running_var.mul_(4))
            call(small)
        return plan
    _C._eval_conv_set_python(planner, fused._eval_conv_bn_act, fused._MAX_PACKS)
    try:
        with torch.no_grad():
            call(large)
            for x in (small, large):
                torch.testing.assert_close(call(x), torch.relu(bn(conv(x))), rtol=1e-4, atol=1e-5)
    finally:
        _C._eval_conv_set_python(fused._eval_plan, fused._eval_conv_bn_act, fused._MAX_PACKS)
    assert edits


def test_eval_conv_bn_act_plans_per_weight_are_bounded_and_cast():
    """Plans per conv weight are capped (each may hold a packed oneDNN weight; varying input sizes must not pile
    them up), and a depthwise conv given an input of another dtype than its weight runs on the cast weight, as
    the eager path does."""
    from pycnn import _C
    conv, bn = torch.nn.Conv2d(64, 64, 1, bias=False), torch.nn.BatchNorm2d(64).eval()
    with torch.no_grad():
        for size in range(8, 28):
            x = torch.randn(2, 64, size, size).contiguous(memory_format=torch.channels_last)
            y = torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [0, 0], [1, 1], 1,
                                                 "dense", "relu", None)
            torch.testing.assert_close(y, torch.relu(bn(conv(x))), rtol=1e-4, atol=1e-5)
    assert _C._eval_conv_plans(conv.weight) == fused._MAX_PACKS
    dw, dw_bn = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), torch.nn.BatchNorm2d(16).eval()
    reference = torch.nn.Sequential(copy.deepcopy(dw), copy.deepcopy(dw_bn), torch.nn.ReLU()).double()
    for _ in range(2):  # the second call runs the plan the first made, on a new input
        x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
        with torch.no_grad():
            y = torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(dw, dw_bn), dw_bn.eps, [1, 1], [1, 1],
                                                 [1, 1], 16, "depthwise", "relu", None)
            torch.testing.assert_close(y, reference(x), rtol=1e-5, atol=1e-6)
    assert _C._eval_conv_plans(dw.weight) == 1


@pytest.mark.parametrize("expand,stride,se", [(True, 1, False), (False, 2, False), (True, 1, True)])
def test_eval_mbconv_op(expand, stride, se):
    """pycnn::eval_mbconv passes the op checks and equals the block's eager composition."""
    torch.manual_seed(0)
    c, e = 8, 16 if expand else 8
    convs = ([torch.nn.Conv2d(c, e, 1, bias=False)] if expand else []) + [
        torch.nn.Conv2d(e, e, 3, stride, 1, groups=e, bias=False), torch.nn.Conv2d(e, c, 1, bias=False)]
    norms = [torch.nn.BatchNorm2d(m.out_channels).eval() for m in convs]
    fc1, fc2 = torch.nn.Conv2d(e, 4, 1), torch.nn.Conv2d(4, e, 1)
    with torch.no_grad():
        for bn in norms:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    for m in convs + norms + [fc1, fc2]:
        m.requires_grad_(False)
    x = torch.randn(2, c, 9, 9).contiguous(memory_format=torch.channels_last)
    residual = stride == 1
    se_args = (fc1.weight, fc1.bias, fc2.weight, fc2.bias) if se else (None,) * 4
    args = (x, [t for conv, bn in zip(convs, norms) for t in fused.fold_tensors(conv, bn)], [bn.eps for bn in norms],
            stride, "relu6", residual, *se_args, "relu")
    y = torch.ops.pycnn.eval_mbconv(*args)
    h = x
    for k, (conv, bn) in enumerate(zip(convs, norms)):
        if se and k == len(convs) - 1:
            h = h * torch.sigmoid(fc2(fc1(h.mean((2, 3), keepdim=True)).relu()))
        h = bn(conv(h))
        h = h.clamp(0, 6) if k < len(convs) - 1 else h
    torch.testing.assert_close(y, h + x if residual else h, rtol=1e-4, atol=1e-5)
    torch.library.opcheck(torch.ops.pycnn.eval_mbconv.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.slow
def test_torch_compile_training_gradients_equal_the_reference_in_float64():
    torch._dynamo.reset()
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.25, dropout=0.0)
    model, ref = model.double().train(), ref.double().train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for m in (compiled, ref):
        m(x).square().mean().backward()
    torch.testing.assert_close(compiled(x).detach(), ref(x).detach(), rtol=1e-7, atol=1e-9)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9, msg=name)
    for (name, a), b in zip(model.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=name)
    torch._dynamo.reset()


def test_eval_folds_survive_inference_mode_copies_and_pickles():
    """A model built inside inference_mode (its tensors have no version counter) runs in eval; a model that ran
    in eval deep-copies and pickles (its cached folds are dropped, not copied)."""
    import copy
    import io
    with torch.inference_mode():
        m = pycnn.compile(os.path.join(ROOT, "archs", "resnet.arch"), "resnet18", input=(3, 64, 64), classes=10,
                          kernels="pycnn").eval()
        x = torch.randn(1, 3, 64, 64)
        y = m(x)
        torch.testing.assert_close(m(x), y)
    model = pycnn.compile(os.path.join(ROOT, "archs", "resnet.arch"), "resnet18", input=(3, 64, 64), classes=10, kernels="pycnn")
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        twin = copy.deepcopy(model)
        torch.testing.assert_close(twin(x), y)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), y)


def forms(key: str = "entries") -> int:
    """The kernel layouts of weights kept (csrc/cpu/weight_forms.h; "made": made inside scopes so far)."""
    from pycnn import _C
    return _C._weight_forms_stats()[key]


# grouped: the staged kernel's layout (16 channels a group), the packed kernel's (4, avx512/avx2); depthwise
@pytest.mark.parametrize("kind,group_width", [("grouped", 16), ("grouped", 4), ("depthwise", 1)])
def test_conv_weight_layout_is_kept_for_eval_plans_only(kind, group_width):
    """pycnn.gconv and pycnn.dwconv reorder their weight into their kernel's layout on each call; inside an eval
    plan (pycnn::eval_conv_bn_act) the layout is made on the first call and served to the next while the weight is
    unchanged (csrc/cpu/weight_forms.h): an in-place edit, a `.data` edit followed by eval() (clear_folds) and a
    replaced weight are seen; the layouts of freed weights go. A direct call keeps nothing, so a `.data` edit is
    seen at once there."""
    import gc
    from pycnn import _C, ops
    torch.manual_seed(0)
    gc.collect()
    kept = forms()
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32 // group_width, bias=False),
                                torch.nn.BatchNorm2d(32)).eval()
    conv, bn = model
    x = torch.randn(1, 32, 7, 7).contiguous(memory_format=torch.channels_last)

    def call():
        return torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [1, 1], [1, 1],
                                                conv.groups, kind, "relu", None)

    def reference():
        return torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, conv.groups)
    with torch.no_grad():
        for change in (lambda: None, lambda: conv.weight.mul_(-2), lambda: conv.weight.data.mul_(-1),
                       lambda: setattr(conv, "weight", torch.nn.Parameter(conv.weight * 0.5))):
            change()
            fused.clear_folds(model)  # what eval() does
            made = forms("made")
            for _ in range(3):
                torch.testing.assert_close(call(), torch.relu(bn(reference())), rtol=1e-4, atol=1e-5)
            assert forms() == kept + 1 and forms("made") == made + 1  # made once, then served
        conv.weight.data.mul_(-1)  # not followed by eval(): the kept layout would be stale, a direct call is not
        direct = ops.gconv(x, conv.weight, groups=conv.groups, padding=(1, 1)) if kind == "grouped" else \
            ops.dwconv(x, conv.weight, padding=(1, 1))
        torch.testing.assert_close(direct, reference(), rtol=1e-4, atol=1e-5)
    assert forms() == kept + 1
    del model, conv, bn
    gc.collect()
    assert forms() == kept


def test_kept_weight_layouts_are_not_the_activations_cache():
    """A layout kept between calls outlives the forward that made it: it is not allocated from the blocks the
    caching CPU allocator keeps for a forward's activations (a scope), which would stay taken for good."""
    from pycnn import _C, allocator
    conv, bn = torch.nn.Conv2d(384, 384, 3, 1, 1, groups=24, bias=False), torch.nn.BatchNorm2d(384).eval()
    x = torch.randn(1, 384, 7, 7).contiguous(memory_format=torch.channels_last)  # (its layout: 216 KiB)
    made = forms("made")
    _C._cpu_cache_enter_scope(64 << 20)
    try:
        with torch.no_grad():
            torch.ops.pycnn.eval_conv_bn_act(x, *fused.fold_tensors(conv, bn), bn.eps, [1, 1], [1, 1], [1, 1],
                                             conv.groups, "grouped", "relu", None)
    finally:
        _C._cpu_cache_exit_scope()
    assert forms("made") == made + 1
    assert allocator.cpu_cache_stats()["live_bytes"] == 0


def test_mbconv_weight_layouts_are_kept_with_the_folds():
    """Eval inverted-residual blocks run pycnn.mbconv on their folds' own tensors, and keep the layouts its kernel
    reads (the 1x1 weights' GEMM panels, the padded depthwise weights and biases: csrc/cpu/weight_forms.h) between
    calls: made on the first call, kept on the next, replaced with the fold after an in-place edit (the result
    still the reference's), gone with the model."""
    import gc
    from pycnn import runtime
    gc.collect()
    kept = forms()
    model, ref = pair(MOBILENET, "mobilenet_v2", width_mult=0.25)
    blocks = [s for m in model.modules() for steps in runtime.step_lists(m) for s in steps
              if isinstance(s, runtime.MbConvStep)]
    x = torch.randn(2, 3, 32, 32)
    check(model, ref, x)
    made = forms() - kept
    # the depthwise and project convs' weights and biases, and the expand conv's where there is one
    assert len(blocks) == 17 and made == sum(6 if len(b.parts) == 3 else 4 for b in blocks)
    made_so_far = forms("made")
    check(model, ref, x)
    assert forms() - kept == made and forms("made") == made_so_far  # served, not made again
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    name = next(n for n, m in model.named_modules() if m is conv)
    with torch.no_grad():
        for m in (model, ref):
            m.get_submodule(name).weight.mul_(-2.0)
    check(model, ref, x)
    # the edited conv's fold is new: its folded weight's and bias's layouts made again, the others served
    assert forms() - kept == made and forms("made") == made_so_far + 2
    del model, ref, conv
    gc.collect()
    assert forms() == kept


ONEDNN_AVX2_SCRIPT = """
import torch, pycnn
torch.set_num_threads(1)
PLAIN = '''network plain(input = 3x32x32, classes = 10) {
    stem = conv(16, k=1, s=2) relu
    head = avgpool flatten linear(classes)
}'''
repvgg = dict(input=(3, 32, 32), stem_width=8, w1=8, w2=8, w3=8, w4=16, d1=1, d2=1, d3=1)
for kernels in ("pycnn", "torch", "auto"):
    for model in (pycnn.compile("archs/repvgg.arch", "repvgg_a0", kernels=kernels, **repvgg),
                  pycnn.compile(PLAIN, kernels=kernels)):
        for train in (True, False):  # eval with autograd: the conv on the folded weight
            model.train(train)
            for _ in range(3):
                model(torch.randn(4, 3, 32, 32)).sum().backward()
print("survived")
"""


def test_strided_1x1_convs_of_few_channels_survive_onednn_avx2_backward():
    """RepVGG's stem has a 1x1 stride-2 conv of the 3 input channels. In channels_last (the fused backend's layout)
    oneDNN's AVX2 backward-weights kernel for it corrupts the heap (torch 2.14.1; seen aborting the suite on an
    AVX2-only AMD EPYC). The fused steps and plain conv layers run it as a stride-1 conv of the subsampled input
    (fused.conv2d). oneDNN capped at AVX2 and glibc's heap checks on: without the workaround this aborts."""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", MALLOC_CHECK_="3")
    debug = [p for p in ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0", "/usr/lib64/libc_malloc_debug.so.0")
             if os.path.exists(p)]
    if debug:  # glibc >= 2.34 checks the heap on MALLOC_CHECK_ only with its debug library preloaded
        env["LD_PRELOAD"] = debug[0]
    r = subprocess.run([sys.executable, "-c", ONEDNN_AVX2_SCRIPT], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("size,stride", [(8, 2), (9, 2), (10, 3), (7, (2, 3))])
def test_conv2d_subsampling_first_is_the_strided_conv(size, stride):
    """fused.conv2d on an unpadded strided 1x1 conv of 2-7 channels (subsampled, stride 1): F.conv2d's output and
    the gradients of input, weight and bias, float64, NCHW and channels_last."""
    stride2 = stride if isinstance(stride, tuple) else (stride, stride)
    torch.manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, size, size, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
        w = torch.randn(5, 3, 1, 1, dtype=torch.float64, requires_grad=True)
        b = torch.randn(5, dtype=torch.float64, requires_grad=True)
        assert fused.subsamples_first(x, w, stride2, (0, 0))
        ours = fused.conv2d(x, w, b, stride2, (0, 0), (1, 1), 1)
        theirs = F.conv2d(x, w, b, stride2, (0, 0), (1, 1), 1)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(theirs)
        grads = torch.autograd.grad(ours, (x, w, b), g)
        for a, e in zip(grads, torch.autograd.grad(theirs, (x, w, b), g)):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    x, w = torch.randn(1, 8, 8, 8), torch.randn(4, 3, 1, 1, requires_grad=True)
    assert fused.subsamples_first(x[:, :3], w, (2, 2), "valid")
    assert fused.subsamples_first(x[0, :3], w, (2, 2), (0, 0))  # unbatched
    torch.testing.assert_close(fused.conv2d(x[0, :3], w, None, (2, 2), (0, 0), (1, 1), 1),
                               F.conv2d(x[0, :3], w, None, 2), rtol=0, atol=0)
    # 8 channels, padded, stride 1, 3x3, no weight gradient (its forward is sound): as F.conv2d runs them
    assert not fused.subsamples_first(x, torch.randn(4, 8, 1, 1, requires_grad=True), (2, 2), (0, 0))
    assert not fused.subsamples_first(x[:, :3], w, (2, 2), (1, 1))
    assert not fused.subsamples_first(x[:, :3], w, (1, 1), (0, 0))
    assert not fused.subsamples_first(x[:, :3], torch.randn(4, 3, 3, 3, requires_grad=True), (2, 2), (0, 0))
    assert not fused.subsamples_first(x[:, :3], w.detach(), (2, 2), (0, 0))
    with torch.no_grad():
        assert not fused.subsamples_first(x[:, :3], w, (2, 2), (0, 0))
