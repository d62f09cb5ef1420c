"""The two ways an op's backward reaches autograd (pycnn/ops.py, _register_autograd): eager calls take a
torch.autograd.Function, torch.compile and direct torch.ops calls torch.library's registration. Both run the
same setup_context and backward, so their gradients are bit-identical."""

import pytest
import torch
from kernel_checks import make_input

from pycnn import ops


def _t(*shape, seed, positive=False):
    """A seeded float64 tensor (make_input's), |t| + 0.5 where it scales."""
    t = make_input(shape, "nchw", torch.float64, "cpu", seed)
    return t.abs() + 0.5 if positive else t


# name -> (the wrapper's call, the same call straight to torch.ops.pycnn, the tensors to differentiate)
def _bn_act():
    x, w, b, r = _t(2, 6, 5, 4, seed=0), _t(6, seed=1, positive=True), _t(6, seed=2), _t(2, 6, 5, 4, seed=3)
    return (lambda x, w, b, r: ops.bn_act(x, w, b, act="relu", residual=r),
            lambda x, w, b, r: torch.ops.pycnn.bn_act_forward(x, w, b, r, None, None, True, 1e-5, "relu")[0],
            (x, w, b, r))


def _dwconv():
    x, w, s, b = _t(2, 6, 7, 5, seed=0), _t(6, 1, 3, 3, seed=1), _t(6, seed=2, positive=True), _t(6, seed=3)
    r = _t(2, 6, 4, 3, seed=4)
    return (lambda x, w, s, b, r: ops.dwconv(x, w, s, b, stride=2, padding=1, act="silu", residual=r),
            lambda x, w, s, b, r: torch.ops.pycnn.dwconv_forward(x, w, s, b, r, [2, 2], [1, 1], [1, 1], "silu"),
            (x, w, s, b, r))


def _gconv():
    x, w, s, b = _t(2, 8, 6, 5, seed=0), _t(8, 4, 3, 3, seed=1), _t(8, seed=2, positive=True), _t(8, seed=3)
    r = _t(2, 8, 6, 5, seed=4)
    return (lambda x, w, s, b, r: ops.gconv(x, w, s, b, padding=1, groups=2, act="relu", residual=r),
            lambda x, w, s, b, r: torch.ops.pycnn.gconv_forward(x, w, s, b, r, [1, 1], [1, 1], 2, "relu", True)[0],
            (x, w, s, b, r))


def _se():
    x, w1, b1, w2, b2 = _t(2, 8, 4, 3, seed=0), _t(2, 8, seed=1), _t(2, seed=2), _t(8, 2, seed=3), _t(8, seed=4)
    return (lambda *a: ops.se(*a, act="silu"),
            lambda *a: torch.ops.pycnn.se_forward(*a, None, "silu", "none")[0],
            (x, w1, b1, w2, b2))


CASES = {"bn_act_forward": _bn_act, "dwconv_forward": _dwconv, "gconv_forward": _gconv, "se_forward": _se}


def test_every_differentiable_op_has_both_paths():
    assert set(ops._EAGER_AUTOGRAD) == set(CASES) | {"mbconv_forward"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_function_equals_registered_autograd(name):
    wrapper, direct, tensors = CASES[name]()
    results = []
    for fn in (wrapper, direct):
        leaves = [t.clone().requires_grad_() for t in tensors]
        y = fn(*leaves)
        results.append((y, y.grad_fn.name(), torch.autograd.grad(y, leaves, _t(*y.shape, seed=9))))
    (y_eager, node_eager, g_eager), (y_lib, node_lib, g_lib) = results
    assert node_eager == f"{name}Backward"  # the eager Function, named after the op
    assert node_eager != node_lib  # torch.library's own node
    torch.testing.assert_close(y_eager, y_lib, rtol=0, atol=0)
    for a, b in zip(g_eager, g_lib):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_grad_compile_and_trace_take_the_op(name, monkeypatch):
    """Only eager calls that record a graph take the Function: with it made to fail, no_grad, torch.compile and
    torch.jit.trace (whose graph must hold the op itself) still run and give the eager values."""
    wrapper, direct, tensors = CASES[name]()
    expected = direct(*tensors)
    monkeypatch.setitem(ops._EAGER_AUTOGRAD, name, lambda *args: pytest.fail("the eager Function was used"))
    leaves = [t.clone().requires_grad_() for t in tensors]
    with torch.no_grad():
        torch.testing.assert_close(wrapper(*leaves), expected, rtol=0, atol=0)
    compiled = torch.compile(wrapper, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*leaves), expected, rtol=0, atol=0)
    # check_trace off: the checker reruns on detached copies, where gconv's "keep for backward" flag differs
    traced = torch.jit.trace(wrapper, tuple(leaves), check_trace=False)
    assert f"pycnn::{name}" in str(traced.graph)
    torch.testing.assert_close(traced(*leaves), expected, rtol=0, atol=0)
