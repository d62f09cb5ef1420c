"""Golden tests of error messages: file:line:column, the message, the source line and the caret."""

import pytest
from golden_errors import check_error_message

import pycnn
from pycnn import ArchError

CASES = {
    "unknown_block": (
        """\
        use std
        network n(input = 3x32x32) {
            stage s1 = 2 x xblok(32) stride 2
        }""",
        """\
        unknown_block.arch:3:20: unknown block 'xblok' (did you mean 'xblock'?)
                stage s1 = 2 x xblok(32) stride 2
                               ^^^^^"""),
    "unknown_layer": (
        """\
        network n(input = 3x32x32) {
            stem = conv(32, k=3) bn rleu
        }""",
        """\
        unknown_layer.arch:2:29: unknown layer or block 'rleu' (did you mean 'relu'?)
                stem = conv(32, k=3) bn rleu
                                        ^^^^"""),
    "unknown_name": (
        """\
        network n(input = 3x32x32, width = 16) {
            stem = conv(widht * 2, k=3)
        }""",
        """\
        unknown_name.arch:2:17: unknown name 'widht' (did you mean 'width'?)
                stem = conv(widht * 2, k=3)
                            ^^^^^"""),
    "unknown_keyword": (
        """\
        network n(input = 3x32x32) {
            stem = conv(32, k=3, strides=2)
        }""",
        """\
        unknown_keyword.arch:2:26: conv has no parameter 'strides' (did you mean 's'?); its parameters: out, k, s, p, d, groups, group_width, bias
                stem = conv(32, k=3, strides=2)
                                     ^^^^^^^"""),
    "missing_argument": (
        """\
        network n(input = 3x32x32) {
            head = flatten linear
        }""",
        """\
        missing_argument.arch:2:20: linear needs the argument 'out'
                head = flatten linear
                               ^^^^^^"""),
    "too_many_arguments": (
        """\
        block b(w) { conv(w) }
        network n(input = 3x32x32) {
            body = b(16, 2)
        }""",
        """\
        too_many_arguments.arch:3:18: block 'b' takes at most 1 positional argument, got 2
                body = b(16, 2)
                             ^"""),
    "groups": (
        """\
        network n(input = 3x32x32) {
            stem = conv(32) conv(30, k=3, groups=4)
        }""",
        """\
        groups.arch:2:42: conv: groups=4 does not divide the 30 output channels
                stem = conv(32) conv(30, k=3, groups=4)
                                                     ^"""),
    "group_width": (
        """\
        network n(input = 3x32x32) {
            stem = conv(24) conv(24, k=3, group_width=16)
        }""",
        """\
        group_width.arch:2:47: conv: group_width=16 does not divide the 24 input channels
                stem = conv(24) conv(24, k=3, group_width=16)
                                                          ^^"""),
    "width_zero": (
        """\
        block shrink(w) { conv(w - 32, k=1) }
        network n(input = 3x32x32) {
            body = shrink(32)
        }""",
        """\
        width_zero.arch:1:24: conv: width reaches 0; out must be at least 1
            block shrink(w) { conv(w - 32, k=1) }
                                   ^^^^^^
          in block 'shrink' (instance body.shrink1) instantiated at width_zero.arch:3:12"""),
    "spatial_zero": (
        """\
        network n(input = 3x8x8) {
            stem = conv(16, k=3, s=2) conv(16, k=3, s=2) conv(16, k=3, s=2, p=0)
        }""",
        """\
        spatial_zero.arch:2:50: conv: spatial size reaches zero: conv k=3x3 s=2x2 p=0x0 on 16x2x2 gives 0x0
                stem = conv(16, k=3, s=2) conv(16, k=3, s=2) conv(16, k=3, s=2, p=0)
                                                             ^^^^^^^^^^^^^^^^^^^^^^^"""),
    "merge_mismatch": (
        """\
        block bad(w) {
            main { conv(w, k=3, s=2) }
            shortcut { }
            merge add
        }
        network n(input = 16x32x32) {
            body = bad(16)
        }""",
        """\
        merge_mismatch.arch:4:5: merge add: cannot add branches of different shapes (main 16x16x16; shortcut 16x32x32)
                merge add
                ^^^^^^^^^
          in block 'bad' (instance body.bad1) instantiated at merge_mismatch.arch:7:12"""),
    "recursion": (
        """\
        block a(w) { b(w) }
        block b(w) { conv(w) a(w) }
        network n(input = 3x32x32) {
            body = a(8)
        }""",
        """\
        recursion.arch:2:22: recursion: block 'a' calls itself (a -> b -> a)
            block b(w) { conv(w) a(w) }
                                 ^
          in block 'b' (instance body.a1.b1) instantiated at recursion.arch:1:14
          in block 'a' (instance body.a1) instantiated at recursion.arch:4:12"""),
    "out_of_range": (
        """\
        network n(input = 3x32x32) {
            head = flatten dropout(1.5) linear(10)
        }""",
        """\
        out_of_range.arch:2:28: dropout: p must be between 0 and 1, got 1.5
                head = flatten dropout(1.5) linear(10)
                                       ^^^"""),
    "stage_count": (
        """\
        use std
        network n(input = 3x32x32, depth = 0) {
            stage s1 = depth x xblock(32)
        }""",
        """\
        stage_count.arch:3:16: a stage needs an integer number of blocks >= 1, got 0
                stage s1 = depth x xblock(32)
                           ^^^^^"""),
    "syntax": (
        """\
        network n(input = 3x32x32) {
            stem = conv(32, k=3 bn relu
        }""",
        """\
        syntax.arch:2:25: unexpected 'bn'; expected ')', ','
                stem = conv(32, k=3 bn relu
                                    ^^"""),
    "linear_needs_flatten": (
        """\
        network n(input = 3x32x32) {
            head = avgpool linear(10)
        }""",
        """\
        linear_needs_flatten.arch:2:20: linear needs a flat input; got 3x1x1 (add `flatten` before it)
                head = avgpool linear(10)
                               ^^^^^^^^^^"""),
    "param_limit": (
        """\
        network n(input = 3x32x32) {
            head = flatten linear(100000000)
        }""",
        """\
        param_limit.arch:2:20: the network exceeds the parameter limit: more than 500,000,000 parameters
                head = flatten linear(100000000)
                               ^^^^^^^^^^^^^^^^^"""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_message(name):
    check_error_message(name, *CASES[name])


def test_unknown_override_suggests():
    with pytest.raises(ArchError, match=r"network 'resnet18' has no parameter 'clases' \(did you mean 'classes'\?\)"):
        pycnn.parse("archs/resnet.arch", clases=10)


def test_unknown_network_suggests():
    with pytest.raises(ArchError, match=r"no network named 'resnet5' \(did you mean 'resnet50'\?\)"):
        pycnn.parse("archs/resnet.arch", "resnet5")


def test_activation_limit_is_configurable():
    from pycnn.dsl.elaborate import Limits
    text = "network n(input = 3x64x64) {\n    stem = conv(64, k=3)\n}"
    assert pycnn.parse(text).out_shape == (64, 64, 64)
    with pytest.raises(ArchError, match="exceeds the limit of 100,000"):
        pycnn.parse(text, limits=Limits(max_activations=100_000))
