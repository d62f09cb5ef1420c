"""The emulator's own kernels (tests/emu/kernels): barriers, shared memory, warp primitives, atomics, half and
bfloat16, 3-D grids, dynamic shared memory, and the errors it must report instead of hanging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import emu_build
from conftest import ORDERS, schedule
from emu_util import GUARD, Guarded

torch.manual_seed(0)


def _sum_ref(x: torch.Tensor, blocks: int, block: int) -> torch.Tensor:
    """Grid-stride partial sums, in float64."""
    xf = x.double()
    idx = torch.arange(x.numel())
    owner = (idx // block) % blocks
    return torch.zeros(blocks, dtype=torch.float64).index_add_(0, owner, xf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.uint8])
def test_guard_bands_catch_out_of_bounds_writes(dtype):
    g = Guarded(torch.zeros(2, 3, dtype=dtype))
    g.check()
    g.buf[GUARD + 6] = 1  # one past the end
    with pytest.raises(AssertionError, match="out-of-bounds write.*after"):
        g.check("y")
    g = Guarded(shape=(5,), dtype=dtype)
    g.buf[GUARD - 1] = 0
    with pytest.raises(AssertionError, match="before"):
        g.check()


# ---- reductions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n,blocks", [(1, 1), (1000, 3), (4099, 2)])
def test_smem_tree_sum(emu, dtype, n, blocks):
    x = torch.randn(n).to(dtype)
    g = Guarded(x)
    partial = Guarded(shape=(blocks,), dtype=torch.float32)
    emu.selftest.smem_tree_sum(g.t, partial.t)
    partial.check("partial")
    torch.testing.assert_close(partial.t.double(), _sum_ref(x, blocks, 256), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,threads", [(1, 32), (777, 96), (2048, 1024)])
def test_shfl_block_sum(emu, dtype, n, threads):
    x = torch.randn(n).to(dtype)
    blocks = (n + threads - 1) // threads
    partial = torch.empty(blocks)
    emu.selftest.shfl_block_sum(x, partial, threads)
    ref = torch.zeros(blocks, dtype=torch.float64).index_add_(0, torch.arange(n) // threads, x.double())
    torch.testing.assert_close(partial.double(), ref, rtol=1e-5, atol=1e-4)


def test_reductions_identical_bits_under_every_order(emu_module):
    x = torch.randn(5000)
    results = []
    for order in ORDERS:
        with schedule(emu_module, *order):
            a, b = torch.empty(3), torch.empty(20)
            emu_module.selftest.smem_tree_sum(x, a)
            emu_module.selftest.shfl_block_sum(x, b, 256)
            results.append(torch.cat([a, b]))
    for r in results[1:]:
        assert torch.equal(r, results[0])


def test_xor_warp_sum(emu):
    n = 200  # 7 warps, the last partial (lanes past n contribute zeros)
    x = torch.randn(n)
    out = torch.empty(n)
    emu.selftest.xor_warp_sum(x, out)
    xp = torch.cat([x, torch.zeros(224 - n)]).view(-1, 32).double().sum(1)
    torch.testing.assert_close(out.double(), xp.repeat_interleave(32)[:n], rtol=1e-5, atol=1e-5)


# ---- warp primitives ------------------------------------------------------------------------------------------
def _warp_ops_ref(v: np.ndarray) -> np.ndarray:
    out = np.zeros((len(v), 10), dtype=np.int64)
    for w in range(len(v) // 32):
        lanes = v[w * 32:(w + 1) * 32].astype(np.int64)
        ballot = sum(1 << l for l in range(32) if lanes[l] % 3 == 0)  # C's % keeps the sign: 0 either way
        for l in range(32):
            o = out[w * 32 + l]
            o[0] = lanes[(l * 7 + 3) & 31]
            o[1] = lanes[(l & ~7) | ((l + 5) & 7)]
            o[2] = lanes[l - 3] if l - 3 >= (l & ~15) else lanes[l]
            o[3] = lanes[l + 5] if l + 5 <= 31 else lanes[l]
            o[4] = lanes[l ^ 5]
            o[5] = np.array(ballot, dtype=np.uint32).view(np.int32)
            o[6] = int((lanes == 7).any()) | (int((lanes >= 0).all()) << 1)
            o[7] = lanes[l & ~15]
            o[8] = np.array(sum(1 << k for k in range(32) if (lanes[k] & 3) == (lanes[l] & 3)),
                            dtype=np.uint32).view(np.int32)
            o[9] = np.array(int(lanes.sum()) & 0xFFFFFFFF, dtype=np.uint32).view(np.int32)
    return out


def test_warp_ops(emu):
    rng = np.random.default_rng(0)
    v = rng.integers(0, 20, size=256).astype(np.int32)
    v[64:96] = rng.integers(-3, 5, size=32)  # a warp where __all_sync(v >= 0) is false
    v[96:128] = 8  # a warp without a 7
    out = torch.zeros(256, emu.selftest.WARP_OPS, dtype=torch.int32)
    emu.selftest.warp_ops(torch.from_numpy(v), out)
    np.testing.assert_array_equal(out.numpy(), _warp_ops_ref(v))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.float32])
def test_shuffle_types(emu_forward, dtype):
    x = torch.randn(64).to(dtype)
    out = torch.empty_like(x)
    emu_forward.selftest.shfl_type(x, out)
    assert torch.equal(out, x.view(-1, 2).flip(1).reshape(-1))


# ---- stencils (halos in static and dynamic shared memory) -------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 64, 65, 200])
def test_stencil1d(emu, n):
    x, w = torch.randn(n), torch.randn(7)
    gx, gy = Guarded(x), Guarded(shape=(n,), dtype=torch.float32)
    emu.selftest.stencil1d(gx.t, w, gy.t)
    gy.check("y")
    ref = F.conv1d(x.double().view(1, 1, -1), w.double().view(1, 1, -1), padding=3).view(-1)
    torch.testing.assert_close(gy.t.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 8, 16), (2, 13, 37), (3, 1, 1), (1, 17, 5)])
def test_stencil2d_dynamic_smem_3d_grid(emu, shape):
    x, w = torch.randn(shape), torch.randn(3, 3)
    gx, gy = Guarded(x), Guarded(shape=shape, dtype=torch.float32)
    emu.selftest.stencil2d(gx.t, w, gy.t)
    gy.check("y")
    ref = F.conv2d(x.double().unsqueeze(1), w.double().view(1, 1, 3, 3), padding=1).squeeze(1)
    torch.testing.assert_close(gy.t.double(), ref, rtol=1e-5, atol=1e-5)


# ---- atomics ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [1, 7, 64])
def test_histogram_shared_and_global_atomics(emu, bins):
    x = torch.randint(0, 1000, (1234,), dtype=torch.int32)
    hist = torch.zeros(bins, dtype=torch.uint32)
    emu.selftest.histogram(x, hist)
    ref = torch.bincount((x % bins).long(), minlength=bins)
    assert torch.equal(hist.long(), ref)


def test_atomic_misc(emu):
    x = torch.randint(-50, 50, (517,)).float()
    res = torch.tensor([0.0, -1e30])
    ires = torch.tensor([-(2**31), 2**31 - 1, 0, 0, 0, 0], dtype=torch.int32)
    ull = torch.zeros(1, dtype=torch.int64)
    emu.selftest.atomic_misc(x, res, ires, ull)
    xi = x.long()
    assert res[0].item() == x.sum().item()  # integers: exact in any order
    assert res[1].item() == x.max().item()
    assert ires[0].item() == xi.max().item() and ires[1].item() == xi.min().item()
    assert ires[2].item() == 517 % 1000
    assert ires[3].item() == int(np.bitwise_xor.reduce(xi.numpy()))
    assert ires[4].item() == 7 and ires[5].item() == -517
    assert ull.item() == int((xi + 1000).sum())


# ---- half and bfloat16 ----------------------------------------------------------------------------------------
def _conversion_inputs() -> torch.Tensor:
    # Every half value, the midpoints between neighbours (ties), and one float ulp either side of them,
    # plus bfloat16 ties, overflow and underflow boundaries, subnormals, infinities.
    h = torch.arange(0, 0x7C01, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    mids = (h[:-1].double() + h[1:].double()) / 2
    mids = mids.float()
    up = torch.nextafter(mids, torch.tensor(float("inf")))
    down = torch.nextafter(mids, torch.tensor(0.0))
    b = torch.randint(0, 0x7F80, (20000,), dtype=torch.int32)
    bf_ties = ((b << 16) | 0x8000).view(torch.float32)
    bf_near = ((b << 16) | torch.randint(0, 0x10000, (20000,), dtype=torch.int32)).view(torch.float32)
    special = torch.tensor([65504.0, 65519.99, 65520.0, 65536.0, 1e10, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001,
                            2.0**-26, 1e-30, 0.0, float("inf"), 3.3895314e38, 3.4028235e38])
    pos = torch.cat([h, mids, up, down, bf_ties, bf_near, special, torch.randn(5000) * 1000])
    return torch.cat([pos, -pos])


def test_float_to_half_and_bfloat16_bit_exact(emu_forward):
    x = _conversion_inputs()
    h = torch.empty(x.shape, dtype=torch.float16)
    b = torch.empty(x.shape, dtype=torch.bfloat16)
    hb, bb = torch.empty_like(x), torch.empty_like(x)
    emu_forward.selftest.convert(x, h, b, hb, bb)
    assert torch.equal(h.view(torch.int16), x.half().view(torch.int16))
    assert torch.equal(b.view(torch.int16), x.bfloat16().view(torch.int16))
    assert torch.equal(hb, x.half().float()) and torch.equal(bb, x.bfloat16().float())


def _bf16_from_double_ref(x: np.ndarray) -> np.ndarray:
    """Nearest bfloat16 (ties to even) of each double, by comparing the neighbouring candidates exactly."""
    t = x.astype(np.float32).view(np.uint32) & 0xFFFF0000
    best = np.zeros(len(x), dtype=np.uint32)
    best_d = np.full(len(x), np.inf)
    for delta in (-0x10000, 0, 0x10000):
        c = (t.astype(np.int64) + delta).clip(0, 0xFFFFFFFF).astype(np.uint32)
        cv = c.view(np.float32).astype(np.float64)
        d = np.abs(x - cv)  # exact: the candidates are within a factor of two of x
        better = (d < best_d) | ((d == best_d) & (((c >> 16) & 1) == 0))
        best = np.where(better, c, best)
        best_d = np.where(better, d, best_d)
    return (best >> 16).astype(np.uint16)


def test_double_to_half_and_bfloat16_round_once(emu_forward):
    h = torch.arange(0, 0x7C00, dtype=torch.int32).to(torch.int16).view(torch.float16).double()
    mids = (h[:-1] + h[1:]) / 2
    tiny = mids.abs() * 2.0**-40 + 2.0**-60
    b = torch.randint(1, 0x7F7F, (20000,), dtype=torch.int32)
    bmid = ((b << 16) | 0x8000).view(torch.float32).double()
    btiny = bmid * 2.0**-35
    pos = torch.cat([h, mids, mids + tiny, mids - tiny, bmid, bmid + btiny, bmid - btiny,
                     torch.tensor([65519.999, 65520.0, 1e300, 1e-300, 3.4e38, 3.3961e38])])
    x = torch.cat([pos, -pos])
    hh = torch.empty(x.shape, dtype=torch.float16)
    bb = torch.empty(x.shape, dtype=torch.bfloat16)
    emu_forward.selftest.convert_double(x, hh, bb)
    with np.errstate(over="ignore"):
        ref_h = x.numpy().astype(np.float16)  # numpy rounds double -> half once
    np.testing.assert_array_equal(hh.view(torch.int16).numpy(), ref_h.view(np.int16))
    finite = x.abs() < 3.3e38
    np.testing.assert_array_equal(bb.view(torch.int16).numpy()[finite.numpy()].view(np.uint16),
                                  _bf16_from_double_ref(x.numpy()[finite.numpy()]))
    assert (x.half().view(torch.int16) != hh.view(torch.int16)).any()  # torch rounds twice (via float)


def test_nan_converts_to_cuda_canonical_nan(emu_forward):
    x = torch.tensor([float("nan"), -float("nan"), torch.tensor(0x7F800001, dtype=torch.int32).view(torch.float32)])
    h = torch.empty(3, dtype=torch.float16)
    b = torch.empty(3, dtype=torch.bfloat16)
    emu_forward.selftest.convert(x, h, b, torch.empty(3), torch.empty(3))
    assert h.view(torch.int16).tolist() == [0x7FFF] * 3  # CUDA's canonical NaN (torch uses 0x7E00 / 0x7FC0)
    assert b.view(torch.int16).tolist() == [0x7FFF] * 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_arithmetic_bit_exact(emu_forward, dtype):
    n = 4096
    a = (torch.randn(n) * 100).to(dtype)
    b = (torch.randn(n) * 3).to(dtype)
    b[::17] = 0  # division by zero -> inf / nan
    a[::31] = torch.finfo(dtype).max
    out = torch.empty(8, n, dtype=dtype)
    emu_forward.selftest.arith(a, b, out)
    # torch computes half/bfloat16 ops on the CPU in float and rounds once: the same as native fp16/bf16.
    ref = torch.stack([a + b, a - b, a * b, a / b, torch.fmax(a, b), -a, a + b, b * a])
    same = (out.view(torch.int16) == ref.view(torch.int16)) | (out.isnan() & ref.isnan())
    assert bool(same.all()), (~same).nonzero()[:5]


# ---- grids and built-in variables -------------------------------------------------------------------------
@pytest.mark.parametrize("dims,block", [((5, 3, 2), (2, 2, 2)), ((33, 4, 3), (32, 1, 2)), ((7, 9, 11), (4, 4, 4)),
                                        ((1, 1, 70), (1, 1, 64))])
def test_3d_grid_and_block(emu_forward, dims, block):
    nx, ny, nz = dims
    out = torch.full((nz, ny, nx), -1, dtype=torch.int32)
    emu_forward.selftest.index3d(out, list(block))
    z, y, x = torch.meshgrid(torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij")
    bx, by, bz = block
    gx, gy = -(-nx // bx), -(-ny // by)
    blk = ((z // bz) * gy + (y // by)) * gx + (x // bx)
    thr = ((z % bz) * by + (y % by)) * bx + (x % bx)
    assert torch.equal(out.long(), blk * 10000 + thr)


# ---- block barrier variants, dynamic shared memory, launch configuration ------------------------------------
@pytest.mark.parametrize("threads,n", [(96, 50), (64, 64), (33, 0)])
def test_syncthreads_count_and_or(emu, threads, n):
    out = torch.zeros(3, dtype=torch.int32)
    emu.selftest.sync_vote(out, threads, n)
    assert out.tolist() == [len(range(0, threads, 3)), int(n >= threads), int(n < threads)]


def test_dynamic_smem_above_48k_needs_the_attribute(emu_module):
    words = 20000  # 80000 bytes
    out = torch.zeros(2, dtype=torch.uint32)
    with pytest.raises(RuntimeError, match="big_smem_kernel.*exceeds 49152"):
        emu_module.selftest.big_smem(out, words, False)
    emu_module.selftest.big_smem(out, words, True)
    ref = []
    for blk in range(2):
        acc = 0
        for i in range(words - 1, -1, -1):
            acc = (acc * 31 + ((i * 2654435761 + blk) & 0xFFFFFFFF)) & 0xFFFFFFFF
        ref.append(acc)
    assert [int(v) & 0xFFFFFFFF for v in out.tolist()] == ref


@pytest.mark.parametrize("grid,block,msg", [
    ((1, 1, 1), (2048, 1, 1), "block too large"),
    ((1, 1, 1), (1, 1, 65), "block too large"),
    ((0, 1, 1), (32, 1, 1), "empty grid"),
    ((1, 70000, 1), (32, 1, 1), "grid too large"),
])
def test_invalid_launch_configuration(emu_module, grid, block, msg):
    with pytest.raises(RuntimeError, match=f"error 9: .*noop_kernel.*{msg}"):
        emu_module.selftest.noop(list(grid), list(block))


# ---- faults the emulator must report (never hang) ---------------------------------------------------------
def test_correct_barriers_and_shuffles(emu):
    out = torch.full((64,), -1.0)
    emu.selftest.faults(out, 64, 0, 0)
    assert out.tolist() == [0.0] * 32 + [32.0] * 32


def test_thread_exiting_before_syncthreads_is_an_error(emu):
    out = torch.zeros(64)
    with pytest.raises(RuntimeError, match=r"error 719: .*faults_kernel.*thread \(5,0,0\).* exited while 63 thread"):
        emu.selftest.faults(out, 64, 1, 5)
    assert emu.last_error() == ""  # check() consumed the message
    emu.selftest.faults(out, 64, 0, 0)  # the next launch works


def test_threads_at_different_syncthreads_is_an_error(emu):
    with pytest.raises(RuntimeError, match=r"faults_kernel.*wait at different barriers.*faults.cu:\d+.*faults.cu:\d+"):
        emu.selftest.faults(torch.zeros(64), 64, 2, 10)


def test_lane_missing_from_a_shuffle_is_a_deadlock_error(emu):
    with pytest.raises(RuntimeError, match=r"faults_kernel.*__shfl_sync.*never completes.*lane 3 is waiting at "
                                           r"__syncthreads"):
        emu.selftest.faults(torch.zeros(64), 64, 3, 3)


def test_lanes_at_different_warp_collectives_is_an_error(emu):
    with pytest.raises(RuntimeError, match=r"divergent warp collective"):
        emu.selftest.faults(torch.zeros(64), 64, 4, 8)


def test_exception_in_a_kernel_is_reported(emu):
    with pytest.raises(RuntimeError, match=r"throwing_kernel.*thread \(7,0,0\).*exception: thrown by a kernel thread"):
        emu.selftest.throwing(7)
    emu.selftest.throwing(-1)


def test_the_module_shares_the_process_cxx_runtime(emu_module, tmp_path):
    """A static libstdc++ copy in the module crashed its first launch on the H200 machine; the build links the
    process's libstdc++ and refuses a module that still carries a copy. The detector must see one."""
    import os
    import shutil
    import subprocess

    assert not emu_build.has_private_cxx_runtime(emu_module.__file__)
    cxx = os.environ.get("CXX", "c++")
    if not shutil.which(cxx) or emu_build.loaded_cxx_runtime() is None:
        pytest.skip("no C++ compiler, or no shared libstdc++ in this process")
    src = tmp_path / "fmt.cpp"
    src.write_text('#include <sstream>\n#include <string>\n'
                   'std::string fmt(unsigned x) { std::ostringstream o; o << x; return o.str(); }\n')
    for flags, private in [(["-static-libstdc++"], True), ([], False),
                           (["-static-libstdc++", emu_build.loaded_cxx_runtime()], False)]:
        lib = tmp_path / f"fmt{len(flags)}.so"
        subprocess.run([cxx, "-shared", "-fPIC", "-O1", str(src), *flags, "-o", str(lib)], check=True)
        assert emu_build.has_private_cxx_runtime(str(lib)) is private, flags


