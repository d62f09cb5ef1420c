// Torch-side helpers shared by every csrc/cuda/<op>_run.h (tensors -> params -> launcher).
#pragma once

#include <ATen/ATen.h>

#include "common.cuh"

namespace pycnn {

inline cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return cuda::DType::Float16;
    case at::kBFloat16: return cuda::DType::BFloat16;
    case at::kDouble: return cuda::DType::Float64;
    default: return cuda::DType::Float32;
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace pycnn
