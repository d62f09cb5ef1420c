"""The IR passes (pycnn.passes), each on its own: what they fuse, what they leave, that names survive."""
import os

import pytest

import pycnn
from pycnn import ir, passes
from pycnn.passes import fused_nodes
from pycnn.passes.conv_bn_act import conv_kind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = """
network tiny(input=8x12x12, classes=5) {
    stem = conv(16, k=3) bn relu
    body = conv(16, k=3, groups=16) bn relu6
           conv(16, k=5, s=2, groups=16) bn silu
           conv(32, k=3, groups=4) bn relu
           conv(32, k=3, groups=2, d=2, p=2) bn
           conv(32, k=3, groups=32, s=3) bn
           se(8, act=silu)
           bn relu
           conv(32, k=1, bias=true) relu
    head = gap flatten linear(classes)
}
"""


def describe(network):
    return [(f.kind, [layer.name for layer in f.layers], f.attrs.get("conv")) for f in fused_nodes(network)]


def test_conv_kinds_follow_what_the_kernels_support():
    net = pycnn.parse(NET)
    convs = [layer for _, layer in net.layers() if layer.op == "conv"]
    assert [conv_kind(c) for c in convs] == [
        "dense",      # groups 1
        "depthwise",  # k3
        "depthwise",  # k5 s2
        "grouped",    # 4 groups of 4, k3
        "dense",      # dilation 2: pycnn.gconv has none
        "grouped",    # depthwise with stride 3: pycnn.dwconv does 1 and 2, pycnn.gconv any stride
        "dense",      # 1x1 with bias, no bn after it
    ]


def test_every_pass_on_a_small_network():
    plan = passes.run(pycnn.parse(NET))
    assert describe(plan) == [
        ("conv_bn_act", ["conv1", "bn1", "bn1+relu"], "dense"),  # the elaborator's act layers: fused here
        ("conv_bn_act", ["conv1", "bn1", "bn1+relu6"], "depthwise"),
        ("conv_bn_act", ["conv2", "bn2", "bn2+silu"], "depthwise"),
        ("conv_bn_act", ["conv3", "bn3", "bn3+relu"], "grouped"),
        ("conv_bn_act", ["conv4", "bn4"], "dense"),
        ("conv_bn_act", ["conv5", "bn5"], "grouped"),
        ("se", ["se1"], None),
        ("bn_act", ["bn6", "bn6+relu"], None),
    ]
    acts = [f.attrs["act"] for f in fused_nodes(plan)]
    assert acts == ["relu", "relu6", "silu", "relu", None, None, "silu", "relu"]


@pytest.mark.parametrize("path,network", [("efficientnet.arch", "efficientnet_b0"),
                                          ("efficientnet_v2.arch", "efficientnet_v2_s")])  # drop path after blocks
def test_passes_keep_every_layer_and_name_and_leave_the_input_alone(path, network):
    net = pycnn.parse(os.path.join(ROOT, "archs", path), network)
    before = [(name, layer.op) for name, layer in net.layers()]
    plan = passes.run(net)
    assert [(name, layer.op) for name, layer in plan.layers()] == before
    assert not fused_nodes(net)  # run() works on a copy
    assert plan.total_params == net.total_params and plan.total_flops == net.total_flops


@pytest.mark.parametrize("disabled,kinds", [
    ((), {"conv_bn_act", "mbconv"}),  # every block with its SE is an mbconv; the stem and head stay conv_bn_act
    (("mbconv",), {"conv_bn_act", "se"}),
    (("conv_bn_act",), {"bn_act", "se"}),
    (("conv_bn_act", "bn_act"), {"se"}),
    (("conv_bn_act", "bn_act", "se", "residual"), set()),
])
def test_each_pass_can_be_turned_off_by_name(disabled, kinds):
    net = pycnn.parse(os.path.join(ROOT, "archs", "efficientnet.arch"), "efficientnet_b0")
    plan = passes.run(net, disable=disabled)
    assert {f.kind for f in fused_nodes(plan)} == kinds
    residual = any(b.residual_into is not None for b in passes.walk.blocks(plan))
    assert residual == ("residual" not in disabled and bool(kinds - {"se"}))


def test_unknown_pass_names_are_refused():
    with pytest.raises(ValueError, match="unknown pass.*conv_bn; the passes are conv_bn_act"):
        passes.run(pycnn.parse(NET), disable=["conv_bn"])


def first_block(path, network, disable=()):
    plan = passes.run(pycnn.parse(os.path.join(ROOT, "archs", path), network), disable)
    return next(node for _, node in plan.nodes() if isinstance(node, ir.BranchBlock))


def test_residual_epilogues():
    block = first_block("regnetx32.arch", "regnetx32")  # shortcut written first: the main branch is index 1
    last = block.branches[1].children[-1]
    assert block.residual_into == 1 and last.kind == "conv_bn_act" and last.attrs == {
        "conv": "dense", "act": "relu", "residual": True}
    assert [layer.op for layer in last.layers] == ["conv", "bn", "act"] and block.post == []
    block = first_block("resnet.arch", "resnet50")
    assert block.residual_into == 0 and block.branches[0].children[-1].attrs["act"] == "relu"
    block = first_block("efficientnet.arch", "efficientnet_b0", disable=("mbconv",))  # MBConv: no act after the add
    last = block.branches[block.residual_into].children[-1]
    assert last.attrs == {"conv": "dense", "act": None, "residual": True} and len(last.layers) == 2
    block = first_block("efficientnet.arch", "efficientnet_b0")  # ... and with it the whole block is one node
    last = block.branches[block.residual_into].children[-1]
    assert last.kind == "mbconv" and last.attrs["residual"] and last.attrs["se"]
    assert first_block("nf_resnet50.arch", "nf_resnet50").residual_into is None   # ends with scale
    assert first_block("densenet.arch", "densenet121").residual_into is None      # concat
    assert first_block("resnet.arch", "resnet50", disable=("bn_act", "conv_bn_act")).residual_into is None


def test_se_resnet_adds_the_residual_in_the_se_op():
    block = first_block("seresnet.arch", "seresnet50")
    last = block.branches[block.residual_into].children[-1]
    assert last.kind == "se" and last.attrs["residual"] and last.attrs["post_act"] == "relu"
