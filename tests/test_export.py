"""Deployment of fused networks: ONNX through torch.onnx's dynamo exporter (pycnn's ops decomposed to ATen,
pycnn.decompositions) run in onnxruntime, torch.export and an AOTInductor package, each with a dynamic
batch size; `pycnn export`; clear errors for what cannot be exported."""

import pytest
import torch

import pycnn
from pycnn.export import ExportError
from random_bn import randomized

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("one_thread")

# every pycnn op in eval mode: dwconv (+residual), gconv, se, bn_act
TINY = """
block res(w, stride=1) {
    main {
        conv(w, k=3, groups=w) bn relu6
        conv(w, k=1) bn
    }
    shortcut {}
    merge add relu
}
network tiny(input = 3x16x16, classes = 10) {
    stem = conv(8, k=3, s=2) bn relu
    body = conv(8, k=3, groups=8) bn relu6
           conv(16, k=3, s=2, groups=4) bn silu
           se(4, act=relu)
           bn relu
    stage s1 = 1 x res(16) stride 1
    head = avgpool flatten linear(classes)
}
"""

# the smallest network that runs a pycnn kernel (a depthwise conv): for the slow exports
SMALL = """
network small(input = 3x16x16, classes = 10) {
    stem = conv(8, k=3, s=2) bn relu
    body = conv(8, k=3, groups=8) bn relu6
    head = avgpool flatten linear(classes)
}
"""

PYCNN_OPS = {torch.ops.pycnn.dwconv_forward.default, torch.ops.pycnn.gconv_forward.default,
             torch.ops.pycnn.se_forward.default, torch.ops.pycnn.bn_act_forward.default}


def tiny_model(text=TINY):
    torch.manual_seed(0)
    return randomized(pycnn.compile(text, kernels="pycnn"))


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


def test_decompositions_compute_what_the_kernels_compute():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x, res = r(2, 8, 9, 9), r(2, 8, 9, 9)
    scale, shift = r(8).abs() + 0.5, r(8)
    ops = torch.ops.pycnn
    cases = [
        ("dwconv", (x, r(8, 1, 3, 3), scale, shift, res, [1, 1], [1, 1], [1, 1], "relu6")),
        ("dwconv", (x, r(8, 1, 5, 5), None, None, None, [2, 2], [2, 2], [1, 1], "silu")),
        ("gconv", (x, r(8, 2, 3, 3), scale, shift, res, [1, 1], [1, 1], 4, "hardswish", False)),
        ("gconv", (x, r(16, 4, 3, 3), None, None, None, [2, 2], [1, 1], 2, "relu", True)),
        ("bn_act", (x, scale, shift, res, r(8) * 0.1, r(8).abs() + 0.5, False, 1e-5, "relu")),
        ("bn_act", (x, scale, shift, None, None, None, True, 1e-3, "silu")),
        ("se", (x, r(2, 8, 1, 1), r(2), r(8, 2, 1, 1), r(8), res, "relu", "relu")),
    ]
    for name, args in cases:
        ours = getattr(pycnn.decompositions, f"{name}_forward")(*args)
        kernel = getattr(ops, f"{name}_forward")(*args)
        ours, kernel = (ours,) if torch.is_tensor(ours) else ours, (kernel,) if torch.is_tensor(kernel) else kernel
        for a, b in zip(ours, kernel):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


def test_onnx_of_a_fused_network_with_every_pycnn_op(tmp_path):
    model = tiny_model()
    program = pycnn.export.export_program(model)
    assert PYCNN_OPS <= {n.target for n in program.graph.nodes}  # what the ONNX export has to translate
    pycnn.export_onnx(model, tmp_path / "tiny.onnx")
    graph = onnx.load(str(tmp_path / "tiny.onnx")).graph
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)  # standard operators only
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch size
    x = torch.randn(5, 3, 16, 16)  # another batch size than the export's example (2)
    with torch.no_grad():
        expected = model(x)
    (got,) = run_onnx(tmp_path / "tiny.onnx", x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert model.training is False


def test_plain_torch_onnx_export_of_a_compiled_model(tmp_path):
    model = tiny_model()
    x = torch.randn(2, 3, 16, 16)
    with pycnn.export.onnx_decompositions():
        torch.onnx.export(model, (x,), str(tmp_path / "plain.onnx"), dynamic_shapes=({0: "batch"},))
    assert not set(pycnn.decompositions.COMPOSITIONS) & set(torch._decomp.decomposition_table)  # only inside
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(tmp_path / "plain.onnx", x[:1])[0], model(x[:1]), rtol=1e-4, atol=1e-4)


