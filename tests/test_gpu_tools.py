"""The GPU check's own tools, run where CI runs (no GPU): the sanitizer cases on the CPU kernels, the compact
benchmark's shape selection, and the script's behaviour without a GPU."""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pycnn.bench import ops as bench_ops

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sanitizer_cases_run_on_pycnn_kernels(capsys):
    assert load_tool("gpu_sanitize").main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for op in ("bn_act_backward", "dwconv_backward", "gconv_backward", "se_backward", "dwconv_forward"):
        assert op in out


def test_sanitizer_case_that_misses_pycnn_fails(monkeypatch, capsys):
    tool = load_tool("gpu_sanitize")
    monkeypatch.setattr(tool, "cases", lambda torch_module, nn: [("plain bn", torch.nn.BatchNorm2d(3), (2, 3, 4, 4), False)])
    assert tool.main(["--device", "cpu"]) == 1
    assert "no pycnn op called" in capsys.readouterr().out


def test_spread_keeps_first_and_last():
    assert bench_ops.spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert bench_ops.spread([1, 2], 5) == [1, 2]
    assert bench_ops.spread([7, 8, 9], 1) == [7]


def test_bench_ops_layout_and_max_shapes():
    parser = argparse.ArgumentParser()
    bench_ops.add_arguments(parser)
    s = bench_ops.settings(parser.parse_args(["--quick", "--device", "cpu", "--max-shapes", "1",
                                              "--layout", "channels_last"]))
    assert [name for name, _ in s["layouts"]] == ["channels_last"]
    assert all(len(found) <= 1 for found in s["shapes"].values()) and s["shapes"]["dwconv"]
    rows = bench_ops.run("bn_act", s["device"], None, 1, [1], s["shapes"], False, s["layouts"])
    assert rows and {r["layout"] for r in rows} == {"channels_last"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_check_without_gpu_says_so(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--quick", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr
