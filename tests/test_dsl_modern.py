"""The language features of modern CNNs (issue 18): hardsigmoid, broadcasting `merge mul`, layer scale, learnable
gains, drop-path with the block's global index, linear layers over channels, channel slices, TensorFlow's SAME
padding, blocks and activations passed as parameters; and re-parameterization (pycnn.reparameterize)."""
import pytest

import pycnn
from pycnn import ArchError

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.usefixtures("one_thread")


def layers(net):
    return {name: layer for name, layer in net.layers()}


def test_hardsigmoid_layer_and_se_gate():
    text = """network n(input = 8x6x6) {
        body = conv(8, k=1) hardsigmoid se(4, act=relu, gate=hardsigmoid)
    }"""
    torch.manual_seed(0)  # some initializations leave every SE unit at 0, where the two gates agree (0.5)
    model = pycnn.compile(text).eval()
    assert isinstance(model.body.hardsigmoid1, torch.nn.Hardsigmoid)
    x = torch.randn(2, 8, 6, 6)
    se = model.body.se1
    y = F.hardsigmoid(model.body.conv1(x))
    gate = F.hardsigmoid(se.fc2(F.relu(se.fc1(y.mean((2, 3), keepdim=True)))))
    with torch.no_grad():
        torch.testing.assert_close(model(x), y * gate)
        # the sigmoid gate gives another result: the test can tell them apart
        assert not torch.allclose(model(x), y * torch.sigmoid(se.fc2(F.relu(se.fc1(y.mean((2, 3), keepdim=True))))))


GATE = """block gate(c) {
    main {}
    branch attention { avgpool conv(c, k=1, bias=true) sigmoid }
    merge mul
}
network n(input = 8x5x5) { body = gate(WIDTH) }
"""


def test_merge_mul_broadcasts_a_gate():
    net = pycnn.parse(GATE.replace("WIDTH", "8"))
    assert net.out_shape == (8, 5, 5)
    model = pycnn.compile(GATE.replace("WIDTH", "8")).eval()
    x = torch.randn(2, 8, 5, 5)
    conv = model.body.gate1.attention.conv1
    with torch.no_grad():
        torch.testing.assert_close(model(x), x * torch.sigmoid(conv(x.mean((2, 3), keepdim=True))))


def test_merge_mul_refuses_what_does_not_broadcast():
    with pytest.raises(ArchError, match=r"merge mul: cannot mul branches whose sizes neither match nor broadcast"):
        pycnn.parse(GATE.replace("WIDTH", "4"))
    with pytest.raises(ArchError, match="cannot add branches of different shapes"):  # add does not broadcast
        pycnn.parse(GATE.replace("WIDTH", "8").replace("merge mul", "merge add"))


def test_layer_scale_and_gain_are_learnable_with_reference_names():
    text = """network n(input = 6x4x4) {
        body = conv(6, k=1) layer_scale(0.5) gain(0.25)
    }"""
    net = pycnn.parse(text)
    assert net.total_params == 36 + 6 + 1
    model = pycnn.compile(text)
    sd = model.state_dict()
    assert tuple(sd["body.ls1.layer_scale"].shape) == (6, 1, 1) and torch.all(sd["body.ls1.layer_scale"] == 0.5)
    assert tuple(sd["body.gain1.skipinit_gain"].shape) == () and sd["body.gain1.skipinit_gain"].item() == 0.25
    x = torch.randn(2, 6, 4, 4)
    y = model(x)
    y.sum().backward()
    assert model.body.ls1.layer_scale.grad is not None and model.body.gain1.skipinit_gain.grad is not None
    torch.testing.assert_close(y, model.body.conv1(x) * 0.5 * 0.25)


DROP = """block res(w, drop=0.4) {
    main { conv(w, k=3) drop_path(drop * block_index / (num_blocks - 1)) }
    shortcut {}
    merge add
}
block wrap(w) { res(w) }
network n(input = 4x4x4, classes = 3) {
    stem = res(4)
    stage s1 = 2 x res(4)
    stage s2 = 3 x wrap(4)
    head = res(4)
}
"""


