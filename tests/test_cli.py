"""The pycnn command line: exit codes, error format, the layer table, benchmark result files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pycnn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_help_for_every_subcommand():
    for args in (["--help"], ["summary", "--help"], ["check", "--help"], ["bench", "ops", "--help"],
                 ["bench", "model", "--help"]):
        out = run(*args)
        assert out.returncode == 0 and "usage: pycnn" in out.stdout, args


def test_summary_table_with_kernels_and_totals():
    out = run("summary", "archs/regnetx32.arch", "--classes", "7")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "network regnetx32, input 1x96x96"
    assert lines[1].split() == ["layer", "op", "output", "params", "FLOPs", "kernel"]
    assert any(line.startswith("stem.bn1") and "pycnn::bn_act" in line for line in lines)
    assert any(line.startswith("head.fc1") and " 7 " in f" {line} " for line in lines)
    assert lines[-1].startswith("total: ")


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


def test_bench_ops_writes_json_markdown_and_chart(tmp_path):
    out = run("bench", "ops", "--op", "bn_act", "--quick", "--repeats", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "ops-bn_act.json").read_text())
    env = data["environment"]
    assert {"date", "command", "device", "device_name", "torch", "pycnn", "build"} <= set(env)
    assert env["command"].startswith("pycnn") or "bench" in env["command"]
    assert len(data["results"]) == 8  # 2 shapes x 2 layouts x (forward, forward+backward)
    for row in data["results"]:
        assert {"op", "shape", "layout", "mode", "pycnn_ms", "eager_ms", "speedup"} <= set(row)
        assert row["pycnn_ms"] > 0 and row["eager_ms"] > 0
    assert (tmp_path / "ops-bn_act.md").read_text().count("\n| bn_act |") == 8
    assert (tmp_path / "ops-bn_act.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_model_compares_pycnn_with_eager(tmp_path):
    out = run("bench", "model", "archs/lenet.arch", "--batch", "2", "--repeats", "2", "--train", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "model-lenet.json").read_text())["results"]
    assert [r["variant"] for r in rows] == ["pycnn", "eager"]
    assert all(r["images_per_s"] > 0 and r["mode"] == "train" for r in rows)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert (tmp_path / "model-lenet.png").exists()


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
