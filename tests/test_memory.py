"""Training memory (pycnn.memory): epilogues' outputs rebuilt in backward instead of kept, exactly as small as
promised, bit-identical gradients, and in-place edits of kept tensors still caught."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import pycnn
from pycnn import memory
from pycnn.nn import BatchNormAct2d

ARCHS = Path(__file__).resolve().parents[1] / "archs"


def saved_bytes(file, network, **overrides):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    out = {}
    for name, kwargs in (("reference", dict(backend="reference")), ("fused", dict(kernels="pycnn"))):
        model = pycnn.compile(ARCHS / file, network, input="3x64x64", **kwargs, **overrides).train()
        model(x)  # the first call may measure kernel choices
        out[name] = memory.saved_activation_bytes(model, x)
        if name == "fused":
            model.recompute_epilogues = False
            out["fused_keep"] = memory.saved_activation_bytes(model, x)
    return out


@pytest.mark.parametrize("file,network,bound", [("mobilenet_v2.arch", "mobilenet_v2", 0.55),
                                                ("resnet.arch", "resnet50", 0.55),
                                                ("efficientnet.arch", "efficientnet_b0", 0.7)])
def test_activations_kept_for_backward(file, network, bound):
    b = saved_bytes(file, network)
    assert b["fused"] <= bound * b["reference"], b
    # the saving is the recomputation's: keeping the outputs as well costs a third more at least
    assert b["fused"] < 0.75 * b["fused_keep"], b


def test_bn_act_relu_residual_keeps_one_tensor_per_layer():
    """conv -> bn+relu -> conv -> bn+residual+relu: what backward keeps is the two conv outputs and the input,
    nothing else (exact bytes)."""
    torch.manual_seed(0)
    conv1, conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
    bn1, bn2 = BatchNormAct2d(8, act="relu"), BatchNormAct2d(8, act="relu")
    model = torch.nn.Module()
    model.conv1, model.conv2, model.bn1, model.bn2 = conv1, conv2, bn1, bn2
    x = torch.randn(2, 8, 6, 6, requires_grad=True)

    def forward(x):
        with memory.recompute_epilogues():
            return bn2(conv2(bn1(conv1(x))), residual=x)

    model.forward = forward
    per_tensor = x.numel() * 4
    stats = 4 * 8 * 4  # mean and variance of both BatchNorms, float32
    assert memory.saved_activation_bytes(model, x) == 3 * per_tensor + stats


def test_residual_relu_backward_under_recompute_is_one_kernel():
    """Under recompute_epilogues() a bn+residual+relu layer keeps its residual (the output's recipe would keep it
    anyway): backward is one pycnn::bn_act_backward with the residual, no rebuilt output and no mask ops (as
    without the recomputation, where it keeps the output), with the composition's gradients in float64."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    bn = BatchNormAct2d(8, act="relu").double()
    x, r = (torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    with memory.recompute_epilogues():
        y = bn(x, residual=r)
    w = torch.randn_like(y)
    log = Log()
    with log:
        grads = torch.autograd.grad(y, [x, r, bn.weight, bn.bias], w)
    kernel_calls = [op for op in log.ops if op.startswith("pycnn.")]
    assert kernel_calls == ["pycnn.bn_act_backward"], log.ops
    assert not {"aten.le", "aten.mul", "aten.bitwise_not"} & set(log.ops), log.ops
    ref = torch.nn.BatchNorm2d(8).double()
    ref.load_state_dict(bn.state_dict())
    y_ref = F.relu(ref(x) + r)
    for g, g_ref in zip(grads, torch.autograd.grad(y_ref, [x, r, ref.weight, ref.bias], w)):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def test_residual_layer_in_a_checkpoint_under_recompute_keeps_its_gradients():
    """A bn+residual+relu layer inside torch.utils.checkpoint (non-reentrant) inside recompute_epilogues(): the
    checkpoint's hooks, not pycnn's, pack what the layer saves, and its re-run in backward happens outside the
    recomputation; the layer must save the same thing both times (it saved the residual, then the output, and
    backward took the output for the residual: wrong gradients, caught here)."""
    from torch.utils.checkpoint import checkpoint
    torch.manual_seed(0)
    bn = BatchNormAct2d(8, act="relu").double()
    ref = torch.nn.BatchNorm2d(8).double()
    ref.load_state_dict(bn.state_dict())
    x, r = (torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    with memory.recompute_epilogues():
        y = checkpoint(lambda a, b: bn(a, residual=b), x, r, use_reentrant=False)
    w = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, r, bn.weight, bn.bias], w)
    y_ref = F.relu(ref(x) + r)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    for g, g_ref in zip(grads, torch.autograd.grad(y_ref, [x, r, ref.weight, ref.bias], w)):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def _grads(model, x):
    torch.manual_seed(1)  # dropout and drop-path draw the same masks
    y = model(x)
    y.square().sum().backward()
    return [y.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("file,network", [("resnet.arch", "resnet18"), ("mobilenet_v2.arch", "mobilenet_v2"),
                                          ("efficientnet.arch", "efficientnet_b0")])
def test_recomputed_gradients_are_bit_identical(file, network):
    torch.manual_seed(0)
    model = pycnn.compile(ARCHS / file, network, input="3x32x32", classes=10, kernels="pycnn").double().train()
    keeping = copy.deepcopy(model)
    keeping.recompute_epilogues = False
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    for a, b in zip(_grads(model, x), _grads(keeping, x)):
        assert torch.equal(a, b)


def test_recomputed_gradients_match_the_reference_in_float64():
    torch.manual_seed(0)
    model = pycnn.compile(ARCHS / "resnet.arch", "resnet18", input="3x32x32", classes=10,
                          kernels="pycnn").double().train()
    reference = pycnn.compile(ARCHS / "resnet.arch", "resnet18", input="3x32x32", classes=10,
                              backend="reference").double().train()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    for a, b in zip(_grads(model, x), _grads(reference, x)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_half_precision_recompute_matches_keeping():
    torch.manual_seed(0)
    bn = BatchNormAct2d(6, act="silu").bfloat16()
    x = torch.randn(3, 6, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(6, 6, 1, 1, dtype=torch.bfloat16, requires_grad=True)
    grads = []
    for recompute in (True, False):
        x.grad = w.grad = None
        with memory.recompute_epilogues() if recompute else torch.autograd.graph.saved_tensors_hooks(
                lambda t: t, lambda t: t):
            y = F.conv2d(bn(x, residual=x), w)
        y.float().sum().backward()
        grads.append(torch.cat([x.grad.flatten(), w.grad.flatten()]))
    assert torch.equal(*grads)


def test_inplace_edit_of_a_kept_tensor_is_caught():
    conv = torch.nn.Conv2d(4, 4, 1)
    bn = BatchNormAct2d(4, act="relu")
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with memory.recompute_epilogues():
        c = conv(x)
        y = conv(bn(c))  # bn's output is kept as a recipe over c
    with torch.no_grad():
        c.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    with memory.recompute_epilogues():
        t = x * 2
        z = t.sin()  # keeps t, a plain tensor
    with torch.no_grad():
        t.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_max_pool_keeping_its_input_gives_pytorchs_gradient():
    x = torch.tensor([[[[1.0, 3.0, 3.0, 0.0], [2.0, 3.0, float("nan"), 1.0], [5.0, 5.0, 4.0, 4.0],
                        [5.0, 5.0, 0.0, 4.0]]]]).repeat(2, 3, 1, 1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    with memory.recompute_epilogues():
        ya = memory.max_pool2d(a, 3, 1, 1)
    yb = F.max_pool2d(b, 3, 1, 1)
    g = torch.arange(ya.numel(), dtype=torch.float32).reshape(ya.shape)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya.nan_to_num(-1), yb.nan_to_num(-1)) and torch.equal(a.grad, b.grad)


def test_eval_and_no_grad_keep_nothing_special():
    model = pycnn.compile(ARCHS / "resnet.arch", "resnet18", input="3x32x32", classes=10, kernels="pycnn")
    x = torch.randn(2, 3, 32, 32)
    model.eval()(x)
    assert not memory.active()
    with torch.no_grad():
        model.train()(x)
    assert not memory.active()


def test_an_output_edited_in_place_is_kept_as_edited():
    """A recipe rebuilds the output as the kernel made it; once it was changed in place, the edited tensor is
    kept instead (the gradient must see the edit)."""
    torch.manual_seed(0)
    bn = BatchNormAct2d(4, act="relu")
    w = torch.randn(4, 4, 1, 1, requires_grad=True)
    x = torch.randn(2, 4, 3, 3)
    grads = []
    for recompute in (True, False):
        w.grad = None
        with memory.recompute_epilogues() if recompute else torch.autograd.graph.saved_tensors_hooks(
                lambda t: t, lambda t: t):
            y = bn(x.requires_grad_())
            y.mul_(0.5)  # e.g. a forward hook scaling a block's output
            z = F.conv2d(y, w)  # keeps the edited y
        z.sum().backward()
        grads.append(w.grad.clone())
    assert torch.equal(*grads)
