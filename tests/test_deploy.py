"""pycnn.deploy and what uses it: runners on every engine (parity with PyTorch, a tensors-in, tensors-out
round trip), `pycnn bench model --engines` (a missing engine is one line and the other rows run; a parity
failure is reported, not timed), latency-aware `pycnn explore` (latency in the records, the cache, a budget
nobody meets). Tiny networks at 16x16."""
import copy
import json
import sys

import pytest
import torch

import pycnn
from pycnn import deploy
from pycnn.cli import main
from pycnn.explore.run import explore, read_trials
from pycnn.explore.space import SpaceError, canonical_text
from pycnn.training.recipe import Recipe

TINY = """use std
network tiny(input = 3x16x16, classes = 5) {
    stem = conv(8, k=3, s=2) bn relu
    stage s1 = 1 x mbconv(8, expand=2, k=3, se_ratio=0.25)
    head = avgpool flatten linear(classes)
}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(TINY)
    torch.manual_seed(0)
    model = pycnn.compile(path, kernels="pycnn").eval()
    from random_bn import randomized  # BatchNorm statistics that are not the identity
    return randomized(model), path


def test_runners_agree_with_pytorch(tiny, tmp_path, one_thread):
    model, _ = tiny
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    engines = ["torch"] + [e for e in ("onnxruntime", "openvino") if deploy.installed(e)]
    for engine in engines:
        run = pycnn.runner(model, engine, threads=1, onnx_path=str(tmp_path / "tiny.onnx"))
        out = run(x)
        assert isinstance(out, torch.Tensor) and out.shape == (3, 5), engine
        assert deploy.relative_error(out, ref) <= deploy.PARITY_TOLERANCE, engine
        assert run.engine == engine and run.layout in ("nchw", "channels_last")
    assert deploy.relative_error(ref * 1.001, ref) > deploy.PARITY_TOLERANCE  # the check sees a 0.1% error
    if deploy.installed("openvino"):  # planned for batch 2: a static shape
        run = pycnn.runner(model, "openvino", threads=1, batch=2, onnx_path=str(tmp_path / "tiny.onnx"))
        assert deploy.relative_error(run(x[:2]), ref[:2]) <= deploy.PARITY_TOLERANCE
    assert not model.training  # the runner worked on a copy


def test_onnx_export_is_reused_only_for_the_same_model(tiny, tmp_path, one_thread):
    if not deploy.installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    model, _ = tiny
    path = tmp_path / "tiny.onnx"
    x = torch.randn(2, 3, 16, 16)
    pycnn.runner(model, "onnxruntime", threads=1, onnx_path=str(path))
    exported = path.stat().st_mtime_ns
    pycnn.runner(model, "onnxruntime", threads=1, onnx_path=str(path))
    assert path.stat().st_mtime_ns == exported  # the same model: the file is reused
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).mul_(-1.5)  # same network and name, other weights
        ref = other(x)
    run = pycnn.runner(other, "onnxruntime", threads=1, onnx_path=str(path))
    assert deploy.relative_error(run(x), ref) <= deploy.PARITY_TOLERANCE  # not the stale export
    exported = path.stat().st_mtime_ns
    path.write_bytes(path.read_bytes() + b"\0")  # rewritten since (by another tool, a partial write)
    run = pycnn.runner(other, "onnxruntime", threads=1, onnx_path=str(path))
    assert path.stat().st_mtime_ns != exported  # exported again
    assert deploy.relative_error(run(x), ref) <= deploy.PARITY_TOLERANCE


def test_runner_errors(tiny, monkeypatch):
    model, _ = tiny
    with pytest.raises(ValueError, match="unknown engine 'onnxruntim'.*did you mean 'onnxruntime'"):
        pycnn.runner(model, "onnxruntim")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(deploy.EngineNotInstalled, match=r'pip install "pycnn\[deploy\]"'):
        pycnn.runner(model, "openvino")
    with pytest.raises(ValueError, match="freeze applies to the 'compile' engine"):
        pycnn.runner(model, "torch", freeze=True)


def test_frozen_compile_runner_agrees_with_pytorch(tiny, one_thread, monkeypatch):
    """engine "compile" with freeze=True: inductor's freezing (weights folded and prepacked as constants)."""
    model, _ = tiny
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    torch._dynamo.reset()
    compiles = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiles.append(kw) or real_compile(m, **kw))
    run = pycnn.runner(model, "compile", threads=1, freeze=True)
    assert deploy.relative_error(run(x), ref) <= deploy.PARITY_TOLERANCE
    assert compiles == [dict(dynamic=False, options={"freezing": True})]
    torch._dynamo.reset()


