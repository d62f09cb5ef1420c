// Emulator self-test kernels (not product code): stencils with halos staged in shared memory.
#include "common.cuh"

namespace emu_selftest {

// 1-D: y[i] = sum_k w[k] * x[i + k - R] with zeros outside [0, n). Static shared tile of BLOCK + 2R.
template <int BLOCK, int R>
__global__ void stencil1d_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                                 int n) {
  __shared__ float tile[BLOCK + 2 * R];
  const int t = threadIdx.x;
  const int i = blockIdx.x * BLOCK + t;
  tile[R + t] = i < n ? x[i] : 0.f;
  if (t < R) {
    const int left = i - R;                                   // EMU-NEG:halo-left
    tile[t] = left >= 0 && left < n ? x[left] : 0.f;
    const int right = i + BLOCK;
    tile[R + BLOCK + t] = right < n ? x[right] : 0.f;
  }
  __syncthreads();  // EMU-NEG:stencil1d-barrier
  if (i < n) {
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k <= 2 * R; ++k) acc += w[k] * tile[t + k];
    y[i] = acc;
  }
}

inline cudaError_t launch_stencil1d(const float* x, const float* w, float* y, int n) {
  constexpr int kBlock = 64, kR = 3;
  PYCNN_LAUNCH((n + kBlock - 1) / kBlock, kBlock, 0, nullptr, stencil1d_kernel<kBlock, kR>)(x, w, y, n);
  return cudaGetLastError();
}

// 2-D 3x3 (R = 1) over a batch of images: grid (tiles x, tiles y, images), block (BX, BY), tile + halo in
// dynamic shared memory, loaded cooperatively with a strided loop.
struct Stencil2dParams {
  const float* x;  // [images, H, W]
  const float* w;  // [3, 3]
  float* y;        // [images, H, W]
  int H, W;
};

template <int BX, int BY>
__global__ void stencil2d_kernel(const Stencil2dParams p) {
  constexpr int R = 1, TW = BX + 2 * R, TH = BY + 2 * R;
  PYCNN_DYNAMIC_SMEM(float, tile);
  const int tid = threadIdx.y * BX + threadIdx.x;
  const int x0 = blockIdx.x * BX - R, y0 = blockIdx.y * BY - R;
  const float* img = p.x + size_t(blockIdx.z) * p.H * p.W;
  for (int idx = tid; idx < TW * TH; idx += BX * BY) {
    const int gy = y0 + idx / TW, gx = x0 + idx % TW;  // EMU-NEG:halo-2d
    tile[idx] = (gy >= 0 && gy < p.H && gx >= 0 && gx < p.W) ? img[gy * p.W + gx] : 0.f;
  }
  __syncthreads();  // EMU-NEG:stencil2d-barrier
  const int gx = blockIdx.x * BX + threadIdx.x, gy = blockIdx.y * BY + threadIdx.y;
  if (gx < p.W && gy < p.H) {
    float acc = 0.f;
    for (int dy = 0; dy < 3; ++dy)
      for (int dx = 0; dx < 3; ++dx) acc += p.w[dy * 3 + dx] * tile[(threadIdx.y + dy) * TW + threadIdx.x + dx];
    p.y[size_t(blockIdx.z) * p.H * p.W + gy * p.W + gx] = acc;
  }
}

inline cudaError_t launch_stencil2d(const Stencil2dParams& p, int images) {
  constexpr int kBX = 16, kBY = 8;
  const dim3 grid((p.W + kBX - 1) / kBX, (p.H + kBY - 1) / kBY, images);
  const size_t smem = (kBX + 2) * (kBY + 2) * sizeof(float);
  PYCNN_LAUNCH(grid, dim3(kBX, kBY), smem, nullptr, stencil2d_kernel<kBX, kBY>)(p);
  return cudaGetLastError();
}

}  // namespace emu_selftest
