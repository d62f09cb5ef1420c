"""Parameter counts of the arch files equal torchvision's and timm's models, counted live (on the meta device,
nothing allocated), and the figures of docs/design.md section 8."""
import functools
import os
import warnings

import pytest

import pycnn

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (arch file, network, library, model name, docs/design.md section 8 figure or None)
CASES = [
    ("alexnet", "alexnet", "torchvision", "alexnet", 61_100_840),
    ("vgg", "vgg11", "torchvision", "vgg11", 132_863_336),
    ("vgg", "vgg16", "torchvision", "vgg16", 138_357_544),
    ("vgg", "vgg19", "torchvision", "vgg19", 143_667_240),
    ("vgg", "vgg11_bn", "torchvision", "vgg11_bn", 132_868_840),
    ("vgg", "vgg16_bn", "torchvision", "vgg16_bn", None),
    ("vgg", "vgg19_bn", "torchvision", "vgg19_bn", None),
    ("googlenet", "googlenet", "torchvision", "googlenet", 6_624_904),
    ("inception_v3", "inception_v3", "torchvision", "inception_v3", 23_834_568),
    ("resnet", "resnet18", "torchvision", "resnet18", 11_689_512),
    ("resnet", "resnet34", "torchvision", "resnet34", 21_797_672),
    ("resnet", "resnet50", "torchvision", "resnet50", 25_557_032),
    ("resnet", "resnet101", "torchvision", "resnet101", 44_549_160),
    ("resnet", "resnet152", "torchvision", "resnet152", 60_192_808),
    ("resnext", "resnext50_32x4d", "torchvision", "resnext50_32x4d", 25_028_904),
    ("resnext", "resnext101_32x8d", "torchvision", "resnext101_32x8d", None),
    ("wide_resnet", "wide_resnet50_2", "torchvision", "wide_resnet50_2", 68_883_240),
    ("densenet", "densenet121", "torchvision", "densenet121", 7_978_856),
    ("mobilenet_v2", "mobilenet_v2", "torchvision", "mobilenet_v2", 3_504_872),
    ("efficientnet", "efficientnet_b0", "torchvision", "efficientnet_b0", 5_288_548),
    ("efficientnet", "efficientnet_b1", "torchvision", "efficientnet_b1", None),
    ("efficientnet", "efficientnet_b2", "torchvision", "efficientnet_b2", None),
    ("efficientnet", "efficientnet_b3", "torchvision", "efficientnet_b3", 12_233_232),
    ("efficientnet", "efficientnet_b4", "torchvision", "efficientnet_b4", None),
    ("efficientnet", "efficientnet_b5", "torchvision", "efficientnet_b5", None),
    ("efficientnet", "efficientnet_b6", "torchvision", "efficientnet_b6", None),
    ("efficientnet", "efficientnet_b7", "torchvision", "efficientnet_b7", None),
    ("regnetx32", "regnetx_32gf", "torchvision", "regnet_x_32gf", 107_811_560),
    ("seresnet", "seresnet50", "timm", "seresnet50", 28_088_024),
    ("seresnet", "seresnext50_32x4d", "timm", "seresnext50_32x4d", 27_559_896),
    ("resnet_d", "resnet50d", "timm", "resnet50d", 25_576_264),
    ("nf_resnet50", "nf_resnet50", "timm", "nf_resnet50", 25_557_032),
    ("mobilenet_v1", "mobilenet_v1", "timm", "mobilenetv1_100", 4_231_976),
    ("mobilenet_v3", "mobilenet_v3_large", "torchvision", "mobilenet_v3_large", 5_483_032),
    ("mobilenet_v3", "mobilenet_v3_small", "torchvision", "mobilenet_v3_small", 2_542_856),
    ("convnext", "convnext_tiny", "torchvision", "convnext_tiny", 28_589_128),
    ("efficientnet_v2", "efficientnet_v2_s", "torchvision", "efficientnet_v2_s", 21_458_488),
    ("repvgg", "repvgg_a0", "timm", "repvgg_a0", 9_108_968),
    ("repvgg", "repvgg_b0", "timm", "repvgg_b0", 15_817_960),
    ("nfnet", "dm_nfnet_f0", "timm", "dm_nfnet_f0", 71_489_284),
    ("inception_v4", "inception_v4", "timm", "inception_v4", 42_679_816),
    ("inception_resnet_v2", "inception_resnet_v2", "timm", "inception_resnet_v2", 55_843_464),
    ("nasnet", "nasnetalarge", "timm", "nasnetalarge", 88_753_150),
    ("shufflenet_v2", "shufflenet_v2_x0_5", "torchvision", "shufflenet_v2_x0_5", None),
    ("shufflenet_v2", "shufflenet_v2_x1_0", "torchvision", "shufflenet_v2_x1_0", None),
    ("shufflenet_v2", "shufflenet_v2_x2_0", "torchvision", "shufflenet_v2_x2_0", None),
]
REFERENCE_TABLE = {"regnet_x_400mf": 5_495_976, "regnet_x_32gf": 107_811_560, "regnet_y_400mf": 4_344_144,
                   "regnet_y_32gf": 145_046_770}
