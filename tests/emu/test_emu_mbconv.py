"""The mbconv CUDA kernel (csrc/cuda/mbconv.cu, with SE through pycnn.se's kernels), run on the CPU by the
emulator, against the unfused PyTorch composition (tests/kernel_checks.py: float64 within 1e-9, float32 within
4x PyTorch's float32 error, float16/bfloat16 by the half-precision rule)."""

import pytest
import torch
from kernel_checks import assert_mbconv_matches_reference

# (C, E, C_out, k, stride, residual, act, H, W), SE reduced channels (0: none), SE act, dtype.
CASES = [
    ((24, 144, 24, 3, 1, True, "relu6", 5, 6), 0, "relu", torch.float64),      # MobileNetV2, residual
    ((16, 96, 24, 3, 2, False, "relu6", 7, 8), 0, "relu", torch.float32),      # stride 2, even size
    ((32, 32, 16, 3, 1, False, "relu6", 6, 5), 0, "relu", torch.float32),      # no expand (t = 1)
    ((7, 21, 5, 5, 2, False, "hardswish", 11, 19), 0, "relu", torch.float64),  # tiles with tails both ways, odd E
    ((8, 72, 8, 7, 1, True, "silu", 9, 10), 0, "relu", torch.float32),         # k 7, E = 2 chunks + a tail
    ((9, 9, 5, 5, 1, False, "relu", 3, 2), 0, "relu", torch.float64),          # no expand, H/W < k
    ((3, 17, 3, 3, 2, False, "none", 1, 1), 0, "relu", torch.float32),         # one pixel
    ((16, 96, 24, 3, 2, False, "silu", 9, 8), 4, "silu", torch.float64),       # EfficientNet with SE
    ((24, 144, 24, 3, 1, True, "silu", 5, 16), 6, "silu", torch.float32),      # SE + residual, 2 tiles wide
    ((9, 9, 9, 3, 1, True, "relu", 4, 4), 1, "none", torch.float32),           # SE, no expand, one reduced channel
    ((7, 21, 5, 5, 1, False, "relu6", 6, 19), 3, "hardswish", torch.float64),
    ((16, 64, 16, 3, 1, True, "relu6", 6, 7), 0, "relu", torch.float16),
    ((16, 48, 24, 5, 2, False, "silu", 7, 9), 4, "silu", torch.bfloat16),
    ((24, 72, 16, 3, 1, False, "silu", 5, 5), 6, "relu", torch.float16),
]


def run_emulated(mod, sms=2):
    def run(x, expand, dw, project, stride, act, residual, se, se_act):
        se = se if se is not None else (None,) * 4
        return mod.mbconv.forward(x, *expand, *dw, *project, stride, act, residual, *se, se_act, sms)
    return run


def _id(case):
    block, reduced, se_act, dtype = case
    return "-".join(map(str, block)) + (f"-se{reduced}-{se_act}" if reduced else "") + "-" + str(dtype)[6:]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_mbconv_kernel_matches_pytorch(emu, case):
    block, reduced, se_act, dtype = case
    assert_mbconv_matches_reference(run_emulated(emu), block, dtype, reduced, se_act)


def test_wide_output_shrinks_the_tile_to_fit_shared_memory(emu_forward):
    """C_out = 400 in float64: 32 pixels of accumulators would need 100 KiB, so the chunk and then the tile
    shrink to stay within 48 KiB (and the result is unchanged)."""
    limit = 48 * 1024
    for stage in (0, 2):
        assert emu_forward.mbconv.smem_bytes(16, 64, 400, 9, 9, 3, 1, stage, torch.float64) <= limit
    assert_mbconv_matches_reference(run_emulated(emu_forward), (16, 64, 400, 3, 1, False, "relu", 9, 9),
                                    torch.float64, batch=1)


def test_nan_propagates_through_the_block_and_the_se_scale(emu_forward):
    """A NaN input value: without SE it reaches the output pixels whose windows see it; with SE the mean makes the
    whole image NaN; the other image stays finite."""
    run = run_emulated(emu_forward)
    assert_mbconv_matches_reference(run, (8, 24, 8, 3, 1, True, "relu6", 6, 6), torch.float32, nan_at=(0, 2, 3, 3))
    assert_mbconv_matches_reference(run, (8, 24, 16, 3, 2, False, "silu", 6, 6), torch.float32, reduced=2,
                                    se_act="silu", nan_at=(1, 2, 3, 3))


def test_batch_and_layout(emu_forward):
    """NCHW input (converted at the entry) and more images than SMs; output channels_last."""
    case = (8, 24, 8, 3, 1, True, "relu6", 5, 6)

    def run_nchw(x, *rest):
        return run_emulated(emu_forward, sms=1)(x.contiguous(), *rest)
    assert_mbconv_matches_reference(run_nchw, case, torch.float64, batch=5)


def test_the_gpu_cases_run_in_emulation(emu_forward):
    """The emulation half of the mbconv cases of gpu_cases.py (tools/emu_vs_gpu.py) keeps working without a GPU."""
    import gpu_cases

    cases = [c for c in gpu_cases.CASES if c.name.startswith("mbconv_")]
    assert len(cases) == 2
    for case in cases:
        y = case.fn("emu", emu_forward)["y"]
        assert y.isfinite().all() and y.is_contiguous(memory_format=torch.channels_last), case.name


def test_a_missing_barrier_is_caught():
    """A copy of the kernel without the barrier between the expansion and the depthwise conv (built by
    emu_build.build_patched; nothing in the repository changes) fails the parity check under some order."""
    import emu_build
    from conftest import ORDERS, schedule

    barrier = "      }\n      __syncthreads();\n      for (int i = t; i < pixels * chunk;"
    broken = emu_build.build_patched("mbconv_no_barrier", {"csrc/cuda/mbconv.cu": [
        (barrier, barrier.replace("      __syncthreads();\n", ""))]}, only=["mbconv", "se"])
    block, reduced, se_act, dtype = CASES[0]
    failed = 0
    for order in ORDERS:
        with schedule(broken, *order):
            try:
                assert_mbconv_matches_reference(run_emulated(broken), block, dtype, reduced, se_act)
            except AssertionError:
                failed += 1
    assert failed > 0, "the kernel without its barrier passed under every order"
