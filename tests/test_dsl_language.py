"""The language's features, one by one, on small texts."""
import os
import subprocess
import sys

import pytest

import pycnn
from pycnn import ArchError, ir
from pycnn.dsl import ast as A
from pycnn.dsl.parse import parse_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layers(net):
    return {name: layer for name, layer in net.layers()}


def test_ast_nodes_are_frozen_and_located():
    f = parse_text("network n(input = 3x8x8) {\n    stem = conv(4, k=3)\n}\n", "t.arch")
    net = f.items[0]
    assert isinstance(net, A.NetworkDef)
    part = net.body[0]
    call = part.items[0]
    assert (call.loc.file, call.loc.line, call.loc.column) == ("t.arch", 2, 12)
    with pytest.raises(Exception):
        call.name = "other"


def test_overrides_and_defaults():
    text = "network n(input = 3x32x32, classes = 10, width = 8) {\n    stem = conv(width, k=3)\n" \
           "    head = avgpool flatten linear(classes)\n}"
    net = pycnn.parse(text, classes=5, width=12, input=(3, 16, 16))
    assert net.out_shape == (5,)
    assert layers(net)["stem.conv1"].out_shape == (12, 16, 16)
    assert pycnn.parse(text, input="3x8x8").input_shape == (3, 8, 8)


def test_alias_chain_and_override_precedence():
    text = """
    network a(input = 3x8x8, w = 4) { stem = conv(w) }
    network b = a(w = 8)
    network c = b(input = 3x4x4)
    """
    assert pycnn.parse(text, "b").out_shape == (8, 8, 8)
    assert pycnn.parse(text, "c").out_shape == (8, 4, 4)
    assert pycnn.parse(text, "c", w=2).out_shape == (2, 4, 4)


def test_expressions():
    text = """
    network n(input = 3x8x8, m = 1.5) {
        let a = 10 / 4
        let b = 12 / 4
        let c = 7 // 2 + 7 % 2 + 2 ** 3
        let d = a > 2 and not (b == 4) ? round(2.5) : 99
        let e = make_divisible(37 * m, 8)
        let f = min(3, max(1, 2)) + abs(-1) + floor(1.7) + ceil(1.2) + int(3.9)
        stem = conv(b, k=1) conv(c, k=1) conv(d, k=1) conv(e, k=1) conv(f, k=1) conv(scale_depth(3, 1.1), k=1)
    }
    """
    net = pycnn.parse(text)
    outs = [layer.out_shape[0] for _, layer in net.layers()]
    # b = 3; c = 3 + 1 + 8 = 12; d = round(2.5) = 2 (half to even); e = make_divisible(55.5) = 56
    # f = 2 + 1 + 1 + 2 + 3 = 9; scale_depth(3, 1.1) = ceil(3.3000000000000003) = 4
    assert outs == [3, 12, 2, 56, 9, 4]


def test_non_integer_width_is_an_error():
    with pytest.raises(ArchError, match="out must be an integer, got 2.5"):
        pycnn.parse("network n(input = 3x8x8) {\n    stem = conv(10 / 4)\n}")


def test_in_index_and_stage_stride():
    text = """
    block blk(w, stride = 1) {
        conv(w + in + index, k=3, s=stride)
    }
    network n(input = 2x16x16) {
        stage s1 = 3 x blk(1) stride 2
    }
    """
    net = pycnn.parse(text)
    convs = [layer for _, layer in net.layers()]
    # b1: in 2, index 0 -> 3 channels, stride 2; b2: 1 + 3 + 1 = 5; b3: 1 + 5 + 2 = 8
    assert [c.out_shape for c in convs] == [(3, 8, 8), (5, 8, 8), (8, 8, 8)]
    assert [c.attrs["s"] for c in convs] == [(2, 2), (1, 1), (1, 1)]


def test_stage_stride_needs_a_stride_parameter():
    text = "block blk(w) { conv(w) }\nnetwork n(input = 2x16x16) {\n    stage s1 = 2 x blk(4) stride 2\n}"
    with pytest.raises(ArchError, match="block 'blk' has no parameter 'stride'"):
        pycnn.parse(text)


