"""The mbconv pass (pycnn.passes.mbconv) and its runtime step: which blocks it fuses, that a compiled network
equals the reference with it, that training never changes."""
import os

import pytest
import torch

import pycnn
from pycnn import dispatch, passes
from pycnn.lower import to_backend
from pycnn.passes.mbconv import fuse_mbconv
from pycnn.runtime import MbConvStep, step_lists
from random_bn import randomized

MOBILENET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "archs", "mobilenet_v2.arch")


@pytest.fixture
def private_kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(dispatch.ENV_KERNELS, raising=False)


def test_pass_matches_every_mobilenet_v2_block():
    plan = passes.run(pycnn.parse(MOBILENET, "mobilenet_v2"))
    blocks = [f for f in passes.fused_nodes(plan) if f.kind == "mbconv"]
    assert len(blocks) == 17
    assert [b.attrs["expand"] for b in blocks] == [False] + [True] * 16
    assert [b.attrs["s"] for b in blocks] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert sum(b.attrs["residual"] for b in blocks) == 10
    off = passes.run(pycnn.parse(MOBILENET, "mobilenet_v2"), disable=["mbconv"])
    assert not [f for f in passes.fused_nodes(off) if f.kind == "mbconv"]


def test_pass_matches_every_efficientnet_b0_block_with_its_se():
    """EfficientNet's blocks have SE between the depthwise and the project conv: fused with it."""
    root = os.path.dirname(MOBILENET)
    plan = passes.run(pycnn.parse(os.path.join(root, "efficientnet.arch"), "efficientnet_b0"))
    blocks = [f for f in passes.fused_nodes(plan) if f.kind == "mbconv"]
    assert len(blocks) == 16
    assert [b.attrs["se"] for b in blocks] == [8, 4, 6, 6, 10, 10, 20, 20, 20, 28, 28, 28, 48, 48, 48, 48]
    assert {b.attrs["se_act"] for b in blocks} == {"silu"} and {b.attrs["act"] for b in blocks} == {"silu"}
    assert [b.attrs["k"] for b in blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [p.kind for p in blocks[1].attrs["parts"]] == ["conv_bn_act", "conv_bn_act", "se", "conv_bn_act"]
    mobilenet = [b for b in passes.fused_nodes(passes.run(pycnn.parse(MOBILENET, "mobilenet_v2")))
                 if b.kind == "mbconv"]
    assert len(mobilenet) == 17 and all(b.attrs["se"] == 0 and b.attrs["se_act"] is None for b in mobilenet)
    # an SE with an activation after its scaling is not the block's (nor is the block without it)
    plan = passes.run(pycnn.parse(os.path.join(root, "efficientnet.arch"), "efficientnet_b0"), disable=["mbconv"])
    for se in [f for f in passes.fused_nodes(plan) if f.kind == "se"]:
        se.attrs["post_act"] = "relu"
    fuse_mbconv(plan)
    assert not [f for f in passes.fused_nodes(plan) if f.kind == "mbconv"]


@pytest.mark.usefixtures("private_kernel_cache")
@pytest.mark.parametrize("path,network,overrides,blocks", [
    ("mobilenet_v2.arch", "mobilenet_v2", dict(width_mult=0.5), 17),
    ("efficientnet.arch", "efficientnet_b0", dict(width=0.5), 16),  # every block with its SE inside
], ids=["mobilenet_v2", "efficientnet_b0"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_compiled_network_eval_equals_the_reference_in_float64(monkeypatch, path, network, overrides, blocks, device):
    net = dict(input=(3, 32, 32), kernels="pycnn", dropout=0.0, **overrides)
    path = os.path.join(os.path.dirname(MOBILENET), path)
    torch.manual_seed(0)
    model = randomized(pycnn.compile(path, network, **net)).double().to(device)
    ref = to_backend(model, "reference").eval()
    calls = []
    monkeypatch.setattr(pycnn.fused, "mbconv_block", _counting(pycnn.fused.mbconv_block, calls))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, device=device)
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
    assert len(calls) == blocks, "every block ran as pycnn.mbconv"
    assert (y - y_ref).abs().max().item() < 1e-9
    # training (and autograd) run the parts, exactly as without the pass
    calls.clear()
    unfused = pycnn.compile(path, network, disable_passes=["mbconv"], **net).double().to(device)
    unfused.load_state_dict(model.state_dict())
    model.train(), unfused.train()
    assert torch.equal(model(x), unfused(x)) and not calls


def _counting(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    return wrapped


@pytest.mark.usefixtures("private_kernel_cache")
@pytest.mark.parametrize("faster", ["pycnn", "torch"])
def test_auto_dispatch_races_the_fused_block_against_its_parts(monkeypatch, private_kernel_cache, faster):
    """kernels="auto": each block races the fused op ("pycnn") against its parts ("torch"); the faster runs."""
    from pycnn import fused
    raced = []

    def fake_measure(run, x, residual, params, buffers, kernels=("pycnn", "torch"), repeats=5):
        raced.append(kernels)
        return {k: 1.0 if k == faster else 2.0 for k in kernels}
    monkeypatch.setattr(dispatch, "measure", fake_measure)
    calls = []
    real_block = fused.mbconv_block
    monkeypatch.setattr(fused, "mbconv_block", lambda *a, **k: calls.append(1) or real_block(*a, **k))
    torch.manual_seed(0)
    model = randomized(pycnn.compile(MOBILENET, "mobilenet_v2", input=(3, 32, 32), kernels="auto"))
    ref = to_backend(model, "reference").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
    steps = [s for m in model.modules() for lst in step_lists(m) for s in lst if isinstance(s, MbConvStep)]
    assert len(steps) == 17 and all(s.last_kernel == faster for s in steps)
    assert len(calls) == (17 if faster == "pycnn" else 0)
    assert (y - y_ref).abs().max().item() < 1e-4 * y_ref.abs().max().item()
    calls.clear()
    model.train()
    model(torch.randn(2, 3, 32, 32))
    assert calls == [] and all(s.last_kernel == "torch" for s in steps)  # training: the parts, nothing to race


TWO_EXPANSIONS = """
use std
network t(input = 3x16x16, classes = 10) {
    stem = conv(16, k=3, s=1) bn relu6
    stage a = 1 x inverted_residual(16, expand=6) stride 1
    stage b = 1 x inverted_residual(16, expand=2) stride 1
    head = avgpool flatten linear(classes)
}
"""


def test_blocks_alike_but_for_their_expansion_keep_their_own_kernel_choice():
    """The kernel cache key of a block holds its expanded width: 16->96->16 and 16->32->16 are measured apart."""
    model = pycnn.compile(TWO_EXPANSIONS)
    steps = [s for m in model.modules() for lst in step_lists(m) for s in lst if isinstance(s, MbConvStep)]
    assert len(steps) == 2 and steps[0].signature != steps[1].signature


@pytest.mark.parametrize("op", ["eval_mbconv", "mbconv_forward"])
def test_torch_compile_runs_the_fused_block_and_export_keeps_its_parts(op, monkeypatch):
    """A graph torch.compile traces in eval holds one fused op per block and computes what eager does: in a CPU
    graph that holds the allocator scope pycnn::eval_mbconv (the folds cached), elsewhere pycnn::mbconv_forward
    (folded in the graph); torch.export's (and so ONNX's) keeps the parts, which have standard translations."""
    from pycnn import allocator
    if op == "eval_mbconv":  # a graph that holds the allocator scope
        monkeypatch.setattr(allocator, "COMPILED_SCOPE_MIN_ACTIVATION_BYTES", 0)
    torch.manual_seed(0)
    model = randomized(pycnn.compile(MOBILENET, "mobilenet_v2", input=(3, 32, 32), width_mult=0.25, dropout=0.0,
                                     kernels="pycnn")).eval()
    from torch._dynamo.testing import EagerAndRecordGraphs
    backend = EagerAndRecordGraphs()
    torch._dynamo.reset()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = torch.compile(model, fullgraph=True, backend=backend)(x)
        expected = model(x)
    torch._dynamo.reset()
    targets = [str(n.target) for n in backend.graphs[0].graph.nodes if n.op == "call_function"]
    assert sum(op in t for t in targets) == 17 and sum("mbconv" in t for t in targets) == 17
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    program = pycnn.export.export_program(model)
    assert not [n for n in program.graph.nodes if "mbconv" in str(n.target)]


@pytest.mark.usefixtures("private_kernel_cache")
def test_trace_time_race_runs_the_fused_block_and_its_parts(monkeypatch):
    """kernels="auto" under torch.compile: the race timed while dynamo traces runs the fused op for "pycnn" (for
    the blocks whose shortcut is their input too) and the parts for "torch"."""
    calls, ran = [], []
    monkeypatch.setattr(pycnn.fused, "mbconv_block", _counting(pycnn.fused.mbconv_block, calls))
    original = MbConvStep.run

    def spy(self, modules, x, residual, kernel):
        before = len(calls)
        y = original(self, modules, x, residual, kernel)
        ran.append((kernel, residual is not None, len(calls) > before))
        return y

    def fake_measure(run, x, residual, params, buffers, kernels=("pycnn", "torch"), repeats=5):
        x, residual = (t if t is None else t.detach() for t in (x, residual))  # as dispatch.measure does
        for k in kernels:
            run(k, x, residual)
        return {k: 1.0 if k == "pycnn" else 2.0 for k in kernels}
    monkeypatch.setattr(MbConvStep, "run", spy)
    monkeypatch.setattr(dispatch, "measure", fake_measure)
    torch.manual_seed(0)
    model = randomized(pycnn.compile(MOBILENET, "mobilenet_v2", input=(3, 32, 32), width_mult=0.25,
                                     dropout=0.0)).eval()
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend="eager")(torch.randn(2, 3, 32, 32))
    torch._dynamo.reset()
    assert {(kernel, fused_op) for kernel, _, fused_op in ran} == {("pycnn", True), ("torch", False)}
    assert {shortcut for kernel, shortcut, _ in ran if kernel == "pycnn"} == {True, False}