def test_inductor_keeps_pycnn_kernels_under_ci(monkeypatch):
    """With $CI set, inductor refuses to fall back to a custom op's kernel while torch's decomposition table holds
    an entry for it: pycnn's compositions must not be there outside an export."""
    monkeypatch.setenv("CI", "true")
    model = tiny_model()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-4)


def test_features_only_exports_every_map(tmp_path):
    model = randomized(pycnn.create_model("mobilenet_v2", features_only=True, out_indices=(0, 1),
                                          input=(3, 32, 32), kernels="pycnn"))
    pycnn.export_onnx(model, tmp_path / "f.onnx")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(tmp_path / "f.onnx", x)
    assert [o.name for o in onnx.load(str(tmp_path / "f.onnx")).graph.output] == ["features.0", "features.1"]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "regnety_400mf", "resnext50_32x4d"])
def test_onnx_runtime_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = randomized(pycnn.create_model(name, input=(3, 64, 64), kernels="pycnn"))
    pycnn.export_onnx(model, tmp_path / "m.onnx")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    (got,) = run_onnx(tmp_path / "m.onnx", x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_torch_export_with_a_dynamic_batch():
    model = tiny_model()
    program = pycnn.export.export_program(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_aoti_package_end_to_end(tmp_path):
    model = tiny_model(SMALL)
    assert torch.ops.pycnn.dwconv_forward.default in {n.target for n in pycnn.export.export_program(model).graph.nodes}
    path = pycnn.export_aoti(model, tmp_path / "tiny.pt2")
    import zipfile
    with zipfile.ZipFile(path) as package:  # the package calls pycnn's kernel, not a decomposition of it
        assert any(b'"target": "pycnn::dwconv_forward"' in package.read(n) for n in package.namelist()
                   if n.endswith(".json"))
    runner = pycnn.export.load_aoti(path)
    for batch in (1, 4):
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)


@torch.library.custom_op("pycnn_test::flatten", mutates_args=())
def _flatten_without_onnx(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).clone()


@_flatten_without_onnx.register_fake
def _(x):
    return x.new_empty(x.shape[0], x[0].numel())


class Untranslatable(torch.nn.Module):
    """A layer whose op has no ONNX translation (as a new pycnn op would before its decomposition exists)."""

    def forward(self, x):
        return _flatten_without_onnx(x)


class Untraceable(torch.nn.Module):
    """A layer torch.export cannot trace."""

    def forward(self, x):
        return torch.from_numpy(x.numpy().reshape(x.shape[0], -1))


def test_a_layer_torch_export_cannot_trace_is_named():
    model = tiny_model()
    model.head.flatten1 = Untraceable()
    with pytest.raises(ExportError, match=r"torch.export of network 'tiny' failed at layer head.flatten1 "
                                          r"\(Untraceable\): "):
        pycnn.export.export_program(model)


@pytest.mark.slow
def test_a_layer_without_onnx_translation_is_named(tmp_path):
    model = tiny_model(SMALL)
    model.head.flatten1 = Untranslatable()
    with pytest.raises(ExportError, match=r"ONNX export of network 'small' failed at layer head.flatten1 "
                                          r"\(Untranslatable\): Failed to convert"):
        pycnn.export_onnx(model, tmp_path / "u.onnx")


def test_export_command(tmp_path, capsys):
    from pycnn.cli import main
    arch = tmp_path / "tiny.arch"
    arch.write_text(TINY)
    out = tmp_path / "t.onnx"
    assert main(["export", str(arch), "--onnx", str(out), "--set", "classes=3", "--input", "3x32x32"]) == 0
    assert "wrote" in capsys.readouterr().out
    (got,) = run_onnx(out, torch.randn(1, 3, 32, 32))
    assert got.shape == (1, 3)
    ckpt = tmp_path / "tiny.safetensors"
    pycnn.save(tiny_model(), ckpt)
    assert main(["export", str(ckpt), "--onnx", str(out), "--static-batch"]) == 0  # rebuilt from the checkpoint
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(out, x)[0], tiny_model()(x), rtol=1e-4, atol=1e-4)
    assert main(["export", str(arch), "--onnx", str(out), "--weights", str(tmp_path / "missing.pth")]) == 1
    assert "nor an existing file" in capsys.readouterr().err
    assert main(["export", str(arch)]) == 2
    assert "give --onnx" in capsys.readouterr().err
    assert main(["export", "resnet5", "--onnx", str(out)]) == 1
    assert "did you mean resnet50" in capsys.readouterr().err