@pytest.mark.parametrize("mode,expect", [(1, "stack overflow"), (2, "segmentation fault at address 0x10")])
def test_a_crashing_kernel_names_itself(emu_module, mode, expect):
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, %r); import emu_build; m = emu_build.build(); m.selftest.crash(%d, 1024)"
            % (str(emu_build.EMU_TESTS), mode))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"pycnn_emu: {expect}" in p.stderr, p.stderr[-2000:]
    assert "in kernel 'crash_kernel' (crash_kernel), block (1,0,0), thread (3,0,0)" in p.stderr


def test_a_hanging_kernel_is_stopped_by_the_watchdog(emu_module):
    import os
    import subprocess
    import sys

    code = ("import sys, torch; sys.path.insert(0, %r); import emu_build; m = emu_build.build(); "
            "m.selftest.spin(torch.zeros(1, dtype=torch.int32))" % str(emu_build.EMU_TESTS))
    env = dict(os.environ, PYCNN_EMU_WATCHDOG_S="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0
    assert "pycnn_emu: watchdog: kernel 'spin_kernel' made no progress for 1 s: block (0,0,0) thread [linear 0]" \
        in p.stderr, p.stderr[-2000:]


def test_shuffle_from_exited_lane_reads_poison(emu):
    out = torch.full((32,), -1.0)
    emu.selftest.exited_lane(out, 20)
    assert out[:19].tolist() == [float(t + 1) for t in range(19)]
    assert out[19].isnan()  # lane 19 read lane 20, which had exited: undefined on the GPU
    assert (out[20:] == -1).all()


def test_kernel_names_are_recorded(emu_module):
    emu_module.selftest.faults(torch.zeros(32), 32, 0, 0)
    launched = emu_module.launched()
    assert launched["faults_kernel"] >= 1
    assert all("<" not in k and "::" not in k for k in launched)


# ---- tensor-core fragments (nvcuda::wmma) -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b_col,c_col", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("mnk", [(16, 16, 16), (48, 32, 64)])
def test_wmma_gemm(emu, dtype, b_col, c_col, mnk):
    M, N, K = mnk
    a = torch.randn(M, K).to(dtype)
    b = torch.randn(K, N).to(dtype)
    b_mem = b.t().contiguous() if b_col else b
    c = torch.full((N, M) if c_col else (M, N), float("nan"))
    emu.selftest.wmma_gemm(a, b_mem, c, b_col, c_col)
    got = c.t() if c_col else c
    torch.testing.assert_close(got.double(), 2 * a.double() @ b.double(), rtol=1e-5, atol=1e-4)


def test_wmma_misaligned_pointer_is_an_error(emu_forward):
    a = torch.randn(16 * 17).half()[1:257].view(16, 16)  # storage offset of 2 bytes: not 32-byte aligned
    b = torch.randn(16, 16).half()
    with pytest.raises(RuntimeError, match=r"wmma_gemm_kernel.*load_matrix_sync.*32-byte aligned"):
        emu_forward.selftest.wmma_gemm(a, b, torch.empty(16, 16), False, False)
