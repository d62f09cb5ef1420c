"""Negative tests: deliberately broken copies of kernels must be caught by the harness.

The copies are made here (emu_build.build_patched copies the sources into build/emu/patched, alters the
lines tagged ``EMU-NEG:<tag>``, and compiles the copy); nothing broken is kept in the repository. A bug counts
as detected when the result is wrong under at least one scheduling order of conftest.ORDERS, or the launch
fails with the emulator's divergent-barrier error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import emu_build
from conftest import ORDERS, schedule

REDUCE = "tests/emu/kernels/reduce.cu"
STENCIL = "tests/emu/kernels/stencil.cu"

PATCHES = {
    REDUCE: [
        # a missing barrier inside the shared-memory tree
        ("__syncthreads();  // EMU-NEG:tree-barrier", "// barrier removed"),
        # a missing barrier between the warps' shuffle results and their combination
        ("__syncthreads();  // EMU-NEG:warp-sums-barrier", "// barrier removed"),
    ],
    STENCIL: [
        # the left halo shifted by one element
        ("const int left = i - R;                                   // EMU-NEG:halo-left",
         "const int left = i - R + 1;"),
        # an early return for out-of-range threads placed before the barrier (a divergent __syncthreads)
        ("__syncthreads();  // EMU-NEG:stencil2d-barrier",
         "if (int(blockIdx.x * BX + threadIdx.x) >= p.W) return;\n  __syncthreads();"),
    ],
}


@pytest.fixture(scope="module")
def broken():
    return emu_build.build_patched("broken", PATCHES, only=["selftest"])


def _outcomes(mod, run, ref):
    """{order: 'ok' | 'wrong' | error message} over every scheduling order."""
    out = {}
    for order in ORDERS:
        with schedule(mod, *order):
            try:
                got = run(mod)
            except RuntimeError as e:
                out[order] = str(e)
                continue
            out[order] = "ok" if torch.allclose(got.double(), ref, rtol=1e-5, atol=1e-4) else "wrong"
    return out


def _reduce_case(n=3000, blocks=2):
    x = torch.randn(n)
    owner = (torch.arange(n) // 256) % blocks
    ref = torch.zeros(blocks, dtype=torch.float64).index_add_(0, owner, x.double())

    def run(mod):
        partial = torch.empty(blocks)
        mod.selftest.smem_tree_sum(x, partial)
        return partial

    return run, ref


def _shfl_case(n=1000, threads=256):
    x = torch.randn(n)
    blocks = -(-n // threads)
    ref = torch.zeros(blocks, dtype=torch.float64).index_add_(0, torch.arange(n) // threads, x.double())

    def run(mod):
        partial = torch.empty(blocks)
        mod.selftest.shfl_block_sum(x, partial, threads)
        return partial

    return run, ref


def _stencil1d_case(n=150):
    x, w = torch.randn(n), torch.randn(7)
    ref = F.conv1d(x.double().view(1, 1, -1), w.double().view(1, 1, -1), padding=3).view(-1)

    def run(mod):
        y = torch.empty(n)
        mod.selftest.stencil1d(x, w, y)
        return y

    return run, ref


def _stencil2d_case(shape=(2, 9, 21)):
    x, w = torch.randn(shape), torch.randn(3, 3)
    ref = F.conv2d(x.double().unsqueeze(1), w.double().view(1, 1, 3, 3), padding=1).squeeze(1)

    def run(mod):
        y = torch.empty(shape)
        mod.selftest.stencil2d(x, w, y)
        return y

    return run, ref


CASES = {
    "missing tree barrier": _reduce_case,
    "missing barrier after warp shuffles": _shfl_case,
    "halo off by one": _stencil1d_case,
    "early return before __syncthreads": _stencil2d_case,
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_intact_kernel_passes_under_every_order(emu_module, case):
    run, ref = CASES[case]()
    outcomes = _outcomes(emu_module, run, ref)
    assert set(outcomes.values()) == {"ok"}, outcomes


@pytest.mark.parametrize("case", list(CASES))
def test_the_broken_copy_is_detected(broken, case):
    run, ref = CASES[case]()
    outcomes = _outcomes(broken, run, ref)
    assert any(v != "ok" for v in outcomes.values()), f"planted bug '{case}' went unnoticed: {outcomes}"
    if case == "early return before __syncthreads":
        assert all("divergent barrier" in v and "stencil2d_kernel" in v for v in outcomes.values()), outcomes
    if case == "missing tree barrier":  # the order matters: forward catches it, reverse happens to be right
        assert outcomes[("forward", 0)] == "wrong" and outcomes[("reverse", 0)] == "ok", outcomes
