"""The pycnn command line: exit codes, error format, the layer table, benchmark result files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT, **env_vars):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_vars)
    return subprocess.run([sys.executable, "-m", "pycnn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_help_for_every_subcommand():
    for args in (["--help"], ["summary", "--help"], ["check", "--help"], ["bench", "ops", "--help"],
                 ["bench", "model", "--help"], ["export", "--help"]):
        out = run(*args)
        assert out.returncode == 0 and "usage: pycnn" in out.stdout, args


def test_summary_table_with_kernels_and_totals():
    out = run("summary", "archs/regnetx32.arch", "--classes", "7", "--full")  # every layer, the kernels' own names
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "network regnetx32, input 1x96x96"
    assert lines[1].split() == ["layer", "op", "output", "params", "FLOPs", "kernel"]
    assert any(line.startswith("stem.bn1") and "(fused into stem.conv1)" in line for line in lines)
    assert any(line.startswith("s1.b1.conv2") and line.endswith("auto: pycnn::gconv | aten") for line in lines)
    assert any(line.startswith("head.fc1") and " 7 " in f" {line} " for line in lines)
    assert lines[-1].startswith("total: ")
    forced = run("summary", "archs/regnetx32.arch", "--kernels", "torch", "--full").stdout.splitlines()
    assert any(line.startswith("s1.b1.conv2") and line.endswith(" aten") for line in forced)


def test_summary_input_override_changes_shapes():
    small = run("summary", "archs/regnetx32.arch", "--input", "1x64x64").stdout
    assert "32x32x32" in small.splitlines()[2]  # stem output at 64x64 input


def test_check_reports_file_line_column_and_caret(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("network bad(input = 3x32x32, classes = 10) {\n"
                   "    stem = conv(16, k=3, strides=2) bn relu\n"
                   "    head = avgpool flatten linear(classes)\n}\n")
    out = run("check", "archs/lenet.arch", str(bad))
    assert out.returncode == 1
    assert "archs/lenet.arch: ok" in out.stdout
    assert f"{bad}:2:26:" in out.stderr and "did you mean 's'" in out.stderr
    assert out.stderr.splitlines()[-1].strip() == "^^^^^^^"
    assert run("check", "archs/lenet.arch", "archs/vgg.arch").returncode == 0
    assert run("check", str(tmp_path / "missing.arch")).returncode == 1


# A tiny network with every op `pycnn bench ops` measures: a depthwise conv + BN + ReLU6, a grouped conv
# + BN + SiLU, an SE, a depthwise 9x9 conv (unsupported: left out), a block whose last BN gets the residual
# and the ReLU, an SE followed by the residual add and ReLU; tiny_copy has the same shapes.
TINY_ARCH = """
block res(w, stride=1) {
    main {
        conv(w, k=3, groups=w) bn relu6
        conv(w, k=1) bn
    }
    shortcut {}
    merge add relu
}
block se_res(w, stride=1) {
    main {
        conv(w, k=1) bn
        se(4)
    }
    shortcut {}
    merge add relu
}
network tiny(input = 3x16x16, classes = 10) {
    stem = conv(8, k=3, s=2) bn relu
    body = conv(8, k=3, groups=8) bn relu6
           conv(16, k=3, s=2, groups=4) bn silu
           se(4, act=relu)
           conv(16, k=9, groups=16) bn
    stage s1 = 1 x res(16) stride 1
    stage s2 = 1 x se_res(16) stride 1
    head = avgpool flatten linear(classes)
}
network tiny_copy = tiny()
"""


def test_bench_ops_shapes_from_a_network(tmp_path):
    from pycnn.bench import ops
    path = tmp_path / "tiny.arch"
    path.write_text(TINY_ARCH)
    shapes = ops.load_shapes(ops.parse_network_specs([str(path)], ["tiny", "tiny_copy"]))
    nets = "tiny+tiny_copy"
    assert shapes["dwconv"] == [ops.DwShape(nets, 8, 8, 8, 3, 1, 1, 1, "relu6"),
                                ops.DwShape(nets, 16, 4, 4, 3, 1, 1, 1, "relu6")]  # not the 9x9
    assert shapes["gconv"] == [ops.GconvShape(nets, 8, 16, 8, 8, 3, 4, 2, 1, "silu")]
    assert shapes["se"] == [ops.SeShape(nets, 16, 4, 4, 4, "relu", False), ops.SeShape(nets, 16, 4, 4, 4, "relu", True)]
    assert shapes["bn_act"] == [ops.BnShape(nets, 8, 8, 8, "relu", False), ops.BnShape(nets, 8, 8, 8, "relu6", False),
                                ops.BnShape(nets, 16, 4, 4, "silu", False), ops.BnShape(nets, 16, 4, 4, "none", False),
                                ops.BnShape(nets, 16, 4, 4, "relu6", False), ops.BnShape(nets, 16, 4, 4, "relu", True)]
    # FILE:NETWORK picks one network; the default networks are the repository's
    one = ops.load_shapes(ops.parse_network_specs([f"{path}:tiny_copy"], None))
    assert {s.networks for s in one["bn_act"]} == {"tiny_copy"}
    default = ops.parse_network_specs(None, None)
    assert [n for _, n in default] == ["mobilenet_v2", "efficientnet_b0", "regnet_x_400mf", "regnet_x_32gf",
                                       "resnext50_32x4d"]
    assert all(Path(f).exists() for f, _ in default)


def test_bench_ops_default_networks_give_the_known_layer_shapes():
    from pycnn.bench import ops
    shapes = ops.load_shapes(ops.parse_network_specs(None, ["mobilenet_v2", "resnext50_32x4d"]))
    # MobileNetV2: 3x3 depthwise convs, BN + ReLU6; its first block's depthwise conv is on 32x112x112
    assert ops.DwShape("mobilenet_v2", 32, 112, 112, 3, 1, 1, 1, "relu6") in shapes["dwconv"]
    assert {s.k for s in shapes["dwconv"]} == {3} and len(shapes["dwconv"]) == 10
    # ResNeXt-50 32x4d: 32 groups on widths 128..1024, the stride on the 3x3
    assert ops.GconvShape("resnext50_32x4d", 256, 256, 56, 56, 3, 32, 2, 1, "relu") in shapes["gconv"]
    assert len(shapes["gconv"]) == 7 and not shapes["se"]
    assert ops.BnShape("resnext50_32x4d", 2048, 7, 7, "relu", True) in shapes["bn_act"]


def test_bench_ops_writes_json_markdown_and_chart(tmp_path):
    arch = tmp_path / "tiny.arch"
    arch.write_text(TINY_ARCH)
    # --compile with dynamo's "eager" backend: the same path as inductor's, without its minutes of codegen
    out = run("bench", "ops", "--quick", "--arch", f"{arch}:tiny", "--repeats", "1", "--threads", "1", "--compile",
              "--out", str(tmp_path), PYCNN_BENCH_COMPILE_BACKEND="eager")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "ops-all.json").read_text())
    env = data["environment"]
    assert {"date", "command", "device", "device_name", "torch", "pycnn", "build"} <= set(env)
    assert env["command"].startswith("pycnn") or "bench" in env["command"]
    assert env["threads"] == 1 and env["compile_backend"] == "eager"
    rows = data["results"]
    per_op = {op: sum(r["op"] == op for r in rows) for op in ("bn_act", "dwconv", "gconv", "se")}
    assert per_op == {"bn_act": 6 * 4, "dwconv": 2 * 4, "gconv": 1 * 4, "se": 2 * 4}  # shapes x 2 layouts x 2 modes
    for row in rows:
        assert {"op", "networks", "shape", "layout", "mode", "pycnn_ms", "eager_ms", "speedup", "compile_ms",
                "speedup_vs_compile", "compile_s"} <= set(row)
        assert row["networks"] == "tiny" and row["shape"].startswith("2x")  # --quick: batch 2
        assert row["pycnn_ms"] > 0 and row["eager_ms"] > 0 and row["compile_ms"] > 0
        assert row["speedup_vs_compile"] == pytest.approx(row["compile_ms"] / row["pycnn_ms"])
        # the grouped conv's forward is also timed against the BatchNorm folded into the conv (eval's alternative)
        if row["op"] == "gconv" and row["mode"] == "forward":
            assert row["folded_ms"] > 0 and row["speedup_vs_folded"] == pytest.approx(row["folded_ms"] / row["pycnn_ms"])
        else:
            assert "folded_ms" not in row
    assert {r["act"] for r in rows if r["op"] == "bn_act"} == {"relu", "relu6", "silu", "none", "relu+res"}
    md = (tmp_path / "ops-all.md").read_text()
    assert "## Summary" in md and "## gconv float32" in md and "speedup_vs_compile" in md
    assert md.count("\n| tiny |") == len(rows)
    assert (tmp_path / "ops-all.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_ops_quick_without_arch_runs_the_builtin_network(tmp_path, capsys):
    from pycnn.cli import main  # in this process: a subprocess costs seconds of imports
    assert main(["bench", "ops", "--op", "se", "--quick", "--repeats", "1", "--no-compile", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ops-se.json").read_text())["results"]
    assert len(rows) == 4 and all(r["networks"] == "quick" and "compile_ms" not in r for r in rows)
    assert main(["bench", "ops", "--arch", str(tmp_path / "missing.arch")]) == 1
    assert "missing.arch" in capsys.readouterr().err


def test_bench_model_compares_pycnn_with_eager(tmp_path):
    out = run("bench", "model", "archs/lenet.arch", "--batch", "2", "--repeats", "2", "--train", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "model-lenet-train.json").read_text())["results"]
    assert [r["variant"] for r in rows] == ["pycnn", "eager"]
    assert all(r["images_per_s"] > 0 and r["mode"] == "train" for r in rows)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert all(r["saved_mib"] > 0 for r in rows)
    assert (tmp_path / "model-lenet-train.png").exists()


def test_bench_model_layouts_and_torchvision_baseline(tmp_path):
    out = run("bench", "model", "archs/resnet.arch", "--network", "resnet18", "--input", "3x32x32", "--batch", "2",
              "--repeats", "2", "--layout", "both", "--torchvision", "resnet18", "--kernels", "pycnn",
              "--threads", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "model-resnet18-eval.json").read_text())["results"]
    assert [(r["variant"], r["layout"]) for r in rows] == [
        (v, layout) for layout in ("nchw", "channels_last") for v in ("pycnn", "eager", "torchvision")]
    assert "best layout:" in out.stdout and all(r["mode"] == "eval" and r["saved_mib"] is None for r in rows)


def test_reference_copy_computes_the_same_function():
    import torch

    import pycnn
    from pycnn.lower import to_backend
    torch.manual_seed(0)
    model = pycnn.compile("archs/resnet18_d2l.arch").eval()
    ref = to_backend(model, "reference")
    assert ref.backend == "reference" and not ref.training
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)


def test_bench_overhead_measures_training_calls(tmp_path):
    """`python -m pycnn.bench.overhead --train`: forward and backward per network and variant, as JSON rows."""
    from pycnn.bench import overhead
    out = tmp_path / "overhead.json"
    assert overhead.main(["--train", "--repeats", "2", "--size", "8", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["network"], r["variant"]) for r in rows} >= {
        (n, v) for _, n, _ in overhead.NETWORKS for v in ("pycnn", "pycnn-auto", "reference")}
    assert all(r["mode"] == "train" and r["ms"] > 0 for r in rows)


def test_bench_ops_gconv_forward_keeps_the_weight_layout_as_eval_does(monkeypatch):
    """The forward rows time pycnn::gconv as a network's eval runs it: its weight's layout made once and kept
    (a direct call would reorder the weight on every call, which no eval does); training rows make none."""
    import torch
    from pycnn import _C
    from pycnn.bench import ops
    shape = ops.GconvShape("t", 32, 32, 6, 6, 3, 2, 1, 1, "relu")
    layouts = (("channels_last", torch.channels_last),)
    for mode, layouts_made in (("forward", 1), ("forward+backward", 0)):
        monkeypatch.setattr(ops, "_modes", lambda mode=mode: (mode,))
        made = _C._weight_forms_stats()["made"]
        rows = ops.bench_gconv(torch.device("cpu"), torch.float32, 3, [1], [shape], layouts=layouts)
        assert [r["mode"] for r in rows] == [mode]
        assert _C._weight_forms_stats()["made"] - made == layouts_made  # one for every timed forward call


def test_op_profile_tool_prints_where_the_time_goes(capsys, monkeypatch):
    from test_gpu_tools import load_tool
    tool = load_tool("op_profile")
    monkeypatch.setattr(tool.torch, "set_num_threads", lambda n: None)  # the tool's --threads: not this process's
    assert tool.main(["archs/regnetx32.arch", "--size", "32", "--steps", "1", "--rows", "40", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "pycnn eval forward, batch 1" in out and "ms a call" in out and "pycnn::eval_conv_bn_act" in out
    assert tool.main(["archs/regnetx32.arch", "--variant", "reference", "--train", "--batch", "2", "--size", "32",
                      "--steps", "1", "--rows", "60", "--shapes", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "reference training step, batch 2" in out and "aten::convolution_backward" in out
    assert "pycnn::" not in out  # the reference backend runs eager modules only
    for bad in (["archs/regnetx32.arch", "--variant", "torchvision"], ["archs/no_such.arch"],
                ["archs/regnetx32.arch", "--network", "no_such_network"], ["archs/regnetx32.arch", "--size", "0"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad)
        assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
