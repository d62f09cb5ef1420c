// Emulator self-test kernels (not product code): atomics on shared and global memory.
#include "common.cuh"

namespace emu_selftest {

// hist[b] += count of x[i] % bins == b: per-block counters in shared memory, then one global atomic per bin.
__global__ void histogram_kernel(const int* __restrict__ x, int n, unsigned* __restrict__ hist, int bins) {
  __shared__ unsigned counts[64];
  for (int b = threadIdx.x; b < bins; b += blockDim.x) counts[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&counts[x[i] % bins], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += blockDim.x) atomicAdd(&hist[b], counts[b]);
}

inline cudaError_t launch_histogram(const int* x, int n, unsigned* hist, int bins) {
  if (bins > 64) return cudaErrorInvalidValue;
  PYCNN_LAUNCH(3, 96, 0, nullptr, histogram_kernel)(x, n, hist, bins);
  return cudaGetLastError();
}

__device__ __forceinline__ float atomic_max_float(float* addr, float v) {
  int* a = reinterpret_cast<int*>(addr);
  int old = *a, assumed;
  do {
    assumed = old;
    if (__int_as_float(assumed) >= v) break;
    old = atomicCAS(a, assumed, __float_as_int(v));
  } while (old != assumed);
  return __int_as_float(old);
}

// res: [0] float sum (atomicAdd), [1] float max (CAS loop); ires: [0] int max, [1] int min, [2] counter (atomicInc
// wrapping at 1000), [3] xor of all, [4] unsigned long long sum (bit-cast into two ints), [5] exch count.
__global__ void atomic_misc_kernel(const float* __restrict__ x, int n, float* res, int* ires,
                                   unsigned long long* ull) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    atomicAdd(&res[0], x[i]);
    atomic_max_float(&res[1], x[i]);
    const int v = int(x[i]);
    atomicMax(&ires[0], v);
    atomicMin(&ires[1], v);
    atomicInc(reinterpret_cast<unsigned*>(&ires[2]), 999u);
    atomicXor(&ires[3], v);
    atomicAdd(ull, (unsigned long long)(v + 1000));
    atomicExch(&ires[4], 7);
    atomicSub(&ires[5], 1);
  }
}

inline cudaError_t launch_atomic_misc(const float* x, int n, float* res, int* ires, unsigned long long* ull) {
  PYCNN_LAUNCH(4, 64, 0, nullptr, atomic_misc_kernel)(x, n, res, ires, ull);
  return cudaGetLastError();
}

}  // namespace emu_selftest
