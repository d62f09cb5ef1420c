"""Hostile inputs (issue 16): each finding of the reliability trial as a regression test, named after it.

Every test here failed before its fix (see the issue's closing note); the classes of input behind them are also
fuzzed in test_dsl_fuzz.py and test_hostile_fuzz.py.
"""
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import pycnn
from pycnn import ArchError, dispatch, ops
from pycnn.dsl.elaborate import Limits
from pycnn.weights import WeightMismatchError, transfer_state_dict

ROOT = Path(__file__).resolve().parents[1]
TINY = "network n(input = 3x8x8) {\n    head = gap\n}\n"
pycnn.parse(TINY)  # builds the parser once: the time bounds below are per text


def refused_quickly(text, budget_s=2.0, **kwargs):
    """The ArchError that parsing `text` raises, within the time budget."""
    start = time.perf_counter()
    with pytest.raises(ArchError) as info:
        pycnn.parse(text, **kwargs)
    assert time.perf_counter() - start < budget_s
    str(info.value)  # formats
    return info.value


# ---------------------------------------------------------------------------------------- 1-2: hangs and bombs

def test_1_round_with_huge_ndigits_returns_at_once():
    start = time.perf_counter()
    net = pycnn.parse("network n(input=3x8x8) { let v = round(1, -1000000000000000)\n head = gap }")
    assert time.perf_counter() - start < 2.0 and net is not None
    from pycnn.dsl.evaluate import FUNCTIONS
    rnd = FUNCTIONS["round"][0]
    assert rnd(123456.789, -10 ** 15) == 0 and rnd(1.25, 10 ** 15) == 1.25 and rnd(1.2345, 2) == 1.23
    assert rnd(987654321, -3) == 987654000


