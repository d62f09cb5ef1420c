// Emulator self-test kernels (not product code): the warp primitives, checked lane by lane in Python.
#include "common.cuh"

namespace emu_selftest {

constexpr int kWarpOps = 10;

// out[i * kWarpOps + k]: the k-th primitive's result for thread i. Blocks of 64 threads (two full warps).
__global__ void warp_ops_kernel(const int* __restrict__ v_in, int* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31;
  const unsigned full = 0xffffffffu;
  const int v = v_in[i];
  int* o = out + i * kWarpOps;
  o[0] = __shfl_sync(full, v, (lane * 7 + 3) & 31);
  o[1] = __shfl_sync(full, v, lane + 5, 8);
  o[2] = __shfl_up_sync(full, v, 3, 16);
  o[3] = __shfl_down_sync(full, v, 5);
  o[4] = __shfl_xor_sync(full, v, 5, 8);
  o[5] = int(__ballot_sync(full, v % 3 == 0));
  const int any7 = __any_sync(full, v == 7);
  const int all_nonneg = __all_sync(full, v >= 0);
  o[6] = any7 | (all_nonneg << 1);
  const unsigned half_mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  o[7] = __shfl_sync(half_mask, v, 0, 16);
  o[8] = int(__match_any_sync(full, v & 3));
  __syncwarp();
  o[9] = int(__reduce_add_sync(full, unsigned(v)));
}

inline cudaError_t launch_warp_ops(const int* v, int* out, int blocks) {
  PYCNN_LAUNCH(blocks, 64, 0, nullptr, warp_ops_kernel)(v, out);
  return cudaGetLastError();
}

// 64-bit and half shuffles: out[i] = x[lane ^ 1 of the same warp] for double, __half and __nv_bfloat16.
template <typename T>
__global__ void shfl_type_kernel(const T* __restrict__ x, T* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __shfl_xor_sync(0xffffffffu, x[i], 1);
}

template <typename T>
cudaError_t launch_shfl_type(const T* x, T* out, int n) {
  PYCNN_LAUNCH(n / 32, 32, 0, nullptr, shfl_type_kernel<T>)(x, out);
  return cudaGetLastError();
}

}  // namespace emu_selftest
