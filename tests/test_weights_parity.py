"""Numerical parity: a randomly initialized torchvision or timm model (BatchNorm statistics and affine
parameters randomized too), its weights imported into the pycnn model compiled from the .arch file, gives the
same outputs in eval mode (CPU, small inputs): within 1e-6 relative in float64, and in float32 within a
small multiple of PyTorch's own float32 rounding error (both measured against the float64 output)."""
import os
import warnings

import pytest

import pycnn

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
from pycnn import weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")

# (arch file, network, library, model name, input size)
CASES = [
    ("alexnet", "alexnet", "torchvision", "alexnet", 64),
    ("vgg", "vgg11_bn", "torchvision", "vgg11_bn", 32),
    ("googlenet", "googlenet", "torchvision", "googlenet", 32),
    ("inception_v3", "inception_v3", "torchvision", "inception_v3", 75),
    ("resnet", "resnet50", "torchvision", "resnet50", 32),
    ("resnext", "resnext50_32x4d", "torchvision", "resnext50_32x4d", 32),
    ("wide_resnet", "wide_resnet50_2", "torchvision", "wide_resnet50_2", 32),
    ("densenet", "densenet121", "torchvision", "densenet121", 32),
    ("mobilenet_v2", "mobilenet_v2", "torchvision", "mobilenet_v2", 32),
    ("efficientnet", "efficientnet_b0", "torchvision", "efficientnet_b0", 32),
    ("regnet", "regnet_x_400mf", "torchvision", "regnet_x_400mf", 32),
    ("regnet", "regnet_y_400mf", "torchvision", "regnet_y_400mf", 32),
    ("seresnet", "seresnext50_32x4d", "timm", "seresnext50_32x4d", 32),
    ("resnet_d", "resnet50d", "timm", "resnet50d", 32),
    ("nf_resnet50", "nf_resnet50", "timm", "nf_resnet50", 32),
    ("mobilenet_v3", "mobilenet_v3_large", "torchvision", "mobilenet_v3_large", 32),
    ("mobilenet_v3", "mobilenet_v3_small", "torchvision", "mobilenet_v3_small", 32),
    ("convnext", "convnext_tiny", "torchvision", "convnext_tiny", 32),
    # at 32x32 the calibrated random EfficientNetV2-S is ill-conditioned (PyTorch's float32 is 68% off float64)
    ("efficientnet_v2", "efficientnet_v2_s", "torchvision", "efficientnet_v2_s", 96),
    ("repvgg", "repvgg_a0", "timm", "repvgg_a0", 32),
    ("repvgg", "repvgg_b0", "timm", "repvgg_b0", 32),
    ("nfnet", "dm_nfnet_f0", "timm", "dm_nfnet_f0", 32),  # at reduced width (REDUCED_WIDTH)
    ("inception_v4", "inception_v4", "timm", "inception_v4", 75),
    ("inception_resnet_v2", "inception_resnet_v2", "timm", "inception_resnet_v2", 75),
    ("shufflenet_v2", "shufflenet_v2_x1_0", "torchvision", "shufflenet_v2_x1_0", 32),
    ("nasnet", "nasnetalarge", "timm", "nasnetalarge", 64),  # at reduced width (REDUCED_WIDTH)
]


# the largest networks are compared at a reduced width (the same structure; the full width's parameter count is
# checked in test_archs_params.py): name -> (the .arch network's overrides, changes to timm's model config)
REDUCED_WIDTH = {
    "dm_nfnet_f0": (dict(stem=32, w1=64, w2=128, w3=384, w4=384, group_width=32),
                    dict(stem_chs=32, channels=(64, 128, 384, 384), group_size=32, num_features=768)),
    # timm's NASNetALarge takes these as model arguments (the cells' widths are num_features / 24 / 4 .. 4x that)
    "nasnetalarge": (dict(stem_size=16, num_features=192), dict(stem_size=16, num_features=192)),
}


