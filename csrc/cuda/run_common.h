// Torch-side helpers shared by every csrc/cuda/<op>_run.h (tensors -> params -> launcher).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <atomic>

#include "common.cuh"
#ifndef PYCNN_EMU
#include <c10/cuda/CUDAException.h>
#endif

namespace pycnn {

inline cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return cuda::DType::Float16;
    case at::kBFloat16: return cuda::DType::BFloat16;
    case at::kDouble: return cuda::DType::Float64;
    default: return cuda::DType::Float32;
  }
}

// An optional operand's data (nullptr when undefined), as the params structs take it.
inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(err));
}

#ifndef PYCNN_EMU
// The number of SMs of t's GPU (sizes the grids of the reductions), queried once per device.
inline int sm_count(const at::Tensor& t) {
  static std::array<std::atomic<int>, 64> counts{};  // 0: not queried yet
  const int device = t.get_device();
  int count = device < 64 ? counts[device].load(std::memory_order_relaxed) : 0;
  if (count == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    if (device < 64) counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}
#endif

}  // namespace pycnn