def test_concat_merge_and_names():
    text = """
    block mix(a, b) {
        branch left { conv(a, k=1) bn relu }
        branch right { conv(b, k=3) bn }
        merge concat
        relu
    }
    network n(input = 4x8x8) { body = mix(3, 5) }
    """
    net = pycnn.parse(text)
    assert net.out_shape == (8, 8, 8)
    names = list(layers(net))
    assert names == ["body.mix1.left.conv1", "body.mix1.left.bn1", "body.mix1.right.conv1", "body.mix1.right.bn1",
                     "body.mix1.relu1"]
    # the relu after a bn is its own IR layer without a module (named after the bn); the passes fuse it
    nodes = dict(net.nodes())
    act = nodes["body.mix1.left.bn1+relu"]
    assert act.op == "act" and act.attrs["kind"] == "relu" and not act.own_module
    assert not [n for n in nodes if n.startswith("body.mix1.right.bn1+")]


def test_conditional_shortcut_and_conditional_residual():
    text = """
    block res(w, stride = 1) {
        main { conv(w, k=3, s=stride) }
        shortcut when stride != 1 or in != w { conv(w, k=1, s=stride) }
        merge add
    }
    block maybe(w) {
        main { conv(w, k=1) }
        if in == w { shortcut {} merge add }
    }
    network n(input = 4x8x8) { body = res(4) res(8, stride=2) maybe(8) maybe(16) }
    """
    net = pycnn.parse(text)
    body = net.parts[0].children
    assert isinstance(body[0], ir.BranchBlock) and body[0].branches[1].children == []       # identity shortcut
    assert isinstance(body[1], ir.BranchBlock) and len(body[1].branches[1].children) == 1   # projection
    assert isinstance(body[2], ir.BranchBlock)                                               # residual
    assert isinstance(body[3], ir.Sequence)                                            # no residual
    assert net.out_shape == (16, 4, 4)


def test_if_else_and_repeat():
    text = """
    network n(input = 3x8x8, deep = false) {
        body = repeat 3 { conv(4) } if deep { conv(8) } else { conv(2) relu }
    }
    """
    names = list(layers(pycnn.parse(text)))
    assert names == ["body.conv1", "body.conv2", "body.conv3", "body.conv4", "body.relu1"]
    assert pycnn.parse(text, deep=True).out_shape == (8, 8, 8)


def test_local_block_shadows_library():
    text = "use std\nblock basic(w, stride = 1) { conv(w, k=1, s=stride) }\n" \
           "network n(input = 3x8x8) {\n    stage s1 = 2 x basic(4)\n}"
    assert len(list(pycnn.parse(text).layers())) == 2


def test_use_from_text_finds_the_std_library():
    text = "use std.regnet\nnetwork n(input = 8x8x8) {\n    body = xblock(8, group_width=4)\n}"
    assert pycnn.parse(text).out_shape == (8, 8, 8)
    with pytest.raises(ArchError, match="cannot find library 'nonexistent'"):
        pycnn.parse("use nonexistent\nnetwork n(input = 3x8x8) { }")


def test_bn_act_module_keeps_batchnorm_names():
    torch = pytest.importorskip("torch")
    model = pycnn.compile("network n(input = 3x8x8) {\n    stem = conv(4, k=3) bn relu conv(4) bn\n}")
    keys = [k for k in model.state_dict() if k.startswith("stem.bn1.")]
    assert keys == ["stem.bn1.weight", "stem.bn1.bias", "stem.bn1.running_mean", "stem.bn1.running_var",
                    "stem.bn1.num_batches_tracked"]
    assert type(model.stem.bn1) is torch.nn.BatchNorm2d  # a plain BatchNorm; its activation is the network's
    x = torch.randn(2, 3, 8, 8)
    for backend in ("fused", "reference"):
        relu_net = pycnn.compile("network n(input = 3x8x8) {\n    stem = conv(4, k=3) bn relu\n}", backend=backend)
        for train in (True, False):
            y = relu_net.train(train)(x)
            assert (y >= 0).all() and (y == 0).any()  # the relu after bn1 runs


def test_model_keeps_source_and_ir():
    text = "network n(input = 3x8x8) {\n    stem = conv(4)\n}\n"
    model = pycnn.compile(text)
    assert model.arch == text
    assert model.ir.total_params == 12
    assert pycnn.summary(model, show=False).total_params == 12


