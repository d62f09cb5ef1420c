"""Fuzzing the other untrusted inputs of issue 16: command-line arguments and kernel-choice cache files.

Arguments: any list of words is parsed into a command or refused in one line with exit status 2 (never another
exception). Cache files: any bytes or JSON value is read into valid entries or ignored with a warning.
"""
import json
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycnn import dispatch
from pycnn.cli import build_parser

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
WORDS = ["summary", "check", "bench", "ops", "model", "archs/lenet.arch", "nosuch.arch", "README.md", "--network",
         "--input", "--classes", "--kernels", "--batch", "--repeats", "--threads", "--device", "--out", "--layout",
         "--dtype", "--torchvision", "--op", "--arch", "auto", "torch", "pycnn", "bogus", "cpu", "cuda", "cuda:7",
         "meta", "0", "-1", "1", "3", "1.5", "1e9", "99999999999999", "3x224x224", "3x0x9", "x", "", "fp16", "nchw",
         "both", "resnet18", "-", "--", "\x00", "é", "a" * 300]


@FUZZ
@given(st.lists(st.sampled_from(WORDS), max_size=8))
def test_any_arguments_parse_or_exit_2_in_one_line(capsys, words):
    parser = build_parser()
    try:
        parser.parse_args(words)
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code in (0, 2), (words, e.code)
        if e.code == 2:
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (words, err)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                      max_size=4), max_leaves=20)


@FUZZ
@given(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.text(max_size=30), JSON_VALUES, max_size=5).map(lambda v: json.dumps(v).encode()),
                 st.binary(max_size=200)))
def test_any_cache_file_is_read_into_valid_entries(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cache") / "kernels.json"
    path.write_bytes(data)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = dispatch.KernelCache(path)
        cache.record("new", {"choice": "pycnn", "pycnn_ms": 1.0, "torch_ms": 2.0})
        cache.flush()
    assert all(dispatch._valid_entry(k, v) for k, v in cache.entries.items())
    assert json.loads(path.read_text())["new"]["choice"] == "pycnn"
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("entry", [{}, [], None, {"choice": "torch"}, {"choice": "torch", "pycnn_ms": "1",
                                                                          "torch_ms": 1}, {"choice": 1, "pycnn_ms": 1,
                                                                                           "torch_ms": 1}])
def test_invalid_entries_are_dropped(tmp_path, entry):
    path = tmp_path / "kernels.json"
    good = {"choice": "torch", "pycnn_ms": 2.0, "torch_ms": 1.0}
    path.write_text(json.dumps({"bad": entry, "good": good}))
    assert dispatch.KernelCache(path).entries == {"good": good}
