"""Every CPU kernel variant (csrc/cpu/isa_kernels.h: baseline, AVX2+FMA, AVX-512) the machine has, run on a
compact parity grid of each op (the same checks as the ops' own test files, which run under the best
variant only), switched in process through pycnn._C._set_cpu_isa; and PYCNN_CPU_ISA, the cap users set."""

import os
import subprocess
import sys

import pytest
import torch

import pycnn
from pycnn import _C

import test_bn_act
import test_dwconv
import test_gconv
import test_se

VARIANTS = ["baseline", "avx2", "avx512"]
ENV_CAPPED = bool(os.environ.get("PYCNN_CPU_ISA"))


def supported(variant):
    """Whether this CPU (within PYCNN_CPU_ISA) runs `variant`; leaves the variant as it was."""
    try:
        return _C._set_cpu_isa(variant) == variant
    finally:
        _C._set_cpu_isa("avx512")


@pytest.fixture(params=VARIANTS)
def variant(request):
    if not supported(request.param):
        pytest.skip(f"this CPU (or PYCNN_CPU_ISA) does not run the {request.param} kernels "
                    f"(best: {pycnn.build_info()['cpu_isa_best']})")
    assert _C._set_cpu_isa(request.param) == request.param
    assert pycnn.build_info()["cpu_isa"] == request.param
    yield request.param
    _C._set_cpu_isa("avx512")


def test_dwconv_variant(variant):
    # Register-blocked rows (k 3/5/7, stride 1/2, channel tails after 8 and 16 lanes) in both layouts...
    for i, case in enumerate(test_dwconv.REGISTER_BLOCKED_CASES):
        for layout in ("nchw", "channels_last"):
            test_dwconv.test_register_blocked_rows(case, layout, torch.float32, identity=(i % 2 == 0))
        test_dwconv.test_register_blocked_rows(case, "channels_last", torch.float64, identity=(i % 2 == 1))
    # ...the generic paths (dilation, k 1, asymmetric stride, strided inputs) and every activation...
    for i, case in enumerate(test_dwconv.CASES):
        layout = test_dwconv.LAYOUTS[i % 3]
        test_dwconv.test_matches_conv2d_groups(case, layout, test_dwconv.ACTS[i % 5], True, i % 2 == 0)
    for case in test_dwconv.NCHW_EDGE_CASES[:3]:
        test_dwconv.test_nchw_edges_float64(case, "silu", True, True)
    # ...and half precision (the widening loads and narrowing stores).
    for dtype in (torch.float16, torch.bfloat16):
        for layout in ("channels_last", "nchw"):
            test_dwconv.test_half_precision_rule_cpu(dtype, layout)


def test_bn_act_variant(variant):
    acts = ["none", "relu", "relu6", "silu"]
    for i, shape in enumerate(test_bn_act.SHAPES + test_bn_act.WIDE_SHAPES):
        for j, layout in enumerate(("nchw", "channels_last")):
            test_bn_act.test_matches_batchnorm2d_and_activation(shape, layout, acts[(i + j) % 4], (i + j) % 2 == 0,
                                                                i % 3 != 2)
    for dtype in (torch.float16, torch.bfloat16):
        test_bn_act.test_half_precision_rule_cpu(dtype)


def test_bn_act_channel_tails_variant(variant):
    # channels_last spans whose channel count is not a multiple of 16 (the avx512 variant's masked tails, the
    # others' scalar remainders; 15 is all tail, 47 two whole vectors and a tail; with 1 channel the tensor is
    # NCHW-contiguous too, so that case runs the NCHW kernels), every activation, with and without a residual,
    # in training (batch statistics: the sums' tails) and eval.
    acts = ["none", "relu", "relu6", "silu", "hardswish"]
    for i, c in enumerate((1, 15, 17, 47)):
        for j, act in enumerate(acts):
            for training in (True, False):
                test_bn_act.test_matches_batchnorm2d_and_activation((2, c, 3, 2), "channels_last", act,
                                                                    (i + j) % 2 == 0, training)
    # Half dtypes (widened into float spans) with a 7-channel tail; SiLU, smooth: at the kinks of relu and
    # hardswish a value rounded across the kink makes either side's half-precision error a whole gradient.
    for dtype in (torch.float16, torch.bfloat16):
        mine, theirs = test_bn_act.half_precision_errors(dtype, "cpu", "silu", shape=(2, 23, 3, 4))
        test_bn_act.assert_half_precision_rule(test_bn_act.HALF_NAMES, mine, theirs, dtype)


def test_bn_act_multi_pixel_spans_variant(variant):
    # Narrow channels_last layers run several pixels per span (bn_act_kernels.h, spans_of): 24 and 40 channels
    # take 12 and 8 pixels a span (whole vectors), 3 takes 96 (a tail); 297 and 70 pixels end with a partial
    # span; 264 channels take one pixel a span (a masked tail in avx512). Training (the sums over the spans' pixel copies) and eval.
    for i, shape in enumerate(((3, 24, 9, 11), (2, 40, 5, 7), (1, 3, 17, 19), (1, 264, 2, 2))):
        for training in (True, False):
            test_bn_act.test_matches_batchnorm2d_and_activation(shape, "channels_last", ("relu6", "silu")[i % 2],
                                                                (i + training) % 2 == 0, training)