def test_block_index_and_num_blocks_give_drop_path_rates():
    rates = {name: layer.attrs["p"] for name, layer in pycnn.parse(DROP).layers() if layer.op == "drop_path"}
    # 5 stage blocks: block_index 0..4; a block in a part has the count of stage blocks before it; a block
    # inside a stage block has the stage block's index
    assert rates == pytest.approx({"stem.res1.drop_path1": 0.0, "s1.b1.drop_path1": 0.0, "s1.b2.drop_path1": 0.1,
                                   "s2.b1.res1.drop_path1": 0.2, "s2.b2.res1.drop_path1": 0.3,
                                   "s2.b3.res1.drop_path1": 0.4, "head.res1.drop_path1": 0.5})


def test_drop_path_in_training_drops_whole_samples():
    model = pycnn.compile("network n(input = 3x4x4) { body = drop_path(0.5) }")
    x = torch.ones(400, 3, 4, 4)
    torch.manual_seed(0)
    y = model.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # dropped or scaled by 1 / (1 - p)
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # whole samples
    assert 120 < int((per_sample[:, 0] == 0).sum()) < 280
    assert torch.equal(model.eval()(x), x)


def test_channel_linear_has_linear_parameters():
    text = "network n(input = 6x3x5) { body = channel_linear(10) gelu channel_linear(6, bias=false) }"
    net = pycnn.parse(text)
    assert net.total_params == 6 * 10 + 10 + 10 * 6
    assert layers(net)["body.fc1"].flops == (6 * 10 + 10) * 15
    model = pycnn.compile(text)
    assert tuple(model.body.fc1.weight.shape) == (10, 6) and model.body.fc2.bias is None
    x = torch.randn(2, 6, 3, 5)
    expected = F.linear(F.gelu(F.linear(x.permute(0, 2, 3, 1), model.body.fc1.weight, model.body.fc1.bias)),
                        model.body.fc2.weight).permute(0, 3, 1, 2)
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ArchError, match="needs an image input"):
        pycnn.parse("network n(input = 6x3x5) { body = flatten channel_linear(10) }")


def test_slice_selects_channels():
    text = """block split(w) {
        branch a { slice(0, 2) }
        branch b { slice(2, in) conv(w, k=1) }
        merge concat
    }
    network n(input = 6x3x3) { body = split(3) }"""
    assert pycnn.parse(text).out_shape == (5, 3, 3)
    model = pycnn.compile(text)
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(model(x), torch.cat([x[:, :2], model.body.split1.b.conv1(x[:, 2:])], 1))
    with pytest.raises(ArchError, match=r"slice\(2, 7\) reaches beyond the 6 channels"):
        pycnn.parse("network n(input = 6x3x3) { body = slice(2, 7) }")
    with pytest.raises(ArchError, match="selects no channel"):
        pycnn.parse("network n(input = 6x3x3) { body = slice(3, 3) }")


