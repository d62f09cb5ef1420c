"""Property-based fuzzing: random and mutated .arch texts give a parsed network or an ArchError, never another
exception, a hang (> 2 s) or a huge allocation (limits refuse big networks before anything is allocated; the
process's memory is checked after each case)."""
import glob
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pycnn
from pycnn import ArchError, ir
from pycnn.dsl.elaborate import Limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [open(f).read() for f in sorted(glob.glob(os.path.join(ROOT, "archs", "*.arch")))]
SOURCES += [open(f).read() for f in sorted(glob.glob(os.path.join(ROOT, "archs", "std", "*.arch")))]

TOKENS = ["network", "block", "use", "std", "stage", "let", "main", "branch", "shortcut", "when", "merge", "add",
          "concat", "mul", "if", "else", "repeat", "x", "stride", "in", "and", "or", "not", "true", "false",
          "input", "classes", "=", "==", "!=", "<", ">", "(", ")", "{", "}", ",", "?", ":", "+", "-", "*", "/",
          "//", "%", "**", "conv", "bn", "relu", "linear", "flatten", "avgpool", "maxpool", "se", "dwconv",
          "xblock", "regnet", "round", "make_divisible", "k", "s", "p", "groups", "0", "1", "2", "3", "7", "64",
          "1000000", "1e300", "3x224x224", "1x8x8", "0x3x3", "0.5", "\n", " ", "#c\n", "\"s\"",
          # the classes of hostile input of issue 16: other line breaks, deep brackets, long expressions, big
          # rounding, repeats of work, huge shapes
          "\f", "\r", "\u2028", "\x85", "(" * 70, "{" * 70, "1+" * 120, "- " * 300, "round(1, -1000000000000)",
          "repeat 99999", "99999 x", "3x100000x100000", "(43589,)", "bottleneck=1e-9"]

LIMITS = Limits(max_params=50_000_000, max_activations=20_000_000, max_layers=5_000)
pycnn.parse("network warm(input = 3x8x8) { }")  # builds the parser once: the time bound below is per text


def check(text):
    start, memory = time.perf_counter(), rss_mb()
    try:
        net = pycnn.parse(text, file="fuzz.arch", limits=LIMITS)
    except ArchError as e:
        str(e)  # the message formats
    else:
        assert isinstance(net, ir.NetworkIR)
        assert net.total_params <= LIMITS.max_params
    assert time.perf_counter() - start < 2.0
    assert rss_mb() - memory < 256, "a case kept more than 256 MB"


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """The process's resident memory now (the peak, ru_maxrss, would include every earlier test file's)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_random_token_streams(tokens):
    check(" ".join(tokens))


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


@st.composite
def mutated_source(draw):
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = min(len(text), i + draw(st.integers(0, 12)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "number", "duplicate"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + " " + draw(st.sampled_from(TOKENS)) + " " + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[j:]
        elif kind == "number":
            text = text[:i] + str(draw(st.integers(-10 ** 6, 10 ** 9))) + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@FUZZ
@given(mutated_source())
def test_mutated_arch_files(text):
    check(text)


def test_pathological_inputs():
    refused = [
        "network n(input = 3x8x8) {\n    stem = repeat 1000000000 { }\n}",
        "network n(input = 3x8x8) {\n    let a = 9 ** 9 ** 9\n}",
        "block a() { b b }\nblock b() { c c }\nblock c() { d d }\nblock d() { e e }\nblock e() { f f }\n"
        "block f() { g g }\nblock g() { h h }\nblock h() { i i }\nblock i() { j j }\nblock j() { k k }\n"
        "block k() { l l }\nblock l() { m m }\nblock m() { n n }\nblock n() { }\n"
        "network net(input = 3x8x8) {\n    body = a\n}",
        "network n(input = 3x8x8) {\n    let a = " + "-" * 5000 + "1\n}",
        "network n(input = 3x100000x100000) {\n    stem = conv(64, k=3)\n}",
        "network n(input = 3x8x8) {\n    stem = flatten linear(1000000000)\n}",
        "use std\nnetwork n(input = 3x8x8) {\n    body = regnet(w0=8, wa=1, wm=2, depth=1000000000, "
        "group_width=8, block=xblock)\n}",
        "network n(input = 3x8x8) {\n    let a = (-8) ** 0.5\n}",
        "network n(input = 3x8x8) {\n    let a = 1e300\n}",
        "network a = a()\n",
    ]
    for text in refused:
        check(text)
        try:
            pycnn.parse(text, limits=LIMITS)
        except ArchError:
            continue
        raise AssertionError(f"accepted: {text[:80]}")
    deep_parentheses = "network n(input = 3x8x8) {\n    let a = " + "(" * 2000 + "1" + ")" * 2000 + "\n}"
    check(deep_parentheses)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_a_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "fuzz.arch"
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        pycnn.parse(path, limits=LIMITS)
    except ArchError as e:
        str(e)
    assert time.perf_counter() - start < 2.0