def test_se_variant(variant):
    for i, shape in enumerate(test_se.SHAPES):
        for j, layout in enumerate(test_se.LAYOUTS):
            test_se.test_matches_eager_composition(shape, layout, ["relu", "silu"][(i + j) % 2],
                                                   ["none", "relu"][i % 2], (i + j) % 2 == 1)
    for layout in ("nchw", "channels_last"):
        test_se.test_wide_layers_both_excitation_paths((1, 300, 5, 7, 20), layout)
    for dtype in (torch.float16, torch.bfloat16):
        test_se.test_half_precision_rule_cpu(dtype)


# SE's passes over spans not a multiple of a vector: NCHW planes of 16 to 47 pixels (whole 8- and 16-lane
# vectors, partial ones) and channels_last pixels of 19 and 33 channels, with every post-activation. GCC 12's
# avx2 build of the backward gate sums once gave the upper 8 lanes of each 16 the lower 8 lanes' ReLU mask
# (NCHW, post relu: fc weight gradients wrong), which these catch under the avx2 cap.
SE_SPAN_SHAPES = [(2, 3, 4, 4, 2), (1, 5, 4, 6, 2), (2, 3, 3, 11, 2), (1, 19, 47, 1, 4), (2, 33, 2, 9, 5)]


def test_se_span_tails_variant(variant):
    for i, shape in enumerate(SE_SPAN_SHAPES):
        for layout in ("nchw", "channels_last"):
            for post in ("relu", "relu6", "silu", "hardswish", "none"):
                test_se.check_parity(shape, layout, "relu", post, i % 2 == 0)


def test_gconv_variant(variant):
    for i, case in enumerate(test_gconv.CASES):
        test_gconv.test_matches_conv2d_and_epilogue(case, test_gconv.LAYOUTS[i % 3],
                                                    test_gconv.EPILOGUES[i % len(test_gconv.EPILOGUES)])
    test_gconv.test_gradcheck_float64((1, 4, 8, 3, 3, 3, 1, 1, 1), "silu", "channels_last")
    for case in test_gconv.NAN_CASES:  # NaN through the packed kernel of this variant's width, and the per-group one
        for where in ("input", "grad_output"):
            test_gconv.test_nan_propagates_as_in_pytorch(case, where)
    for dtype in (torch.float16, torch.bfloat16):
        test_gconv.test_half_precision_rule_cpu(dtype)


def test_build_info_names_the_variant_and_cpu_flags():
    info = pycnn.build_info()
    assert info["cpu_isa"] in VARIANTS and info["cpu_isa_best"] in VARIANTS
    assert VARIANTS.index(info["cpu_isa"]) <= VARIANTS.index(info["cpu_isa_best"])
    assert isinstance(info["cpu_flags"], list)
    if not ENV_CAPPED:
        assert info["cpu_isa"] == info["cpu_isa_best"]
    if info["cpu_isa_best"] == "avx512":
        assert "avx512f" in info["cpu_flags"]