def test_engine_error_names_the_layer(tiny, tmp_path):
    pytest.importorskip("onnx")
    model, _ = tiny
    path = str(tmp_path / "tiny.onnx")
    pycnn.export_onnx(model, path)
    import onnx
    graph = onnx.load(path).graph
    node = next(n for n in graph.node if n.op_type == "Conv")
    where = deploy._layer_of(path, f"[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : {node.name} is not supported")
    assert where.startswith(" at layer stem") and node.name in where
    assert deploy._layer_of(path, "no node named here") == ""


def test_bench_engines_missing_engine_is_one_line_and_the_rest_run(tiny, tmp_path, monkeypatch, capsys):
    _, path = tiny
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc = main(["bench", "model", str(path), "--engines", "torch,pycnn,openvino", "--batch", "2", "--repeats", "2",
               "--threads", "1", "--kernels", "pycnn", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "openvino" in line]
    assert lines == ['engine openvino is not installed: pip install "pycnn[deploy]" (or pip install openvino onnx '
                     'onnxscript)']
    rows = json.loads((tmp_path / "out" / "engines-tiny.json").read_text())["results"]
    assert [(r["engine"], r["batch"]) for r in rows] == [(e, b) for b in (1, 2) for e in ("torch", "pycnn", "openvino")]
    timed = [r for r in rows if r["engine"] != "openvino"]
    assert all(r["ms"] > 0 and r["parity"] <= 1e-4 and 0 < r["vs_best"] <= 1 for r in timed)
    assert all(r["runs"] == "pycnn reference (torch eager)" for r in rows if r["engine"] == "torch")
    assert all(r["ms"] is None and "not installed" in r["note"] for r in rows if r["engine"] == "openvino")
    assert "| openvino |" in (tmp_path / "out" / "engines-tiny.md").read_text()
    assert (tmp_path / "out" / "engines-tiny.png").stat().st_size > 0


def test_bench_engines_parity_failure_is_reported_not_timed(tiny):
    from pycnn.bench.model import bench_engines
    model, _ = tiny
    other = pycnn.compile(TINY, backend="reference").eval()  # other weights: not the same function
    rows = bench_engines(model, ["torch", "pycnn"], [1], threads=1, repeats=1, baseline=(other, "other"),
                         log=lambda *_: None)
    bad, good = rows
    assert bad["engine"] == "torch" and bad["ms"] is None and bad["note"].startswith("parity failed")
    assert good["engine"] == "pycnn" and good["ms"] > 0 and good["vs_best"] == 1.0


def test_bench_engines_argument_errors(tiny, capsys):
    _, path = tiny
    with pytest.raises(SystemExit) as info:
        main(["bench", "model", str(path), "--engines", "onnxruntme"])
    assert info.value.code == 2 and "did you mean 'onnxruntime'" in capsys.readouterr().err
    assert main(["bench", "model", str(path), "--engines", "pycnn", "--train"]) == 2
    assert "--engines measures inference" in capsys.readouterr().err
    assert main(["bench", "model", str(path), "--freeze"]) == 2
    assert "--freeze goes with --engines" in capsys.readouterr().err
    assert main(["bench", "model", str(path), "--engines", "torch,pycnn", "--freeze"]) == 2
    assert "--freeze applies to the torch.compile rows" in capsys.readouterr().err


def test_bench_engines_freeze_reaches_the_benchmark(tiny, monkeypatch):
    """--freeze with every engine (no list) or a list with a compiled row is passed on to bench_engines."""
    from pycnn.bench import model as bench_model
    _, path = tiny
    calls = []
    monkeypatch.setattr(bench_model, "bench_engines", lambda *a, **kw: calls.append((a[1], kw["freeze"])) or [])
    assert main(["bench", "model", str(path), "--engines", "--freeze"]) == 0
    assert main(["bench", "model", str(path), "--engines", "pycnn,pycnn-compile", "--freeze"]) == 0
    assert [freeze for _, freeze in calls] == [True, True] and "pycnn-compile" in calls[0][0]


def test_canonical_text_is_the_network_not_its_spelling():
    a = pycnn.parse(TINY)
    b = pycnn.parse(TINY.replace("stem =", "# a comment\n    stem  ="))
    c = pycnn.parse(TINY, classes=6)
    d = pycnn.parse(TINY.replace("k=3, se_ratio", "k=5, se_ratio"))  # same shapes, another depthwise kernel
    assert canonical_text(a) == canonical_text(b) != canonical_text(c)
    assert canonical_text(d) != canonical_text(a)
    assert "stem" in canonical_text(a) and "3x16x16" in canonical_text(a)


def test_latency_aware_exploration_and_its_cache(tiny_space, tmp_path, monkeypatch, one_thread):
    cache = tmp_path / "latency.json"
    recipe = Recipe(epochs=1, batch_size=64)
    log = []
    jsonl = explore(tiny_space, 2, tmp_path / "run", recipe=recipe, input=(1, 8, 8), kernels="pycnn",
                    latency="pycnn@2", latency_cache=cache, latency_repeats=2, threads=1, log=log.append)
    trials = read_trials(jsonl)
    assert len(trials) == 2 and all(t["error"] is not None and t["latency_ms"] > 0 for t in trials)
    assert all(t["latency"]["engine"] == "pycnn" and t["latency"]["batch"] == 2 and t["latency"]["threads"] == 1
               and t["latency"]["parity"] <= 1e-4 and not t["latency"]["cached"] for t in trials)
    entries = json.loads(cache.read_text())
    assert len(entries) == len({canonical_text(pycnn.parse("archs/anynet.arch", "anynet", **o))
                                for o in [dict(stem_width=8, input=(1, 8, 8), **t["values"]) for t in trials]})
    assert not list(tmp_path.glob(".latency.json.*"))  # the temporary file was renamed, not left behind

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although cached")
    monkeypatch.setattr(deploy, "variant_runner", no_measuring)
    log.clear()
    budget = max(t["latency_ms"] for t in trials) * 1.0001
    again = explore(tiny_space, 2, tmp_path / "run2", recipe=recipe, input=(1, 8, 8), kernels="pycnn",
                    latency="pycnn@2", latency_cache=cache, max_latency_ms=budget, threads=1, log=log.append)
    assert "2 candidates (2 from the cache" in log[0]
    assert all(t["latency"]["cached"] for t in read_trials(again))
    from pycnn.explore import report
    report.plot_latency(tmp_path / "lat.png", trials, budget)
    assert (tmp_path / "lat.png").stat().st_size > 0 and report.pareto_front(trials)


def test_latency_budget_nobody_meets_is_a_clear_error(tiny_space, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    rc = main(["explore", str(tiny_space), "--samples", "2", "--input", "1x8x8", "--latency", "pycnn",
               "--max-latency-ms", "1e-6", "--latency-repeats", "1", "--latency-cache", str(tmp_path / "c.json"),
               "--out", str(out), "--kernels", "pycnn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no candidate meets --max-latency-ms 1e-06 on pycnn@1" in err[0]
    assert not out.exists()  # nothing half-written
    assert main(["explore", str(tiny_space), "--samples", "1", "--latency", "onnxruntime@x", "--out", str(out)]) == 2
    assert "the batch after @ must be an integer" in capsys.readouterr().err
