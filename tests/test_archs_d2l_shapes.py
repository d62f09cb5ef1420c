"""The layer shapes printed in the course material (docs/design.md section 8) hold part by part, in the IR and in
the built module (run on the meta device)."""
import os

import pytest

import pycnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def S(text):
    return tuple(int(d) for d in str(text).split("x"))


TABLES = {
    ("lenet", "lenet"): "6x28x28 6x14x14 16x10x10 16x5x5 400 120 84 10",
    ("alexnet", "alexnet_d2l"): "96x54x54 96x26x26 256x26x26 256x12x12 384x12x12 384x12x12 256x12x12 256x5x5 "
                                "6400 4096 4096 10",
    ("vgg", "vgg11_d2l"): "64x112x112 128x56x56 256x28x28 512x14x14 512x7x7 25088 4096 4096 10",
    ("nin", "nin"): "96x54x54 96x26x26 256x26x26 256x12x12 384x12x12 384x5x5 384x5x5 10x5x5 10x1x1 10",
    ("googlenet", "googlenet_d2l"): "64x24x24 192x12x12 480x6x6 832x3x3 1024 10",
    ("resnet18_d2l", "resnet18_d2l"): "64x24x24 64x24x24 128x12x12 256x6x6 512x3x3 10",
    ("densenet_d2l", "densenet_d2l"): "64x24x24 192x24x24 96x12x12 224x12x12 112x6x6 240x6x6 120x3x3 248x3x3 248 10",
    ("regnetx32", "regnetx32"): "32x48x48 32x24x24 80x12x12 10",
}


@pytest.mark.parametrize("arch,network", list(TABLES), ids=[n for _, n in TABLES])
def test_d2l_shapes(arch, network):
    expected = [S(x) for x in TABLES[(arch, network)].split()]
    net = pycnn.parse(os.path.join(ROOT, "archs", arch + ".arch"), network)
    assert [p.out_shape for p in net.parts] == expected
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, "archs", arch + ".arch"), network)
        x = torch.empty((1,) + net.input_shape)
        seen = []
        for part in model.children():
            x = part(x)
            seen.append(tuple(x.shape[1:]))
    assert seen == expected


def test_resnext_block_keeps_shape():
    # docs/design.md section 8: a ResNeXt block (32 channels, group width 16, bottleneck 1) on 4x32x96x96
    text = """
    use std
    network one_block(input = 32x96x96) {
        body = xblock(32, group_width=16, bottleneck=1)
    }
    """
    net = pycnn.parse(text)
    assert net.out_shape == (32, 96, 96)
    torch = pytest.importorskip("torch")
    model = pycnn.compile(text)
    assert model(torch.randn(4, 32, 96, 96)).shape == (4, 32, 96, 96)
    assert model.body.xblock1.conv2.groups == 2