def _run_with_env(value, code):
    env = dict(os.environ, PYCNN_CPU_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_env_caps_the_variant():
    best = pycnn.build_info()["cpu_isa_best"]
    r = _run_with_env("baseline", "import pycnn, torch; print(pycnn.build_info()['cpu_isa']); "
                                  "print(pycnn._C._set_cpu_isa('avx512'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["baseline", "baseline"]  # the environment's cap holds against the setter
    r = _run_with_env("avx512", "import pycnn; print(pycnn.build_info()['cpu_isa'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == best  # a cap above the CPU runs the CPU's best


def test_env_bad_value_is_a_clear_error():
    r = _run_with_env("avx1024", "import pycnn, torch\n"
                                 "x = torch.randn(1, 4, 3, 3)\n"
                                 "torch.ops.pycnn.bn_act_forward(x, None, None, None, None, None, True, 1e-5, 'relu')")
    assert r.returncode != 0
    assert "PYCNN_CPU_ISA must be one of baseline, avx2, avx512" in r.stderr and "avx1024" in r.stderr


def test_bench_ops_times_the_variants_side_by_side(capsys):
    from pycnn.bench import ops
    shapes = ops.load_shapes([(ops.QUICK_ARCH, None)])
    shapes["bn_act"] = shapes["bn_act"][:1]
    wanted = [v for v in ("baseline", "avx2") if supported(v)]
    rows = ops.run("bn_act", torch.device("cpu"), None, 1, [2], shapes, False, cpu_isas=wanted)
    assert rows and all(r["cpu_isa"] == wanted[-1] for r in rows)
    for v in wanted if len(wanted) > 1 else []:
        assert all(r[f"pycnn_ms_{v}"] > 0 and r[f"speedup_{v}"] > 0 for r in rows)
    assert f"CPU kernels: {', '.join(wanted)}" in capsys.readouterr().out
    assert pycnn.build_info()["cpu_isa"] == pycnn.build_info()["cpu_isa_best"] or ENV_CAPPED  # reset after the run


def test_summary_with_kernels_names_the_variant():
    r = _run_with_env("baseline", "from pycnn.cli import main; main(['summary', 'archs/regnetx32.arch', "
                                  "'--kernels', 'pycnn'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("total: ")  # the table on stdout, the note on stderr
    assert r.stderr.splitlines()[-1].startswith("CPU kernels: baseline variant (best on this CPU: "), r.stderr


# Channel and pixel counts not a multiple of 16 (nor 8) through the kernels' vector loops, whose last partial
# vector is masked in avx512 and lane by lane elsewhere: NCHW dwconv planes of 17 to 33 columns (the
# epilogue, dz and its sums, the input copies and dx), gconv group widths of 19, 33 and 66 channels (a
# partial register tile in the forward, input- and weight-gradient stores and the epilogue).
DWCONV_NCHW_TAIL_CASES = [(1, 3, 5, 17, 3, 1, 1, 1), (2, 2, 7, 19, 5, 1, 2, 1), (1, 2, 9, 33, 3, 2, 1, 1)]
GCONV_TAIL_CASES = [(1, 38, 38, 3, 5, 3, 1, 1, 2), (1, 33, 66, 2, 3, 3, 1, 1, 1)]


def test_vector_tails_variant(variant):
    for i, case in enumerate(DWCONV_NCHW_TAIL_CASES):
        for j, act in enumerate(("relu", "silu", "none", "hardswish")):
            test_dwconv.test_matches_conv2d_groups(case, "nchw", act, (i + j) % 2 == 0, j % 2 == 0)
        test_dwconv.test_register_blocked_rows(case, "nchw", torch.float32, identity=i % 2 == 0)
    for case in GCONV_TAIL_CASES:
        for epilogue in test_gconv.EPILOGUES:
            test_gconv.test_matches_conv2d_and_epilogue(case, "channels_last", epilogue)


# The stride-2 copies of the NCHW dwconv kernels as whole vectors over spans of two vectors (32 floats in avx512,
# 16 in avx2): every other input column into a phase plane (the forward and the backward's recomputed conv), the
# two column phases of dx interleaved back. Widths of one and two spans with tails of 1, 6, 15 (the second vector
# untouched) and 29 (both partial) values and none (64), column padding 0, 1 and 2 (which phase holds the even
# columns); stride 2 along the rows only runs the unit-stride copies and packs 38-column rows (pack_rows).
DWCONV_STRIDE2_CASES = [(1, 2, 5, 33, 3, 2, 1, 1), (2, 3, 4, 70, 3, 2, 1, 1), (1, 2, 3, 47, 5, 2, 2, 1),
                        (1, 2, 3, 61, 3, 2, 0, 1), (1, 3, 5, 64, 3, (1, 2), 1, 1), (1, 2, 7, 38, 3, (2, 1), 1, 1)]


def test_dwconv_stride2_copies_variant(variant):
    for i, case in enumerate(DWCONV_STRIDE2_CASES):
        for j, act in enumerate(("relu6", "none", "silu")):
            test_dwconv.test_matches_conv2d_groups(case, "nchw", act, (i + j) % 2 == 0, j != 1)
    # Half precision: the widening loads under the stride-2 shuffles, a row with a partial span.
    for dtype in (torch.float16, torch.bfloat16):
        mine, theirs = test_dwconv.half_precision_errors(dtype, "cpu", case=(1, 3, 5, 47, 3, 2, 1, 1), layout="nchw")
        test_dwconv.assert_half_precision_rule(test_dwconv.NAMES, mine, theirs, dtype)


# gconv tiles narrower than a register (avx512: 16 floats; avx2: 8): T = 2, 4 and 8 output (forward, weight
# gradient) or input (input gradient) channels, whole (2 and 4 channels a group: one store of T lanes) and partial
# (3, 5 and 6: masked in avx512, lane by lane elsewhere), with every epilogue.
GCONV_NARROW_CASES = [(1, 12, 24, 3, 5, 3, 1, 1, 4), (2, 20, 12, 4, 3, 3, 2, 1, 4), (1, 8, 8, 3, 4, 3, 1, 1, 2),
                      (1, 6, 4, 3, 3, 3, 1, 1, 2)]


def test_gconv_narrow_tiles_variant(variant):
    for i, case in enumerate(GCONV_NARROW_CASES):
        for epilogue in test_gconv.EPILOGUES:
            test_gconv.test_matches_conv2d_and_epilogue(case, ("channels_last", "nchw")[i % 2], epilogue)


def test_kernels_run_on_torchs_threads():
    # at::parallel_for is a header template over `#pragma omp parallel`: a build without OpenMP ran every CPU
    # kernel on one thread whatever torch.set_num_threads said (CMakeLists.txt links OpenMP::OpenMP_CXX).
    from pycnn import _C
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _C._parallel_threads() == 2
    finally:
        torch.set_num_threads(previous)