for _size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf"):
    for _x in "xy":
        _name = f"regnet_{_x}_{_size}"
        CASES.append(("regnet", _name, "torchvision", _name, REFERENCE_TABLE.get(_name)))
_PYCLS = ("200mf", "002"), ("400mf", "004"), ("600mf", "006"), ("800mf", "008"), ("1_6gf", "016"), \
    ("3_2gf", "032"), ("4_0gf", "040"), ("6_4gf", "064"), ("8gf", "080"), ("12gf", "120"), ("16gf", "160"), \
    ("32gf", "320")
for _size, _timm in _PYCLS:
    for _x in "xy":
        CASES.append(("regnet", f"regnet{_x}_{_size}", "timm", f"regnet{_x}_{_timm}", None))


@functools.lru_cache(maxsize=None)
def library_param_count(library: str, name: str) -> int:
    return sum(p.numel() for p in library_model(library, name).parameters())


@functools.lru_cache(maxsize=None)
def library_model(library: str, name: str):
    warnings.filterwarnings("ignore")
    if library == "timm":
        with torch.device("meta"):
            model = timm.create_model(name)
    elif name.startswith("regnet"):
        # torchvision computes RegNet widths with tensor ops that cannot run on the meta device: compute them on
        # the CPU, build the modules on meta
        import torchvision.models.regnet as tv_regnet
        original = tv_regnet.RegNet

        def on_meta(*args, **kwargs):
            with torch.device("meta"):
                return original(*args, **kwargs)

        tv_regnet.RegNet = on_meta
        try:
            model = torchvision.models.get_model(name)
        finally:
            tv_regnet.RegNet = original
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        with torch.device("meta"):
            model = torchvision.models.get_model(name, **kwargs)
    return model


@pytest.mark.parametrize("arch,network,library,name,reference", CASES, ids=[c[1] + "-" + c[2] for c in CASES])
def test_param_count(arch, network, library, name, reference):
    count = pycnn.parse(os.path.join(ROOT, "archs", arch + ".arch"), network).total_params
    assert count == library_param_count(library, name)
    if reference is not None:
        assert count == reference


@pytest.mark.parametrize("arch,network,library,name,reference", CASES, ids=[c[1] + "-" + c[2] for c in CASES])
def test_weights_pair_by_structure(arch, network, library, name, reference):
    """Weight import works for every family the libraries have: all layers pair up by name and shape
    (checked on the meta device; test_weights_parity.py checks the numbers for a selection)."""
    from pycnn import weights
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", arch + ".arch"), network, init=False)
    reference = library_model(library, name)
    sd = weights.transfer_state_dict(reference, model)
    assert list(sd) == list(model.state_dict())
    exported = weights.transfer_state_dict(model, reference)  # and back, with the library's names
    assert list(exported) == list(reference.state_dict())


def test_pycls_and_torchvision_rounding_differ_for_regnetx_400mf():
    pycls = pycnn.parse(os.path.join(ROOT, "archs", "regnet.arch"), "regnetx_400mf")
    tv = pycnn.parse(os.path.join(ROOT, "archs", "regnet.arch"), "regnet_x_400mf")
    assert pycls.parts[-2].children[0].out_shape[0] == 384 and tv.parts[-2].children[0].out_shape[0] == 400
