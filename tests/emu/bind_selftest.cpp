// Bindings of the emulator's own test kernels (tests/emu/kernels/*.cu): module.selftest.*
#include "emu_bind.h"

#include "kernels/atomics.cu"
#include "kernels/faults.cu"
#include "kernels/fp16.cu"
#include "kernels/grid3d.cu"
#include "kernels/reduce.cu"
#include "kernels/stencil.cu"
#include "kernels/warp_ops.cu"
#include "kernels/wmma.cu"

using at::Tensor;
using namespace pycnn_emu_test;
namespace st = emu_selftest;

PYCNN_EMU_BINDINGS(selftest, m) {
  m.def("smem_tree_sum", [](Tensor x, Tensor partial) {
    dispatch_floating(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check(st::launch_smem_tree_sum<T>(ptr<T>(x), ptr<float>(partial), int(x.numel()), int(partial.numel())));
    });
  });
  m.def("shfl_block_sum", [](Tensor x, Tensor partial, int threads) {
    dispatch_floating(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check(st::launch_shfl_block_sum<T>(ptr<T>(x), ptr<float>(partial), int(x.numel()), threads));
    });
  });
  m.def("xor_warp_sum", [](Tensor x, Tensor out) {
    check(st::launch_xor_warp_sum(ptr<float>(x), ptr<float>(out), int(x.numel())));
  });
  m.def("warp_ops", [](Tensor v, Tensor out) {
    check(st::launch_warp_ops(ptr<int32_t>(v), ptr<int32_t>(out), int(v.numel() / 64)));
  });
  m.attr("WARP_OPS") = st::kWarpOps;
  m.def("shfl_type", [](Tensor x, Tensor out) {
    dispatch_floating(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      check(st::launch_shfl_type<T>(ptr<T>(x), ptr<T>(out), int(x.numel())));
    });
  });
  m.def("stencil1d", [](Tensor x, Tensor w, Tensor y) {
    check(st::launch_stencil1d(ptr<float>(x), ptr<float>(w), ptr<float>(y), int(x.numel())));
  });
  m.def("stencil2d", [](Tensor x, Tensor w, Tensor y) {
    st::Stencil2dParams p{ptr<float>(x), ptr<float>(w), ptr<float>(y), int(x.size(1)), int(x.size(2))};
    check(st::launch_stencil2d(p, int(x.size(0))));
  });
  m.def("histogram", [](Tensor x, Tensor hist) {
    check(st::launch_histogram(ptr<int32_t>(x), int(x.numel()), ptr<uint32_t>(hist), int(hist.numel())));
  });
  m.def("atomic_misc", [](Tensor x, Tensor res, Tensor ires, Tensor ull) {
    check(st::launch_atomic_misc(ptr<float>(x), int(x.numel()), ptr<float>(res), ptr<int32_t>(ires),
                                 reinterpret_cast<unsigned long long*>(ptr<int64_t>(ull))));
  });
  m.def("convert", [](Tensor x, Tensor h, Tensor b, Tensor hb, Tensor bb) {
    check(st::launch_convert(ptr<float>(x), ptr<__half>(h), ptr<__nv_bfloat16>(b), ptr<float>(hb), ptr<float>(bb),
                             int(x.numel())));
  });
  m.def("convert_double", [](Tensor x, Tensor h, Tensor b) {
    check(st::launch_convert_double(ptr<double>(x), ptr<__half>(h), ptr<__nv_bfloat16>(b), int(x.numel())));
  });
  m.def("arith", [](Tensor a, Tensor b, Tensor out) {
    const int n = int(a.numel());
    if (a.scalar_type() == at::kHalf)
      check(st::launch_arith<__half, __half2>(ptr<__half>(a), ptr<__half>(b), ptr<__half>(out), n));
    else
      check(st::launch_arith<__nv_bfloat16, __nv_bfloat162>(ptr<__nv_bfloat16>(a), ptr<__nv_bfloat16>(b),
                                                             ptr<__nv_bfloat16>(out), n));
  });
  m.def("index3d", [](Tensor out, std::vector<unsigned> block) {
    check(st::launch_index3d(ptr<int32_t>(out), int(out.size(2)), int(out.size(1)), int(out.size(0)),
                             dim3(block.at(0), block.at(1), block.at(2))));
  });
  m.def("faults", [](Tensor out, int threads, int mode, int who) {
    check(st::launch_faults(ptr<float>(out), threads, mode, who));
  });
  m.def("exited_lane", [](Tensor out, int n) { check(st::launch_exited_lane(ptr<float>(out), n)); });
  m.def("sync_vote", [](Tensor out, int threads, int n) {
    check(st::launch_sync_vote(ptr<int32_t>(out), threads, n));
  });
  m.def("big_smem", [](Tensor out, int words, bool set_attribute) {
    check(st::launch_big_smem(ptr<uint32_t>(out), words, set_attribute));
  });
  m.def("throwing", [](int who) { check(st::launch_throwing(who)); });
  m.def("crash", [](int mode, int kb) { check(st::launch_crash(mode, kb)); });
  m.def("spin", [](Tensor flag) { check(st::launch_spin(ptr<int32_t>(flag))); });
  m.def("noop", [](std::vector<unsigned> grid, std::vector<unsigned> block) {
    check(st::launch_noop(dim3(grid.at(0), grid.at(1), grid.at(2)), dim3(block.at(0), block.at(1), block.at(2))));
  });
  m.def("wmma_gemm", [](Tensor a, Tensor b, Tensor c, bool b_col_major, bool c_col_major) {
    const int M = int(a.size(0)), K = int(a.size(1)), N = int(c.numel() / M);
    if (a.scalar_type() == at::kHalf)
      check(st::launch_wmma_gemm(ptr<__half>(a), ptr<__half>(b), ptr<float>(c), M, N, K, b_col_major, c_col_major));
    else
      check(st::launch_wmma_gemm(ptr<__nv_bfloat16>(a), ptr<__nv_bfloat16>(b), ptr<float>(c), M, N, K, b_col_major,
                                 c_col_major));
  });
}