def reference_model(library, name, size, full_width=False):
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    if library == "timm" and name == "nasnetalarge":  # reduced by timm's own model arguments
        model = timm.create_model(name, **({} if full_width else REDUCED_WIDTH[name][1]))
    elif library == "timm" and name in REDUCED_WIDTH:
        import dataclasses
        from timm.models import nfnet
        model = nfnet.NormFreeNet(dataclasses.replace(nfnet.model_cfgs[name], **REDUCED_WIDTH[name][1]))
    elif library == "timm":
        model = timm.create_model(name)
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        model = torchvision.models.get_model(name, **kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():  # non-trivial affine parameters (timm zero-initializes some)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.momentum = None  # running statistics: the average over the calibration batch
            if hasattr(m, "gain") and isinstance(m.gain, torch.nn.Parameter):
                m.gain.copy_(torch.rand(m.gain.shape, generator=g) + 0.5)
            # learnable scales initialized near zero (ConvNeXt's layer scale 1e-6, NFNet's skipinit gain 0)
            # would hide the branches they scale from the comparison
            for attr in ("layer_scale", "skipinit_gain"):
                if isinstance(getattr(m, attr, None), torch.nn.Parameter):
                    getattr(m, attr).copy_(torch.rand(getattr(m, attr).shape, generator=g) + 0.5)
        # BatchNorm statistics that match the activations, so the signal survives to the output in eval mode.
        # Eight images: with two, a 1x1 stage (MobileNetV2's last at 32x32) took each channel's variance from two
        # values, and the network amplified float32 rounding ~10x more on some paths than on others (pycnn's
        # folded-BN convolutions failed the bound below on one thread; they pass with either kernel choice now).
        model.train()
        model(torch.randn(8, 3, size, size, generator=g))
    return model.eval()


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("arch,network,library,name,size", CASES,
                         ids=[getattr(c, "values", c)[3] for c in CASES])
def test_parity(arch, network, library, name, size):
    ref = reference_model(library, name, size)
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", arch + ".arch"), network,
                              **REDUCED_WIDTH.get(name, ({}, {}))[0])
    if library == "timm":
        weights.from_timm(model, ref)
    else:
        weights.from_torchvision(model, ref)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(x)
        got = model(x)
        # float64 is the exact reference: random networks with BatchNorm statistics calibrated on a few
        # images are still ill-conditioned, so two correct float32 implementations can differ by more than
        # 1e-4 (PyTorch's own float32 output is up to ~9e-4 from the float64 one for mobilenet_v2).
        truth = ref.double()(x.double())
        got64 = model.double()(x.double())
        ref.float()
        model.float()
    assert got.shape == expected.shape
    assert (expected[0] - expected[1]).abs().max() > 1e-3 * expected.abs().max()  # the input reaches the output
    # Same function (structure and imported weights): float64 leaves rounding out, so the bound is tight.
    assert relative_error(got64, truth) < 1e-6
    # float32: both implementations round differently and the network amplifies it by its condition
    # number, so pycnn's error must be of the order of PyTorch's own (measured worst ratio: 2.6x).
    assert relative_error(got, truth) <= 4 * relative_error(expected.double(), truth) + 1e-5
    # the test can fail: a perturbed weight changes the output
    with torch.no_grad():
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        w = first_conv.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(4)) * w.std() * 0.1)
        assert relative_error(model(x), expected) > 1e-4
        assert relative_error(model.double()(x.double()), truth) > 1e-4


@pytest.mark.slow
def test_nasnetalarge_at_full_width():
    """NASNet-A Large as shipped (88,753,150 parameters; test_parity checks it at reduced width): float64 parity
    after importing timm's weights, on a 64x64 input (~30 s on one thread)."""
    ref = reference_model("timm", "nasnetalarge", 64, full_width=True)
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", "nasnet.arch"), "nasnetalarge")
    weights.from_timm(model, ref)
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = ref(x), model(x)
        truth, got64 = ref.double()(x.double()), model.double()(x.double())
    assert (expected[0] - expected[1]).abs().max() > 1e-3 * expected.abs().max()
    assert relative_error(got64, truth) < 1e-6
    assert relative_error(got, truth) <= 4 * relative_error(expected.double(), truth) + 1e-5


def test_export_roundtrip_to_torchvision():
    torch.manual_seed(3)
    model = pycnn.compile(os.path.join(ROOT, "archs", "regnet.arch"), "regnet_y_400mf").eval()
    ref = torchvision.models.regnet_y_400mf()
    weights.to_torchvision(model, ref)
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(model(x), ref(x)) < 1e-5
    sd = weights.to_timm(model, ref.state_dict())
    assert list(sd) == list(ref.state_dict())


def test_mismatch_is_reported_by_name_and_shape():
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", "resnet.arch"), "resnet34")
        ref = torchvision.models.resnet18()
    with pytest.raises(weights.WeightMismatchError) as info:
        weights.from_torchvision(model, ref)
    text = str(info.value)
    # resnet18 has 2 blocks in its first stage, resnet34 3: the third is paired with layer2's first
    assert "pycnn 's1.b3.conv1.weight' (64, 64, 3, 3) vs torchvision 'layer2.0.conv1.weight' (128, 64, 3, 3)" in text
    assert "pycnn 's1.b3.bn1.weight' (64,) vs torchvision 'layer2.0.bn1.weight' (128,)" in text


def test_mismatch_class_count():
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", "resnet.arch"), "resnet18", classes=10)
        ref = torchvision.models.resnet18()
    with pytest.raises(weights.WeightMismatchError, match=r"pycnn 'head.fc1.weight' \(10, 512\) vs torchvision "
                                                          r"'fc.weight' \(1000, 512\)"):
        weights.from_torchvision(model, ref)