@pytest.mark.parametrize("size,k,s", [(9, 3, 2), (8, 3, 2), (7, 4, 2), (10, 5, 3), (6, 3, 1)])
def test_same_padding_is_tensorflows(size, k, s):
    timm = pytest.importorskip("timm")
    text = f"network n(input = 3x{size}x{size}) {{ body = conv(4, k={k}, s={s}, p=same, bias=true) }}"
    out = -(-size // s)
    assert pycnn.parse(text).out_shape == (4, out, out)
    model = pycnn.compile(text)
    ref = timm.layers.create_conv2d(3, 4, k, stride=s, padding="same", bias=True)
    ref.load_state_dict(model.body.conv1.state_dict())
    for n in (size, size + 1):  # computed from the actual input size
        x = torch.randn(2, 3, n, n)
        torch.testing.assert_close(model(x), ref(x))
    # and asymmetric where it has to be: not the symmetric default padding
    if (k - s) % 2 == 1 and size % s == 0:
        sym = pycnn.compile(text.replace("p=same", f"p={(k - 1) // 2}"))
        sym.load_state_dict(model.state_dict())
        x = torch.randn(2, 3, size, size)
        assert sym(x).shape != model(x).shape or not torch.allclose(sym(x), model(x))


def test_same_padding_for_weight_standardized_convs_and_bad_values():
    text = "network n(input = 3x8x8) { body = wsconv(4, k=3, s=2, p=same) bn relu }"
    assert pycnn.parse(text).out_shape == (4, 4, 4)
    model = pycnn.compile(text).eval()
    x = torch.randn(2, 3, 8, 8)
    conv = model.body.conv1
    assert model(x).shape == (2, 4, 4, 4)
    conv_same = pycnn.compile(text.replace("wsconv", "conv"))  # p=same convs are left out of the fused ops
    assert pycnn.compile(text.replace("wsconv", "conv")).eval()(x).shape == (2, 4, 4, 4)
    from pycnn.runtime import FusedStep
    assert conv.same and not any("conv1" in s.names for s in conv_same.body.steps if isinstance(s, FusedStep))
    with pytest.raises(ArchError, match="p must be an integer >= 0, a pair of them, or same"):
        pycnn.parse('network n(input = 3x8x8) { body = conv(4, k=3, p="valid") }')
    with pytest.raises(ArchError, match="p must be an integer >= 0 or a pair"):
        pycnn.parse("network n(input = 3x8x8) { body = maxpool(3, p=-1) }")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,k,s", [(9, 3, 2), (8, 3, 2), (8, 2, 2), (7, 3, 1), (6, 2, 1)])
def test_same_padding_of_pools_is_timms(kind, size, k, s):
    timm = pytest.importorskip("timm")
    extra = ", count_pad=false" if kind == "avg" else ""
    text = f"network n(input = 3x{size}x{size}) {{ body = {kind}pool({k}, s={s}, p=same{extra}) }}"
    out = -(-size // s)
    assert pycnn.parse(text).out_shape == (3, out, out)
    model = pycnn.compile(text)
    kwargs = dict(count_include_pad=False) if kind == "avg" else {}
    ref = timm.layers.create_pool2d(kind, k, s, padding="same", **kwargs)
    for n in (size, size + 1):
        x = torch.randn(2, 3, n, n)
        torch.testing.assert_close(model(x), ref(x))


TEMPLATE = """block unit(w, act=relu) { conv(w, k=3) bn act }
block other(w, act=relu) { conv(w, k=1) act }
block stack(w, body=unit, act=relu) { body(w, act=act) body(w, act=act) }
network n(input = 3x8x8) {
    stem = stack(8, body=BODY, act=ACT)
    stage s1 = 2 x stack(8)
}
"""


def test_blocks_and_activations_as_parameters():
    net = pycnn.parse(TEMPLATE.replace("BODY", "other").replace("ACT", "hardswish"))
    names = layers(net)
    assert names["stem.stack1.other1.conv1"].attrs["k"] == (1, 1)
    assert names["stem.stack1.other2.hardswish1"].attrs["kind"] == "hardswish"
    net = pycnn.parse(TEMPLATE.replace("BODY", "unit").replace("ACT", "none"))
    assert [n for n in layers(net) if n.startswith("stem.")] == [
        "stem.stack1.unit1.conv1", "stem.stack1.unit1.bn1", "stem.stack1.unit2.conv1", "stem.stack1.unit2.bn1"]
    act = dict(net.nodes())["s1.b1.unit1.bn1+relu"]  # the default act: a layer run with the bn, no module
    assert act.attrs["kind"] == "relu" and not act.own_module
    with pytest.raises(ArchError, match="unknown layer or block 'nothere'"):
        pycnn.parse(TEMPLATE.replace("BODY", "unit").replace("ACT", "relu").replace("body(w, act=act) body",
                                                                                       "nothere(w) body"))


def test_block_parameter_as_a_stage_block():
    text = """block unit(w, stride=1) { conv(w, k=3, s=stride) bn relu }
    network n(input = 3x16x16, kind = unit) {
        stage s1 = 2 x kind(8) stride 2
    }"""
    assert pycnn.parse(text).out_shape == (8, 8, 8)


REP = """block rep(w, stride=1) {
    if stride == 1 and in == w { branch identity { bn } }
    branch conv_kxk { conv(w, k=3, s=stride) bn }
    branch conv_1x1 { conv(w, k=1, s=stride) bn }
    merge add relu
}
block plain(w) { conv(w, k=3) bn relu }
network n(input = 3x16x16, classes = 5) {
    stem = rep(8, stride=2)
    stage s1 = 2 x rep(8)
    stage s2 = 2 x rep(16) stride 2
    mid = plain(16)
    head = avgpool flatten linear(classes)
}
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reparameterize_gives_one_conv_per_block(dtype):
    torch.manual_seed(0)
    model = pycnn.compile(REP).to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.train()(torch.randn(8, 3, 16, 16, dtype=dtype))  # non-trivial running statistics
    model.eval()
    deploy = pycnn.reparameterize(model)
    assert not deploy.training and model.s1.b1.identity is not None  # the training form is left as it is
    blocks = ["stem.rep1", "s1.b1", "s1.b2", "s2.b1", "s2.b2"]
    for name in blocks:
        convs = [m for m in deploy.get_submodule(name).modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].bias is not None
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.get_submodule(name).modules())
    assert isinstance(deploy.mid.plain1.bn1, torch.nn.BatchNorm2d)  # not a sum of branches: kept
    x = torch.randn(4, 3, 16, 16, dtype=dtype)
    with torch.no_grad():
        expected, got = model(x), deploy(x)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert ((got - expected).abs().max() / expected.abs().max()).item() < tol
    # the test can fail: a changed branch weight in the training form changes its output
    with torch.no_grad():
        model.s1.b1.conv_1x1.conv1.weight.mul_(1.5)
        assert ((model(x) - got).abs().max() / expected.abs().max()).item() > 1e-4


def test_reparameterize_needs_such_blocks():
    model = pycnn.compile("network n(input = 3x8x8) { body = conv(4, k=3) bn relu }")
    with pytest.raises(ValueError, match="no block of summed"):
        pycnn.reparameterize(model)


def test_repvgg_a0_deploy_form_matches_timms():
    """archs/repvgg.arch's RepVGG-A0 with timm's weights, re-parameterized: one 3x3 conv per block, the same
    outputs as the training form in eval (float32 noise) and as timm's own re-parameterized model."""
    import os
    timm = pytest.importorskip("timm")
    from timm.utils.model import reparameterize_model
    from pycnn import weights
    torch.manual_seed(0)
    ref = timm.create_model("repvgg_a0", num_classes=10)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.momentum = None
        ref.train()(torch.randn(4, 3, 32, 32))
    ref.eval()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = pycnn.compile(os.path.join(root, "archs", "repvgg.arch"), "repvgg_a0", classes=10)
    weights.from_timm(model, ref)
    model.eval()
    deploy = pycnn.reparameterize(model)
    convs = {name.rsplit(".", 1)[0] for name, m in deploy.named_modules() if isinstance(m, torch.nn.Conv2d)}
    blocks = {name for name, m in model.named_modules() if type(m).__name__ == "Block"}
    assert len(blocks) == 1 + 2 + 4 + 14 + 1 and convs == {f"{b}.reparam_conv".rsplit(".", 1)[0] for b in blocks}
    assert all(deploy.get_submodule(f"{b}.reparam_conv").kernel_size == (3, 3) for b in blocks)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        trained, deployed, timm_deployed = model(x), deploy(x), reparameterize_model(ref)(x)
    scale = trained.abs().max()
    assert ((deployed - trained).abs().max() / scale).item() < 2e-5  # measured 2.5e-6
    assert ((deployed - timm_deployed).abs().max() / scale).item() < 2e-5


@pytest.mark.parametrize("arch,network,overrides", [
    ("convnext", "convnext_tiny", dict(width=8)),
    ("nfnet", "dm_nfnet_f0", dict(stem=16, w1=16, w2=32, w3=48, w4=48, group_width=8, drop_path=0.2)),
])
def test_modern_networks_train(arch, network, overrides):
    """A training step of narrowed ConvNeXt and NFNet (drop-path active): every parameter gets a gradient,
    the learnable scales included."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torch.manual_seed(0)
    model = pycnn.compile(os.path.join(root, "archs", arch + ".arch"), network, classes=10, input=(3, 32, 32),
                          kernels="torch", **overrides).train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    scales = [p for n, p in model.named_parameters() if n.endswith(("layer_scale", "skipinit_gain"))]
    assert scales and all(p.grad.abs().sum() > 0 for p in scales)
