// Emulator self-test kernels (not product code): __half / __nv_bfloat16 conversions and arithmetic.
#include "common.cuh"

namespace emu_selftest {

// Bit patterns of float -> half / bfloat16 (round to nearest even), and the values converted back.
__global__ void convert_kernel(const float* __restrict__ x, __half* __restrict__ h, __nv_bfloat16* __restrict__ b,
                               float* __restrict__ h_back, float* __restrict__ b_back, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    h[i] = __float2half_rn(x[i]);
    b[i] = __float2bfloat16_rn(x[i]);
    h_back[i] = __half2float(h[i]);
    b_back[i] = __bfloat162float(b[i]);
  }
}

inline cudaError_t launch_convert(const float* x, __half* h, __nv_bfloat16* b, float* hb, float* bb, int n) {
  PYCNN_LAUNCH(8, 128, 0, nullptr, convert_kernel)(x, h, b, hb, bb, n);
  return cudaGetLastError();
}

// double -> half / bfloat16, rounded once (no detour through float).
__global__ void convert_double_kernel(const double* __restrict__ x, __half* __restrict__ h,
                                      __nv_bfloat16* __restrict__ b, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  h[i] = __double2half(x[i]);
  b[i] = __double2bfloat16(x[i]);
}

inline cudaError_t launch_convert_double(const double* x, __half* h, __nv_bfloat16* b, int n) {
  PYCNN_LAUNCH((n + 255) / 256, 256, 0, nullptr, convert_double_kernel)(x, h, b, n);
  return cudaGetLastError();
}

// out[k * n + i]: a + b, a - b, a * b, a / b, max(a, b), -a, and the pairwise (T2) add and mul, in type T.
template <typename T, typename T2>
__global__ void arith_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[0 * n + i] = a[i] + b[i];
  out[1 * n + i] = __hsub(a[i], b[i]);
  out[2 * n + i] = a[i] * b[i];
  out[3 * n + i] = a[i] / b[i];
  out[4 * n + i] = __hmax(a[i], b[i]);
  out[5 * n + i] = -a[i];
  T2 p{a[i], b[i]}, q{b[i], a[i]};
  T2 s = __hadd2(p, q), m = __hmul2(p, q);
  out[6 * n + i] = s.x;
  out[7 * n + i] = m.y;
}

template <typename T, typename T2>
cudaError_t launch_arith(const T* a, const T* b, T* out, int n) {
  PYCNN_LAUNCH((n + 63) / 64, 64, 0, nullptr, arith_kernel<T, T2>)(a, b, out, n);
  return cudaGetLastError();
}

}  // namespace emu_selftest
