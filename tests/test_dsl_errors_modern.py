"""Golden tests of the errors of issue 18: the instantiation trace of an error inside a block, an unclosed
bracket reported where it opened, keywords as names, conditions that are not true/false, a default padding
that is not whole, compile-time overrides checked as overrides, libraries parsed whole."""
import os

import pytest
from golden_errors import check_error_message

import pycnn
from pycnn import ArchError

CASES = {
    "trace": (
        """\
        block inner(w) {
            conv(w, k=3, groups=3) bn relu
        }
        block outer(w) {
            main { inner(w) conv(w, k=1) }
            shortcut {}
            merge add
        }
        network n(input = 3x32x32) {
            stem = conv(16, k=3)
            stage s1 = 2 x outer(16)
        }""",
        """\
        trace.arch:2:25: conv: groups=3 does not divide the 16 input channels
                conv(w, k=3, groups=3) bn relu
                                    ^
          in block 'inner' (instance s1.b1.inner1) instantiated at trace.arch:5:12
          in block 'outer' (instance s1.b1) instantiated at trace.arch:11:20"""),
    "unclosed_before_network": (
        """\
        network a(input = 3x8x8) {
            stem = conv(4)

        network b(input = 3x8x8) {
            stem = conv(4)
        }""",
        """\
        unclosed_before_network.arch:1:26: '{' is never closed: a new `network` starts at line 4 while it is open (add '}')
            network a(input = 3x8x8) {
                                     ^"""),
    "unclosed_at_end": (
        """\
        network a(input = 3x8x8) {
            stem = conv(4)
        """,
        """\
        unclosed_at_end.arch:1:26: '{' is never closed: the file ends while it is open (add '}')
            network a(input = 3x8x8) {
                                     ^"""),
    "keyword_parameter": (
        """\
        block b(w, in=3) { conv(w) }
        network n(input = 3x8x8) { stem = b(4) }""",
        """\
        keyword_parameter.arch:1:12: 'in' is a keyword and cannot name a parameter
            block b(w, in=3) { conv(w) }
                       ^^"""),
    "number_condition": (
        """\
        network n(input = 3x8x8, se = 8) {
            stem = conv(8) if se { se(2) }
        }""",
        """\
        number_condition.arch:2:23: a condition must be true or false, got 8 (compare it: like `x != 0` or `x > 0`)
                stem = conv(8) if se { se(2) }
                                  ^^"""),
    "fractional_padding": (
        """\
        network n(input = 3x8x8) {
            stem = conv(8, k=4)
        }""",
        """\
        fractional_padding.arch:2:22: conv: the default padding d*(k-1)/2 is not a whole number for k=4x4 d=1x1; give p (p=0, a pair, or p=same for TensorFlow's SAME)
                stem = conv(8, k=4)
                                 ^"""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_message(name):
    check_error_message(name, *CASES[name])


def test_trace_leads_from_the_library_to_the_users_line():
    text = "use std\nnetwork n(input = 3x32x32) {\n    stem = conv(16, k=3)\n    stage s1 = 2 x basic(16)\n" \
           "    stage s2 = 2 x basic(16 - 32) stride 2\n}\n"
    with pytest.raises(ArchError) as info:
        pycnn.parse(text, file="user.arch")
    lines = str(info.value).splitlines()
    assert lines[0].split(":")[0].endswith(os.path.join("std", "resnet.arch"))
    assert lines[0].endswith("width reaches -16; out must be at least 1")
    assert lines[-1] == "  in block 'basic' (instance s2.b1) instantiated at user.arch:5:20"


def test_a_condition_when_must_be_boolean_too():
    text = "block b(w) { main { conv(w) } shortcut when 1 { conv(w) } merge add }\n" \
           "network n(input = 3x8x8) { stem = b(4) }"
    with pytest.raises(ArchError, match=r"a condition must be true or false, got 1"):
        pycnn.parse(text)
    assert pycnn.parse(text.replace("when 1", "when 1 > 0")).out_shape == (4, 8, 8)


def test_keyword_let_is_refused():
    with pytest.raises(ArchError, match="'true' is a keyword and cannot name a `let`"):
        pycnn.parse("network n(input = 3x8x8) {\n    let true = 3\n    stem = conv(4)\n}")


OVERRIDDEN = "network n(input = 3x32x32, classes = 10, width = 8) { stem = conv(width) head = avgpool flatten " \
             "linear(classes) }"


@pytest.mark.parametrize("override,message", [
    (dict(input="abc"), "override input='abc': expected a shape or tuple like the default 3x32x32, got a name"),
    (dict(classes="10"), "override classes='10': expected a number like the default 10, got a name"),
    (dict(classes=0), "override classes=0: classes must be an integer >= 1, got 0"),
    (dict(width="wide"), "override width='wide': expected a number like the default 8, got a name"),
    (dict(input=(3, 0, 4)), "override input=(3, 0, 4): input must be a shape like 3x224x224 with sizes >= 1, "
                            "got 3x0x4"),
])
def test_overrides_are_checked_as_overrides(override, message):
    with pytest.raises(ArchError) as info:
        pycnn.parse(OVERRIDDEN, **override)
    assert str(info.value) == message
    assert pycnn.parse(OVERRIDDEN, input=(3, 16, 16), classes=5, width=4.0).out_shape == (5,)


def test_a_used_library_is_parsed_whole(tmp_path):
    (tmp_path / "lib.arch").write_text("block ok(w) { conv(w) }\nblock broken(w) { conv(w }\n")
    (tmp_path / "main.arch").write_text("use lib\nnetwork n(input = 3x8x8) { stem = conv(4) }\n")
    with pytest.raises(ArchError) as info:
        pycnn.parse(str(tmp_path / "main.arch"))
    assert str(info.value).startswith(f"{tmp_path / 'lib.arch'}:2:26: unexpected '}}'")
    (tmp_path / "lib.arch").write_text("block ok(w) { conv(w) }\nblock fixed(w) { conv(w) }\n")
    assert pycnn.parse(str(tmp_path / "main.arch")).out_shape == (4, 8, 8)


@pytest.mark.parametrize("body,message", [
    ("main { conv(w) } shortcut {} merge add merge add",
     "a second merge: a block has one merge (the first is at line 1)"),
    ("main { conv(w) } merge add shortcut {}", "a branch after the merge (line 1): every branch comes before the merge"),
])
def test_merges_and_branches_out_of_place(body, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pycnn.parse(f"block b(w) {{ {body} }}\nnetwork n(input = 3x8x8) {{ stem = conv(4) b(4) }}")


@pytest.mark.parametrize("args,key,message", [
    ("w0=24, wa=36.44, wm=1.0", "wm=1.0", "regnet: wm must be > 1, got 1.0"),
    ("w0=20, wa=36.44, wm=2.0", "w0=20", "regnet: w0 must be a positive multiple of 8, got 20"),
    ("w0=24, wa=-1, wm=2.0", "wa=-1", "regnet: wa must be >= 0, got -1"),
])
def test_generator_arguments_named_individually(args, key, message):
    line = f"network n(input = 3x224x224) {{ body = regnet({args}, depth=13, group_width=8, block=xblock) }}"
    with pytest.raises(ArchError) as info:
        pycnn.parse("use std\n" + line, file="g.arch")
    column = line.index(key) + len(key.split("=")[0]) + 2
    assert str(info.value).splitlines()[0] == f"g.arch:2:{column}: {message}"


def test_a_missing_name_says_where_use_looked():
    with pytest.raises(ArchError) as info:
        pycnn.parse("use std\nnetwork n(input = 3x8x8) {\n    body = frobnicate(8)\n}\n", file="u.arch")
    first = str(info.value).splitlines()[0]
    assert first.startswith("u.arch:3:12: unknown layer or block 'frobnicate'; searched `use std` = ")
    assert first.endswith(os.path.join("archs", "std") + "/")


def test_a_local_std_shadowing_the_packages_is_warned(tmp_path):
    (tmp_path / "std").mkdir()
    (tmp_path / "std" / "mine.arch").write_text("block basic(w, stride=1) { conv(w, k=3, s=stride) }\n")
    (tmp_path / "net.arch").write_text("use std\nnetwork n(input = 3x8x8) { stage s1 = 1 x basic(4) }\n")
    with pytest.warns(UserWarning, match=r"`use std` found .*std/ next to the file, not the package's"):
        net = pycnn.parse(str(tmp_path / "net.arch"))
    assert net.total_params == 4 * 3 * 9  # the local one was used
    (tmp_path / "other.arch").write_text("use mylib\nnetwork n(input = 3x8x8) { stem = conv(4) }\n")
    (tmp_path / "mylib.arch").write_text("block b(w) { conv(w) }\n")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a local library the package does not have: no warning
        pycnn.parse(str(tmp_path / "other.arch"))
