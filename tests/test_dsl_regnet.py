"""RegNetX-32 (d2l) shapes and the regnet generator against pycls's RegNetX-32GF figures."""
import pytest

import pycnn
from pycnn.dsl.generators import regnet_stages


def test_regnetx32_d2l_shapes():
    net = pycnn.parse("archs/regnetx32.arch")
    # docs/design.md section 8: 32x48x48, 32x24x24, 80x12x12, 10
    assert [p.out_shape for p in net.parts] == [(32, 48, 48), (32, 24, 24), (80, 12, 12), (10,)]
    assert net.input_shape == (1, 96, 96)


def test_regnetx32_compiles_and_runs():
    torch = pytest.importorskip("torch")
    model = pycnn.compile("archs/regnetx32.arch")
    assert model(torch.randn(2, 1, 96, 96)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == pycnn.parse("archs/regnetx32.arch").total_params
    assert "stage s1 = 4 x xblock" in model.arch
    names = dict(model.named_parameters())
    assert "s1.b1.conv1.weight" in names and "s1.b1.bn1.weight" in names and "s1.b1.shortcut.conv1.weight" in names


def test_regnet_generator_stages_32gf():
    stages = regnet_stages(w0=320, wa=69.86, wm=2.0, depth=23, group_width=168, bottleneck=1.0)
    assert [s.width for s in stages] == [336, 672, 1344, 2520]
    assert [s.depth for s in stages] == [2, 7, 13, 1]
    assert [s.width // s.group_width for s in stages] == [2, 4, 8, 15]


def test_regnetx_32gf_params_and_flops():
    net = pycnn.parse("archs/regnetx32.arch", "regnetx_32gf")
    assert net.total_params == 107_811_560  # docs/design.md section 8 (= torchvision regnet_x_32gf)
    # pycls complexity 31,735,930,792 multiply-adds; the issue asks for 31.74 G within 0.5%
    assert abs(net.total_flops - 31.74e9) / 31.74e9 < 0.005
    assert net.total_flops == 31_735_930_792


def test_summary_totals_match_ir():
    s = pycnn.summary("archs/regnetx32.arch", show=False)
    net = pycnn.parse("archs/regnetx32.arch")
    assert s.total_params == net.total_params
    assert s.total_flops == net.total_flops
    assert s.rows[0][0] == "stem.conv1"
    text = str(s)
    assert "total:" in text and "s2.b6.conv3" in text


DESIGN_SKETCH = """
# archs/regnetx32.arch : the 32-layer RegNetX of "Dive into Deep Learning", section 8.8
use std                                   # the block library in archs/std/

network regnetx32(input = 1x96x96, classes = 10) {
    stem  = conv(32, k=3, s=2) bn relu
    stage s1 = 4 x xblock(32, group_width=16, bottleneck=1) stride 2
    stage s2 = 6 x xblock(80, group_width=16, bottleneck=1) stride 2
    head  = avgpool flatten linear(classes)
}

block xblock(w, stride=1, group_width=16, bottleneck=1.0, se=0) {
    let b = round(w * bottleneck)
    main {
        conv(b, k=1) bn relu
        conv(b, k=3, s=stride, groups=b / group_width) bn relu
        if se > 0 { se(round(in * se)) }          # `in` = the block's input channels, inferred
        conv(w, k=1) bn
    }
    shortcut when stride != 1 or in != w { conv(w, k=1, s=stride) bn }
    merge add relu
}

network regnetx_32gf(input = 3x224x224, classes = 1000) {
    stem = conv(32, k=3, s=2) bn relu
    body = regnet(w0=320, wa=69.86, wm=2.0, depth=23, group_width=168, bottleneck=1.0, block=xblock)
    head = avgpool flatten linear(classes)
}
"""


def test_design_sketch_compiles_verbatim():
    """docs/design.md section 3's sketch is valid text and means what the shipped files mean."""
    small = pycnn.parse(DESIGN_SKETCH)
    assert [p.out_shape for p in small.parts] == [(32, 48, 48), (32, 24, 24), (80, 12, 12), (10,)]
    assert small.total_params == pycnn.parse("archs/regnetx32.arch").total_params
    big = pycnn.parse(DESIGN_SKETCH, "regnetx_32gf")
    assert big.total_params == 107_811_560 and big.total_flops == 31_735_930_792