def test_summary_prints(capsys):
    s = pycnn.summary("network n(input = 3x8x8) {\n    stem = conv(4) bn relu\n}")
    out = capsys.readouterr().out
    assert "stem.conv1" in out and "bn+relu" in out and "total: 20 parameters" in out
    assert s.total_flops == 12 * 64


def test_the_language_never_imports_torch():
    # the package's __init__ may import torch (the kernels); the language modules themselves must not: load
    # them under a bare package module
    code = f"""
import sys, types
pkg = types.ModuleType("pycnn")
pkg.__path__ = [{os.path.join(ROOT, "pycnn")!r}]
sys.modules["pycnn"] = pkg
from pycnn.dsl.elaborate import elaborate
from pycnn.summary import summarize
net = elaborate({os.path.join(ROOT, "archs", "regnetx32.arch")!r}, "regnetx_32gf")
assert summarize(net).total_params == 107811560
elaborate({os.path.join(ROOT, "archs", "efficientnet.arch")!r}, "efficientnet_b3")
assert "torch" not in sys.modules, "torch imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_python_eval_in_the_language():
    import ast as pyast
    for name in ("evaluate.py", "elaborate.py", "parse.py", "generators.py"):
        tree = pyast.parse(open(os.path.join(ROOT, "pycnn", "dsl", name)).read())
        called = {node.func.id for node in pyast.walk(tree)
                  if isinstance(node, pyast.Call) and isinstance(node.func, pyast.Name)}
        assert not called & {"eval", "exec", "compile", "__import__"}, name


def test_summary_command(capsys):
    from pycnn.summary import main
    assert main(["archs/regnetx32.arch", "--set", "classes=7"]) == 0
    out = capsys.readouterr().out
    fc_row = next(line for line in out.splitlines() if line.startswith("head.fc1"))
    assert fc_row.split()[2] == "7" and "total: " in out
    assert main(["archs/regnetx32.arch", "--set", "clases=7"]) == 1
    assert "did you mean 'classes'" in capsys.readouterr().out


def test_chained_comparison_is_an_error():
    with pytest.raises(ArchError, match="comparisons cannot be chained"):
        pycnn.parse("network n(input = 3x8x8) {\n    let a = 1 < 2 < 3\n}")


def test_operator_precedence():
    text = "network n(input = 3x8x8) {\n    stem = conv(2 + 3 * 2 ** 2 - -1, k=1) conv(not 1 == 2 and 3 > 2 ? 5 : 6)\n}"
    outs = [layer.out_shape[0] for _, layer in pycnn.parse(text).layers()]
    assert outs == [2 + 3 * 2 ** 2 + 1, 5]


def test_every_primitive_lowers_and_runs():
    torch = pytest.importorskip("torch")
    text = """
    block gate(c) {
        branch a { conv(c, k=1) sigmoid }
        branch b { identity }
        merge mul
    }
    network all(input = 4x16x16, classes = 3) {
        a = conv(8, k=3, s=1, p=1, d=1, groups=2, bias=true) bn(eps=1e-3, momentum=0.01) relu6
            dwconv(k=5, s=2, multiplier=2) gn(4) hardswish ln gelu channel_shuffle(4)
            wsconv(16, k=3, gamma=1.5) tanh scale(0.5) se(4, act=silu, gate=sigmoid) gate(16)
            maxpool(3, s=1, p=1, ceil=true) avgpool(2, s=2, ceil=false, count_pad=false)
            adaptive_avgpool((2, 3)) global_maxpool global_avgpool gap
        head = flatten dropout(0.1) linear(classes, bias=false) silu
    }
    """
    net = pycnn.parse(text)
    model = pycnn.compile(text).eval()
    y = model(torch.randn(2, 4, 16, 16))
    assert tuple(y.shape[1:]) == net.out_shape == (3,)
    assert sum(p.numel() for p in model.parameters()) == net.total_params
    # every layer's module produces the IR's output shape
    x = torch.randn(1, 4, 16, 16)
    for child in model.a.children():
        x = child(x)
    assert tuple(x.shape[1:]) == net.parts[0].out_shape
