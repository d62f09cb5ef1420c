// Emulator self-test kernels (not product code): 3-D grids and blocks, built-in variables.
#include "common.cuh"

namespace emu_selftest {

// out[z][y][x] = (linear block id) * 10000 + (linear thread id in its block), for the covered range only.
__global__ void index3d_kernel(int* __restrict__ out, int nx, int ny, int nz) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  const int z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x >= nx || y >= ny || z >= nz) return;
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[(z * ny + y) * nx + x] = block * 10000 + thread;
}

inline cudaError_t launch_index3d(int* out, int nx, int ny, int nz, dim3 block) {
  const dim3 grid((nx + block.x - 1) / block.x, (ny + block.y - 1) / block.y, (nz + block.z - 1) / block.z);
  PYCNN_LAUNCH(grid, block, 0, nullptr, index3d_kernel)(out, nx, ny, nz);
  return cudaGetLastError();
}

}  // namespace emu_selftest
