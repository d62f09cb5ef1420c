"""The readable summary: identical consecutive blocks grouped, --depth, --full, human units with exact totals,
kernels in words, activation sizes, the --plot chart; --set overrides on every command."""
import pytest

import pycnn
from pycnn.cli import main
from pycnn.summary import grouped_rows, human, human_bytes, kernel_words


def rows_of(text):
    return [line for line in text.splitlines()[2:] if not line.startswith(("total:", "(auto)"))]


def test_identical_blocks_are_grouped_with_sums():
    net = pycnn.parse("archs/regnetx32.arch")
    rows = grouped_rows(net)
    assert [(r.name, r.count, r.op) for r in rows] == [
        ("stem.conv1", 1, "conv 3x3 s2"), ("stem.bn1", 1, "bn+relu"),
        ("s1.b1", 1, "xblock"), ("s1.b2-b4", 3, "xblock"), ("s2.b1", 1, "xblock"), ("s2.b2-b6", 5, "xblock"),
        ("head.pool1", 1, "gap"), ("head.flatten1", 1, "flatten"), ("head.fc1", 1, "linear")]
    assert sum(r.params for r in rows) == net.total_params and sum(r.flops for r in rows) == net.total_flops
    b2 = dict(net.layers())
    assert rows[3].params == 3 * sum(layer.params for n, layer in b2.items() if n.startswith("s1.b2."))
    assert sum(r.activations for r in rows) == sum(
        layer.out_shape[0] * (layer.out_shape[1] * layer.out_shape[2] if len(layer.out_shape) == 3 else 1)
        for layer in b2.values())


def test_depth_expands_and_groups_inside():
    net = pycnn.parse("archs/regnetx32.arch")
    parts = grouped_rows(net, depth=1)
    assert [r.name for r in parts] == ["stem", "s1", "s2", "head"]
    deep = grouped_rows(net, depth=3)
    names = [r.name for r in deep]
    assert "s1.b1.shortcut.conv1" in names and "s1.b2-b4.conv2" in names and "s1.b3.conv2" not in names
    row = deep[names.index("s1.b2-b4.conv2")]
    assert row.count == 3 and row.op == "conv 3x3 s1 g2"
    assert sum(r.flops for r in deep) == net.total_flops


def test_human_units_and_kernel_words():
    assert [human(0), human(810), human(28_512), human(5_495_978), human(31_735_930_792)] == [
        "0", "810", "28.5 K", "5.5 M", "31.7 G"]
    assert human_bytes(4 * 80 * 12 * 12) == "45 KiB" and human_bytes(40) == "40 B"
    assert kernel_words("pycnn::gconv") == "pycnn gconv"
    assert kernel_words("aten::conv2d+folded BN") == "PyTorch conv (BN folded)"
    assert kernel_words("aten::conv2d+pycnn::bn_act+residual") == "PyTorch conv + pycnn BN+act + residual"
    assert kernel_words("aten::mm+pycnn::bn_act+residual") == "1x1 conv as matrix products + pycnn BN+act + residual"
    assert kernel_words("pycnn::dwconv+residual") == "pycnn dwconv + residual"
    assert kernel_words("auto: pycnn::gconv | aten") == "pycnn gconv | PyTorch (auto)"
    assert kernel_words("(fused into s1.b1.conv1)") == "fused into conv1"
    assert kernel_words("aten (Linear)") == "PyTorch Linear"


def test_summary_command_grouped_by_default(capsys):
    assert main(["summary", "archs/regnetx32.arch", "--kernels", "pycnn", "--classes", "7"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "network regnetx32, input 1x96x96"
    assert lines[1].split() == ["layer", "op", "output", "params", "FLOPs", "act/sample", "kernel"]
    row = next(line for line in lines if line.startswith("s2.b2-b6 "))
    assert "5 x xblock" in row and "pycnn gconv" in row and "PyTorch conv (BN folded)" in row
    assert len(rows_of(out)) == 9
    assert lines[-1].startswith("total: 177,079 parameters (177 K), 40,292,919 FLOPs (multiply-adds, 40.3 M)")
    assert main(["summary", "archs/regnetx32.arch", "--depth", "1"]) == 0
    assert [line.split()[0] for line in rows_of(capsys.readouterr().out)] == ["stem", "s1", "s2", "head"]


def test_summary_of_a_zoo_name(capsys):
    assert main(["summary", "resnext50_32x4d", "--input", "3x64x64", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("network resnext50_32x4d, input 3x64x64") and "stage: 6 x bottleneck" in out
    assert main(["summary", "resnet5"]) == 2  # a bad argument: one line, exit status 2
    assert "did you mean resnet50" in capsys.readouterr().err


def test_full_keeps_every_layer_and_exact_numbers(capsys):
    assert main(["summary", "archs/regnetx32.arch", "--full"]) == 0
    out = capsys.readouterr().out
    assert "s2.b6.conv3" in out and "(fused into stem.conv1)" in out and "40,293,162" in out


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "chart.png"
    assert main(["summary", "archs/mobilenet_v2.arch", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_set_overrides_on_every_command(capsys):
    assert main(["summary", "archs/regnet.arch", "--network", "regnetx_200mf", "--set", "depth=7",
                 "--set", "input=3x64x64", "--set", 'rounding="torchvision"', "--depth", "1"]) == 0
    assert "input 3x64x64" in capsys.readouterr().out
    assert main(["check", "archs/resnet.arch", "--network", "resnet50", "--set", "d3=2"]) == 0
    assert main(["check", "archs/resnet.arch", "--set", "d9=2"]) == 1
    assert "has no parameter 'd9'" in capsys.readouterr().err
    from pycnn.bench import ops
    from pycnn.cli import _overrides, build_parser
    args = build_parser().parse_args(["bench", "ops", "--arch", "archs/mobilenet_v2.arch", "--input", "3x64x64"])
    args.overrides = _overrides(args)
    assert ops.settings(args)["shapes"]["dwconv"][0].h == 32  # the stem halves 64
    with pytest.raises(SystemExit) as info:
        main(["summary", "archs/resnet.arch", "--set", "classes=__import__('os')"])
    assert info.value.code == 2 and "not a value" in capsys.readouterr().err


def test_dsl_literals_for_set():
    from pycnn.dsl.literal import parse_assignment, parse_value
    assert [parse_value(v) for v in ("3x224x224", "true", '"pycls"', "1.25", "xblock", "-3", "2 * 4")] == [
        (3, 224, 224), True, "pycls", 1.25, "xblock", -3, 8]
    assert parse_assignment("classes = 7") == ("classes", 7)
    for bad in ("1) {}", "open('x')", "", "classes"):
        with pytest.raises(pycnn.ArchError):
            parse_assignment(bad) if bad == "classes" else parse_value(bad)
