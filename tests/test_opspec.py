"""The registry (pycnn.opspec) is the one place: every primitive lowers and is documented, the activation table
matches the C++ enum and parser, and the kernel limits are what the kernels accept."""
import re
from pathlib import Path

import pytest

from pycnn import opspec
from pycnn.opspec import ACTIVATIONS, KERNEL_ACTS, NONE_CPP, OPS, PRIMITIVES, REQUIRED

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = {"width": 8, "pair": 1, "pos": 2, "nonneg": 0, "float": 1.0, "int": 1}  # a valid value of each required kind
EXTRA = {"avgpool": ["k=2"]}  # without k, avgpool is global pooling (op gap)


def _call(p: opspec.Primitive) -> str:
    args = ", ".join([str(SAMPLE[a.kind]) for a in p.args if a.default is REQUIRED] + EXTRA.get(p.name, []))
    return f"{p.name}({args})" if args else p.name


def _arch(p: opspec.Primitive) -> str:
    flat = "flatten " if p.op == "linear" else ""
    return f"network t(input = 8x6x6) {{\n    body = {flat}{_call(p)}\n}}\n"


@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_every_primitive_elaborates_lowers_and_runs(name):
    torch = pytest.importorskip("torch")
    import pycnn
    from pycnn import lower
    p = PRIMITIVES[name]
    assert callable(getattr(lower, OPS[p.op].lowering, None)), f"pycnn.lower has no {OPS[p.op].lowering}"
    net = pycnn.parse(_arch(p))
    layer = [layer for _, layer in net.layers()][-1]
    assert layer.op == p.op
    for backend in ("fused", "reference"):
        model = pycnn.compile(_arch(p), backend=backend).eval()
        with torch.no_grad():
            out = model(torch.randn((2,) + net.input_shape))
        assert tuple(out.shape[1:]) == net.out_shape
        assert sum(t.numel() for t in model.parameters()) == net.total_params


def test_every_op_is_made_by_a_primitive():
    assert set(OPS) == {p.op for p in PRIMITIVES.values()}


def test_every_primitive_is_in_the_language_table():
    text = (ROOT / "docs" / "language.md").read_text()
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`([a-z_0-9]+)`", "\n".join(row.split("|")[1] for row in table.splitlines())))
    missing = set(PRIMITIVES) - documented
    assert not missing, f"docs/language.md's table of layers lacks {sorted(missing)}"


def _cpp_enum():
    text = (ROOT / "csrc" / "activation.h").read_text()
    body = re.search(r"enum class Act\s*:\s*\w+\s*\{([^}]*)\}", text).group(1)
    return {name: int(value) for name, value in re.findall(r"(\w+)\s*=\s*(\d+)", body)}


def test_the_cpp_activation_enum_is_the_table():
    expected = dict([NONE_CPP] + [a.cpp for a in ACTIVATIONS.values() if a.cpp])
    assert _cpp_enum() == expected


def test_the_cpp_parser_maps_every_kernel_activation_to_its_enumerator():
    text = (ROOT / "csrc" / "op_common.h").read_text()
    body = re.search(r"inline Act parse_act\(.*?\n}", text, re.S).group(0)
    parsed = {}
    for names, enumerator in re.findall(r"if \((.*?)\) return Act::(\w+);", body):
        for name in re.findall(r'name == "(\w+)"', names):
            parsed[name] = enumerator
    cpp = dict([("none", NONE_CPP[0])] + [(a.name, a.cpp[0]) for a in ACTIVATIONS.values() if a.cpp])
    assert {n: parsed.get(n) for n in KERNEL_ACTS} == cpp


def test_capabilities_need_the_kernels():
    for a in ACTIVATIONS.values():
        if a.bn_act or a.residual or a.se_hidden or a.mask_from_output:
            assert a.cpp is not None, f"{a.name}: a fused capability without a C++ enumerator"


def test_mask_from_output_activations_have_their_derivative_from_the_output():
    pytest.importorskip("torch")
    from pycnn import ops
    assert set(ops._MASK_FROM_OUTPUT) == set(opspec.acts_with("mask_from_output"))


def test_eager_functions_and_modules_exist():
    torch = pytest.importorskip("torch")
    from pycnn import fused
    from pycnn.modules import make_act
    x = torch.linspace(-4, 4, 17)
    for name in ACTIVATIONS:
        torch.testing.assert_close(make_act(name)(x), fused.ACT_FNS[name](x))


def test_kernel_limits_are_what_the_kernels_accept():
    torch = pytest.importorskip("torch")
    from pycnn import ops

    def dw_ok(k, s=1, d=1):
        x, w = torch.randn(1, 2, 12, 12), torch.randn(2, 1, k, k)
        try:
            ops.dwconv(x, w, stride=s, padding=0, dilation=d)
            return True
        except RuntimeError:
            return False

    def g_ok(k):
        x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 2, k, k)
        try:
            ops.gconv(x, w, groups=2, padding=k // 2)
            return True
        except RuntimeError:
            return False

    assert [k for k in range(1, 10) if dw_ok(k)] == [k for k in range(1, 10) if opspec.dwconv_kernel_ok(k)]
    assert tuple(s for s in (1, 2, 3) if dw_ok(3, s=s)) == opspec.DWCONV_STRIDES
    assert tuple(d for d in (1, 2, 3) if dw_ok(3, d=d)) == opspec.DWCONV_DILATIONS
    assert tuple(k for k in range(1, 6) if g_ok(k)) == opspec.GCONV_KERNELS
    assert re.search(r"kDwConvMaxKernel = (\d+);", (ROOT / "csrc" / "dwconv.h").read_text()).group(1) \
        == str(opspec.DWCONV_MAX_KERNEL)