LONG_SUM = "+".join(["1"] * 90)
BOMBS = {
    "repeat_of_long_let": f"network n(input=3x8x8) {{ head = repeat 99999 {{ let a = {LONG_SUM} }} relu }}",
    "if_in_repeat": f"network n(input=3x8x8) {{ head = repeat 99999 {{ if {LONG_SUM} > 0 {{ }} }} relu }}",
    "stage_of_big_defaults": f"block e(x = {LONG_SUM}, y = {LONG_SUM}) {{ relu }}\n"
                             f"network n(input=3x8x8) {{ stage s = 99999 x e() }}",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_2_expression_work_is_bounded(name):
    err = refused_quickly(BOMBS[name])
    assert "steps" in err.message and err.line == 1


def test_2_shipped_networks_stay_far_below_the_step_budget():
    from pycnn.dsl.elaborate import Elaborator, load_program
    used = 0
    for path in sorted((ROOT / "archs").glob("*.arch")):
        program = load_program(path)
        for name in program.main_networks:
            el = Elaborator(program)
            el.network(name)
            used = max(used, el.budget.used)
    assert 0 < used < Limits().max_steps / 20


# ---------------------------------------------------------------------------------------- 3: no pickle from /tmp

def test_3_parser_reads_and_writes_no_cache_file(tmp_path):
    """Lark's cache=True reads a pickle from a predictable name in $TMPDIR: planted, it runs code. The parser must
    neither write nor read any such file (a fresh process, TMPDIR an empty folder)."""
    code = ("import pickle\n"
            "def refuse(*a, **k): raise AssertionError('pickle used')\n"
            "pickle.load = pickle.loads = refuse\n"
            "from pycnn.dsl.parse import parse_text\n"
            "parse_text('network n(input = 3x8x8) { }')\n")
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not [p.name for p in tmp_path.iterdir() if "lark" in p.name]


# ---------------------------------------------------------------------------------------- 4: NaN and Inf

ACT_REF = {"none": lambda z: z, "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}
SPECIALS = (float("nan"), float("inf"), -float("inf"))


def with_specials(shape, seed=0, layout="nchw"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    flat = x.view(-1)
    for i, v in enumerate(SPECIALS):  # one of each, in different channels and places
        flat[(i * 37 + 5) % flat.numel()] = v
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def assert_same_nonfinite(ours, theirs, what):
    for a, b, name in zip(ours, theirs, ("output", *[f"grad {i}" for i in range(10)])):
        if a is None and b is None:
            continue
        assert torch.equal(a.isnan(), b.isnan()), f"{what} {name}: NaN positions differ"
        assert torch.equal(a.isinf() & (a > 0), b.isinf() & (b > 0)), f"{what} {name}: +inf positions differ"
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-9, atol=1e-9, msg=f"{what} {name}")


def outputs_and_grads(fn, inputs):
    inputs = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    y = fn(*inputs)
    grads = torch.autograd.grad(y, [t for t in inputs if t is not None], torch.ones_like(y), allow_unused=True)
    return [y.detach(), *grads]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act", list(ACT_REF))
@pytest.mark.parametrize("training", [True, False])
def test_4_bn_act_propagates_nan_and_inf_as_eager(act, training, layout):
    x = with_specials((2, 5, 4, 4), layout=layout)
    w, b = torch.rand(5, dtype=torch.float64) + 0.5, torch.randn(5, dtype=torch.float64)
    rm, rv = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    ours = outputs_and_grads(lambda x, w, b: ops.bn_act(x, w, b, rm.clone(), rv.clone(), training=training, act=act),
                             [x, w, b])
    theirs = outputs_and_grads(lambda x, w, b: ACT_REF[act](F.batch_norm(x, rm.clone(), rv.clone(), w, b, training)),
                               [x, w, b])
    assert_same_nonfinite(ours, theirs, f"bn_act {act}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act", list(ACT_REF))
def test_4_dwconv_and_gconv_propagate_nan_and_inf_as_eager(act, layout):
    x = with_specials((2, 4, 6, 6), layout=layout)
    wd = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    wg = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    scale, shift = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)

    def ref(x, w, s, b, groups):
        return ACT_REF[act](F.conv2d(x, w, None, 1, 1, 1, groups) * s.view(1, -1, 1, 1) + b.view(1, -1, 1, 1))

    ours = outputs_and_grads(lambda x, w, s, b: ops.dwconv(x, w, s, b, padding=1, act=act), [x, wd, scale, shift])
    assert_same_nonfinite(ours, outputs_and_grads(lambda *t: ref(*t, 4), [x, wd, scale, shift]), f"dwconv {act}")
    ours = outputs_and_grads(lambda x, w, s, b: ops.gconv(x, w, s, b, padding=1, groups=2, act=act),
                             [x, wg, scale, shift])
    assert_same_nonfinite(ours, outputs_and_grads(lambda *t: ref(*t, 2), [x, wg, scale, shift]), f"gconv {act}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act,post_act", [("relu", "none"), ("silu", "relu"), ("relu", "silu"), ("silu", "relu6")])
def test_4_se_propagates_nan_and_inf_as_eager(act, post_act, layout):
    x = with_specials((2, 6, 3, 3), layout=layout)
    w1, b1 = torch.randn(2, 6, 1, 1, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    w2, b2 = torch.randn(6, 2, 1, 1, dtype=torch.float64), torch.randn(6, dtype=torch.float64)

    def ref(x, w1, b1, w2, b2):
        s = x.mean((2, 3), keepdim=True)
        return ACT_REF[post_act](x * torch.sigmoid(F.conv2d(ACT_REF[act](F.conv2d(s, w1, b1)), w2, b2)))

    ours = outputs_and_grads(lambda *t: ops.se(*t, act=act, post_act=post_act), [x, w1, b1, w2, b2])
    assert_same_nonfinite(ours, outputs_and_grads(ref, [x, w1, b1, w2, b2]), f"se {act}/{post_act}")


@pytest.mark.parametrize("act", ["relu", "relu6", "silu", "hardswish"])
def test_4_float32_activations_at_the_extremes(act):
    """float32 takes the vectorized kernels (SiLU through an approximate exp): inf, -inf and NaN as in eager."""
    z = torch.tensor([float("nan"), float("inf"), -float("inf"), 100.0, -100.0, 0.0, 3.0, -3.0, 6.0] * 4)
    x = z.view(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    ones, zeros = torch.ones(4), torch.zeros(4)
    ours = ops.bn_act(x, ones, zeros, zeros.clone(), ones.clone(), training=False, eps=0.0, act=act)
    theirs = ACT_REF[act](x)
    assert torch.equal(ours.isnan(), theirs.isnan()), (ours.flatten(), theirs.flatten())
    torch.testing.assert_close(ours, theirs, equal_nan=True, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------- 5: mixed devices

def test_5_meta_tensor_arguments_with_a_cpu_input_raise():
    x = torch.randn(2, 3, 4, 4)
    meta = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="pycnn.bn_act: weight is on meta but input is on cpu"):
        torch.ops.pycnn.bn_act_forward(x, meta, None, None, None, None, True, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="running_var is on meta"):
        ops.bn_act(x, None, None, torch.zeros(3), meta, training=False)
    with pytest.raises(RuntimeError, match="pycnn.dwconv: weight is on meta"):
        ops.dwconv(x, torch.ones(3, 1, 3, 3, device="meta"))
    with pytest.raises(RuntimeError, match="pycnn.gconv: residual is on meta"):
        ops.gconv(x, torch.ones(3, 3, 1, 1), residual=torch.ones(2, 3, 4, 4, device="meta"))
    with pytest.raises(RuntimeError, match="pycnn.se: fc2_weight is on meta"):
        ops.se(x, torch.ones(1, 3), None, torch.ones(3, 1, device="meta"), None)


# ---------------------------------------------------------------------------------------- 6-8: the language

def test_6_regnet_with_a_vanishing_bottleneck_is_an_arch_error():
    err = refused_quickly("use std\nnetwork n(input=3x8x8) {\n body = regnet(w0=24, wa=36, wm=2.5, depth=2, "
                          "group_width=8, bottleneck=1e-9, block=xblock)\n}")
    assert err.line == 3 and "bottleneck" in err.message
    err = refused_quickly("use std\nnetwork n(input=3x8x8) {\n body = regnet(w0=24, wa=36, wm=1.0, depth=2, "
                          "group_width=8, block=xblock)\n}")
    assert "wm must be > 1, got 1.0" in err.message


def test_7_non_utf8_text_is_an_arch_error_with_a_location(tmp_path):
    bad = tmp_path / "latin1.arch"
    bad.write_bytes(b"# caf\xe9\nnetwork n(input=3x8x8) { }\n")
    err = refused_quickly(bad)
    assert (err.line, err.column) == (1, 6) and "UTF-8" in err.message
    binary = tmp_path / "binary.arch"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "UTF-8" in refused_quickly(binary).message
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "blocks.arch").write_bytes(b"block b() { relu }\n# \xff\n")
    main = tmp_path / "main.arch"
    main.write_text("use lib\nnetwork n(input=3x8x8) {\n  body = b\n}\n")
    err = refused_quickly(main)
    assert err.file.endswith("blocks.arch") and err.line == 2
    with pytest.raises(ArchError):
        pycnn.compile(main)


def test_7_library_folders_hold_only_regular_files(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "blocks.arch").write_text("block b() { relu }\n")
    (lib / "folder.arch").mkdir()
    os.symlink("/dev/zero", lib / "zero.arch")
    os.mkfifo(lib / "fifo.arch")
    main = tmp_path / "main.arch"
    main.write_text("use lib\nnetwork n(input=3x8x8) {\n  body = b\n}\n")
    start = time.perf_counter()
    assert pycnn.parse(main).name == "n"
    assert time.perf_counter() - start < 2
    (tmp_path / "direct.arch").write_text("use lib.fifo\nnetwork n(input=3x8x8) { }\n")
    err = refused_quickly(tmp_path / "direct.arch")  # named directly: found as no file at all
    assert err.line == 1 and "cannot find library" in err.message


def test_7_huge_use_names_and_main_files_that_are_not_regular(tmp_path):
    err = refused_quickly("use " + "a" * 10_000 + "\nnetwork n(input=3x8x8) { }")  # too long for a file name
    assert err.line == 1 and "cannot find library" in err.message
    assert "limit" in refused_quickly("use " + "a" * 1_000_000 + "\nnetwork n(input=3x8x8) { }").message
    os.mkfifo(tmp_path / "fifo.arch")
    assert "not a regular file" in refused_quickly(tmp_path / "fifo.arch").message
    os.symlink("/dev/zero", tmp_path / "zero.arch")
    assert "not a regular file" in refused_quickly(tmp_path / "zero.arch").message
    assert "no such .arch file" in refused_quickly(tmp_path / "missing.arch").message


def test_8_size_limits_before_anything_is_allocated():
    err = refused_quickly("network n(input=(43589,)) { head = linear(43589) }")
    assert "parameter limit" in err.message
    err = refused_quickly("network n(input = 3x100000x100000) { head = gap }")
    assert "input of 3x100000x100000" in err.message and err.line == 1
    err = refused_quickly("network n(input = 3x2000x2000) {\n stem = conv(64, k=3) conv(64, k=3) conv(64, k=3) "
                          "conv(64, k=3) conv(64, k=3)\n}")
    assert "bytes per sample" in err.message and err.line == 2
    # overridable both ways
    assert pycnn.parse("network n(input = 3x100000x100000) { head = gap }",
                       limits=Limits(max_input_elements=10 ** 11, max_activation_bytes=10 ** 12)
                       ).input_shape == (3, 100000, 100000)
    refused_quickly("network n(input = 3x64x64) { head = flatten linear(10) }", limits=Limits(max_params=100))


# ---------------------------------------------------------------------------------------- 9: the kernel cache

def tiny_fused_model():
    model = pycnn.compile("network n(input = 4x6x6) {\n  body = dwconv(k=3) bn relu\n}", kernels="auto")
    return model.eval()


@pytest.mark.parametrize("content", ["[]", "null", '{"k": {}}', '{"k": []}', '{"k": {"choice": "bogus", '
                                     '"pycnn_ms": 1, "torch_ms": 2}}', "{", "\x00\x01"])
def test_9_cache_files_of_the_wrong_shape_are_ignored(tmp_path, monkeypatch, content):
    monkeypatch.setenv(dispatch.ENV_CACHE, str(tmp_path))
    dispatch._caches.clear()
    try:
        dispatch.cache_path().parent.mkdir(parents=True, exist_ok=True)
        dispatch.cache_path().write_text(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # whole-file problems warn; bad entries are dropped silently
            with torch.no_grad():
                tiny_fused_model()(torch.randn(1, 4, 6, 6))  # measures, records and writes a valid entry
            dispatch.flush_measurements()
        entries = json.loads(dispatch.cache_path().read_text())
        assert entries and all(dispatch._valid_entry(k, v) for k, v in entries.items())
    finally:
        dispatch._caches.clear()


def test_9_cache_writes_never_follow_planted_links(tmp_path, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_CACHE, str(tmp_path / "cache"))
    dispatch._caches.clear()
    path = dispatch.cache_path()
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # the old predictable temporary name, and the cache file itself, as links to a file outside the cache
    os.symlink(victim, path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    os.symlink(victim, path)
    cache = dispatch.KernelCache(path)
    with pytest.warns(UserWarning, match="expected a JSON object|Expecting value"):
        cache._read()
    cache.record("key", {"choice": "torch", "pycnn_ms": 1.0, "torch_ms": 0.5})
    cache.flush()
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and json.loads(path.read_text())["key"]["choice"] == "torch"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    dispatch._caches.clear()


def test_9_huge_and_fifo_caches_are_ignored_quickly(tmp_path):
    huge = tmp_path / "huge.json"
    entry = {"choice": "torch", "pycnn_ms": 1.0, "torch_ms": 0.5}
    huge.write_text(json.dumps({f"key{i}": entry for i in range(dispatch.MAX_CACHE_BYTES // 40)}))
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="larger than"):
        cache = dispatch.KernelCache(huge)
    for i in range(200):  # new entries are written in batches, not one rewrite each
        cache.record(f"new{i}", entry)
    cache.flush()
    assert time.perf_counter() - start < 2
    assert len(json.loads(huge.read_text())) == 200
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.warns(UserWarning, match="not a regular file"):
        assert dispatch.KernelCache(fifo).entries == {}


def _write_entries(path, prefix, n):
    cache = dispatch.KernelCache(Path(path))
    for i in range(n):
        cache.record(f"{prefix}{i}", {"choice": "pycnn", "pycnn_ms": 1.0, "torch_ms": 2.0})
        cache.flush()  # as often as possible: the worst case for lost updates


def test_9_concurrent_writers_lose_no_entries(tmp_path):
    path = tmp_path / "cache.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_entries, args=(str(path), p, 150)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(json.loads(path.read_text())) == 300


# ---------------------------------------------------------------------------------------- 10: fake kernels

def _bad_calls():
    x = torch.randn(2, 4, 6, 6)
    w_dw, w_g = torch.randn(4, 1, 3, 3), torch.randn(4, 2, 3, 3)
    return {
        "dwconv stride 3": lambda: torch.ops.pycnn.dwconv_forward(x, w_dw, None, None, None, [3, 3], [1, 1], [1, 1],
                                                                  "none"),
        "dwconv act bogus": lambda: torch.ops.pycnn.dwconv_forward(x, w_dw, None, None, None, [1, 1], [1, 1], [1, 1],
                                                                   "bogus"),
        "dwconv input too small": lambda: torch.ops.pycnn.dwconv_forward(
            x[:, :, :2, :2], torch.randn(4, 1, 7, 7), None, None, None, [1, 1], [0, 0], [1, 1], "none"),
        "dwconv padding 2**31": lambda: torch.ops.pycnn.dwconv_forward(x, w_dw, None, None, None, [1, 1],
                                                                       [2 ** 31, 2 ** 31], [1, 1], "none"),
        "gconv groups 0": lambda: torch.ops.pycnn.gconv_forward(x, w_g, None, None, None, [1, 1], [1, 1], 0, "none",
                                                                False),
        "gconv weight channels": lambda: torch.ops.pycnn.gconv_forward(x, torch.randn(4, 3, 3, 3), None, None, None,
                                                                       [1, 1], [1, 1], 2, "none", False),
        "integer input": lambda: torch.ops.pycnn.bn_act_forward(x.long(), None, None, None, None, None, True, 1e-5,
                                                                "relu"),
        "se weight shape": lambda: torch.ops.pycnn.se_forward(x, torch.randn(2, 5), None, torch.randn(4, 2), None, None,
                                                              "relu", "none"),
        "se empty plane": lambda: torch.ops.pycnn.se_forward(x[:, :, :0], torch.randn(2, 4), None, torch.randn(4, 2),
                                                             None, None, "relu", "none"),
        "bn_act backward act": lambda: torch.ops.pycnn.bn_act_backward(x, x, None, None, None, torch.zeros(4),
                                                                       torch.ones(4), True, 1e-5, "bogus"),
        "dwconv backward grad shape": lambda: torch.ops.pycnn.dwconv_backward(
            x[:, :, :3], x, w_dw, None, None, None, [1, 1], [1, 1], [1, 1], "none"),
    }


@pytest.mark.parametrize("name", list(_bad_calls()))
def test_10_fake_kernels_check_like_the_kernels(name):
    from torch._subclasses.fake_tensor import FakeTensorMode
    call = _bad_calls()[name]
    with pytest.raises(RuntimeError) as eager:
        call()
    message = str(eager.value).splitlines()[0]
    assert message.startswith("pycnn.")
    with pytest.raises(Exception) as fake:
        with FakeTensorMode(allow_non_fake_inputs=True):
            call()
    assert message in str(fake.value), (message, str(fake.value))


def test_10_compiled_models_get_the_same_message():
    def f(x, w):
        return ops.dwconv(x, w, stride=1, padding=1)

    x, w = torch.randn(1, 3, 4, 4), torch.randn(3, 1, 4, 4)  # even kernel: refused by the kernels
    with pytest.raises(RuntimeError) as eager:
        f(x, w)
    with pytest.raises(Exception) as compiled:
        torch.compile(f, backend="eager", fullgraph=True)(x, w)
    assert str(eager.value).splitlines()[0] in str(compiled.value)


# ---------------------------------------------------------------------------------------- 11-12: lines, CLI

@pytest.mark.parametrize("breaker", ["\f", "\u2028", "\r", "\v", "\x85"])
def test_11_error_lines_after_other_line_breaks(breaker):
    text = f"network n(input=3x8x8) {{  # a comment with a{breaker}break\n  head = gap\n  body = bogus\n}}\n"
    err = refused_quickly(text)
    assert err.line == 3 and err.source_line.strip() == "body = bogus"
    shown, caret = str(err).splitlines()[-2:]
    assert caret.index("^") == shown.index("bogus") and caret.strip() == "^^^^^"


def run_cli(capsys, *args):
    from pycnn.cli import main
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_12_cli_reads_paths_as_paths(capsys, tmp_path):
    code, out, err = run_cli(capsys, "check", "missing.txt")
    assert code == 1 and err.strip() == "no such .arch file: missing.txt"
    weird = tmp_path / "we{ird.arch"
    weird.write_text(TINY)
    code, out, err = run_cli(capsys, "check", str(weird))
    assert code == 0 and out.strip() == f"{weird}: ok (n)"


@pytest.mark.parametrize("args,expect", [
    (["bench", "model", "archs/lenet.arch", "--repeats", "0"], "--repeats: expected an integer >= 1"),
    (["bench", "model", "archs/lenet.arch", "--repeats", "-3"], "--repeats: expected an integer >= 1"),
    (["bench", "model", "archs/lenet.arch", "--batch", "0"], "--batch: expected an integer >= 1"),
    (["bench", "model", "archs/lenet.arch", "--batch", "-1"], "--batch: expected an integer >= 1"),
    (["bench", "model", "archs/lenet.arch", "--threads", "-1"], "--threads: expected an integer >= 1"),
    (["bench", "model", "archs/lenet.arch", "--device", "bogus"], "--device: not a device"),
    (["bench", "model", "archs/lenet.arch", "--device", "cuda:7"], "cuda:7 is not available"),
    (["bench", "model", "archs/lenet.arch", "--out", "README.md"], "--out: README.md exists and is not a folder"),
    (["bench", "model", "nosuch.arch"], "no such file: nosuch.arch"),
    (["bench", "model", "archs/lenet.arch", "--torchvision", "nosuch"], "--torchvision nosuch: no such torchvision"),
    (["bench", "ops", "--batch", "0"], "--batch: expected an integer >= 1"),
    (["bench", "ops", "--repeats", "0"], "--repeats: expected an integer >= 1"),
    (["summary", "archs/lenet.arch", "--input", "3x0x9"], "--input: expected a shape"),
    (["summary", "nosuch.arch"], "no such file: nosuch.arch"),
])
def test_12_bad_cli_arguments_are_one_line_with_status_2(capsys, monkeypatch, args, expect):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
    assert "Traceback" not in err


def test_12_bad_kernel_environment_and_mismatching_torchvision(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYCNN_KERNELS", "bogus")
    code, out, err = run_cli(capsys, "summary", "archs/lenet.arch")
    assert code == 2 and "$PYCNN_KERNELS" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("PYCNN_KERNELS")
    code, out, err = run_cli(capsys, "bench", "model", "archs/lenet.arch", "--torchvision", "resnet18",
                             "--repeats", "1", "--batch", "1")
    assert code == 2 and "does not have" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------- 13: momentum None

def test_13_cumulative_average_in_float64_matches_eager_exactly():
    bn = torch.nn.BatchNorm2d(3, momentum=None).double()
    from pycnn.nn import BatchNormAct2d
    ours = BatchNormAct2d(3, act="none", momentum=None).double()
    for step in range(5):
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        bn(x)
        ours(x)
    assert torch.equal(ours.num_batches_tracked, bn.num_batches_tracked)
    torch.testing.assert_close(ours.running_mean, bn.running_mean, rtol=0, atol=1e-15)
    torch.testing.assert_close(ours.running_var, bn.running_var, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------- 14-15: sizes

def test_15_source_text_is_capped():
    err = refused_quickly("network n(input = 3x8x8) { }\n" + "#" * 100_000 + "\n")
    assert "limit" in err.message
    assert pycnn.parse(TINY + "#" * 100_000, limits=Limits(max_source_bytes=1 << 20)).name == "n"
    # the worst texts below the caps: one long expression (refused before parsing, by its token count, and by
    # its length after parsing)
    assert "tokens" in refused_quickly("network n(input = 3x8x8) { let a = " + "1+" * 30_000 + "1 }").message
    long_expression = "network n(input = 3x8x8) { let a = " + "1+" * 2_000 + "1 }"
    assert "expression too long" in refused_quickly(long_expression).message


# ---------------------------------------------------------------------------------------- 16: API misuse

@pytest.mark.parametrize("source", [None, 123, b"network n(input = 3x8x8) { }", 1.5, ["a"]])
def test_16_compile_of_what_is_not_text_is_a_type_error(source):
    with pytest.raises(TypeError, match="source must be an .arch path or .arch text"):
        pycnn.compile(source)


def test_16_other_api_misuse_gets_messages():
    with pytest.raises(TypeError, match="network must be a network's name"):
        pycnn.compile(TINY, 3)
    with pytest.raises(TypeError, match="network must be"):
        pycnn.parse(TINY, network=123)
    with pytest.raises(ArchError, match=r"override input='3x9999.*: text longer than"):
        pycnn.parse(TINY, input="3x" + "9" * 5000)
    err = refused_quickly(TINY, input="abc")
    assert str(err) == "override input='abc': expected a shape or tuple like the default 3x8x8, got a name"
    err = refused_quickly("network n(input=3x8x8, classes=10) { head = gap }", classes="10")
    assert "Symbol" not in str(err) and str(err).startswith("override classes='10'")
    with pytest.raises(ArchError, match="finite"):
        pycnn.parse("network n(input=3x8x8, w=1.0) { head = gap }", w=float("inf"))
    err = refused_quickly("network n(input=3x8x8) {\n  let a = " + "(" * 500 + "1" + ")" * 500 + "\n}")
    assert err.line == 2 and "nested deeper" in err.message
    err = refused_quickly("network n(input=3x8x8) {\n  let a = " + "1 + " * 2000 + "1\n}")
    assert (err.line, err.column) == (2, 11) and "expression too long" in err.message


def test_16_state_dicts_that_are_not_state_dicts():
    model = pycnn.compile(TINY.replace("head = gap", "head = conv(4, k=1) bn"))
    good = model.state_dict()
    for bad, expect in [({**good, "head.conv1.weight": 3}, "is int, not a tensor"),
                        ({**good, "head.conv1.weight": None}, "is NoneType, not a tensor"),
                        ({**good, 7: torch.zeros(1)}, "key 7 is not a string"),
                        ({**good, "head.conv1.weight": good["head.conv1.weight"].to(torch.complex64)}, "complex")]:
        with pytest.raises(WeightMismatchError, match=expect):
            transfer_state_dict(bad, model, source_name="checkpoint")


# ---------------------------------------------------------------------------------------- 17: op messages

def test_17_op_arguments_are_named():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(RuntimeError, match="pycnn.dwconv: padding must be at most"):
        ops.dwconv(x, torch.randn(3, 1, 3, 3), padding=2 ** 31)
    with pytest.raises(RuntimeError, match="pycnn.gconv: padding must be at most"):
        ops.gconv(x, torch.randn(3, 3, 3, 3), padding=2 ** 31)
    with pytest.raises(TypeError, match="pycnn.dwconv: stride must be an int or a pair of ints, got 1.5"):
        ops.dwconv(x, torch.randn(3, 1, 3, 3), stride=1.5)
    with pytest.raises(ValueError, match="momentum=None .* needs num_batches_tracked"):
        ops.bn_act(x, None, None, torch.zeros(3), torch.ones(3), momentum=None)
