// Emulator self-test kernels (not product code): block reductions through shared memory and shuffles.
// Lines tagged EMU-NEG are targets of the negative tests (tests/emu/test_emu_negative.py), which compile a
// copy with the tagged line altered and check that the harness notices.
#include "common.cuh"

namespace emu_selftest {

using pycnn::cuda::to_acc;

// partial[b] = sum of x over the grid-stride range of block b (float accumulation), by a shared-memory tree.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK) smem_tree_sum_kernel(const T* __restrict__ x, float* __restrict__ partial, int n) {
  __shared__ float s[BLOCK];
  const int t = threadIdx.x;
  float acc = 0.f;
  for (int i = blockIdx.x * BLOCK + t; i < n; i += gridDim.x * BLOCK) acc += to_acc(x[i]);
  s[t] = acc;
  __syncthreads();  // EMU-NEG:store-barrier
  for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();  // EMU-NEG:tree-barrier
  }
  if (t == 0) partial[blockIdx.x] = s[0];
}

template <typename T>
cudaError_t launch_smem_tree_sum(const T* x, float* partial, int n, int blocks) {
  PYCNN_LAUNCH(blocks, 256, 0, nullptr, smem_tree_sum_kernel<T, 256>)(x, partial, n);
  return cudaGetLastError();
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // complete in lane 0
}

// Block sum by warp shuffles: each warp reduces, lane 0 stores to shared memory, warp 0 reduces those.
// blockDim.x is a multiple of 32 (<= 1024); tails are handled by zero contributions, not early returns.
template <typename T>
__global__ void shfl_block_sum_kernel(const T* __restrict__ x, float* __restrict__ partial, int n) {
  __shared__ float warp_sums[32];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int i = blockIdx.x * blockDim.x + t;
  float v = i < n ? to_acc(x[i]) : 0.f;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();  // EMU-NEG:warp-sums-barrier
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_sums[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) partial[blockIdx.x] = v;
  }
}

template <typename T>
cudaError_t launch_shfl_block_sum(const T* x, float* partial, int n, int threads) {
  const int blocks = (n + threads - 1) / threads;
  PYCNN_LAUNCH(blocks, threads, 0, nullptr, shfl_block_sum_kernel<T>)(x, partial, n);
  return cudaGetLastError();
}

// Per-warp sum with a butterfly (every lane gets the total).
__global__ void xor_warp_sum_kernel(const float* __restrict__ x, float* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.f;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (i < n) out[i] = v;
}

inline cudaError_t launch_xor_warp_sum(const float* x, float* out, int n) {
  PYCNN_LAUNCH((n + 127) / 128, 128, 0, nullptr, xor_warp_sum_kernel)(x, out, n);
  return cudaGetLastError();
}

}  // namespace emu_selftest
