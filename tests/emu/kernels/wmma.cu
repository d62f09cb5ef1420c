// Emulator self-test kernels (not product code): tensor-core tiles through nvcuda::wmma.
#include "common.cuh"
#include <mma.h>  // csrc/emu/shim/mma.h under emulation

namespace emu_selftest {

using namespace nvcuda;

// C[M, N] (float) = A[M, K] (row-major) * B[K, N] (row- or col-major storage); one warp per 16x16 tile of C,
// two warps per block; M, N, K multiples of 16. C is stored row- or col-major (ldc = N or M).
template <typename T, typename BLayout>
__global__ void wmma_gemm_kernel(const T* __restrict__ A, const T* __restrict__ B, float* __restrict__ C, int M,
                                 int N, int K, bool c_col_major) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int tiles_n = N / 16;
  const int tm = warp / tiles_n, tn = warp % tiles_n;
  if (tm * 16 >= M) return;  // whole warps only: the warp index is uniform across its lanes
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  constexpr bool b_col = std::is_same<BLayout, wmma::col_major>::value;
  for (int k = 0; k < K; k += 16) {
    wmma::load_matrix_sync(a, A + size_t(tm) * 16 * K + k, K);
    wmma::load_matrix_sync(b, b_col ? B + size_t(tn) * 16 * K + k : B + size_t(k) * N + tn * 16, b_col ? K : N);
    wmma::mma_sync(acc, a, b, acc);
  }
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= 2.0f;  // element-wise work on a fragment
  if (c_col_major)
    wmma::store_matrix_sync(C + size_t(tn) * 16 * M + tm * 16, acc, M, wmma::mem_col_major);
  else
    wmma::store_matrix_sync(C + size_t(tm) * 16 * N + tn * 16, acc, N, wmma::mem_row_major);
}

template <typename T>
cudaError_t launch_wmma_gemm(const T* A, const T* B, float* C, int M, int N, int K, bool b_col_major,
                             bool c_col_major) {
  if (M % 16 || N % 16 || K % 16) return cudaErrorInvalidValue;
  const int warps = (M / 16) * (N / 16);
  const int blocks = (warps + 1) / 2;
  if (b_col_major)
    PYCNN_LAUNCH(blocks, 64, 0, nullptr, wmma_gemm_kernel<T, wmma::col_major>)(A, B, C, M, N, K, c_col_major);
  else
    PYCNN_LAUNCH(blocks, 64, 0, nullptr, wmma_gemm_kernel<T, wmma::row_major>)(A, B, C, M, N, K, c_col_major);
  return cudaGetLastError();
}

}  // namespace emu_selftest
