// Shared prelude of every CUDA kernel source in csrc/cuda/.
//
// Kernel sources are torch-free (a params struct + raw pointers) and are compiled twice:
// by nvcc for the GPU, and by the host C++ compiler with -DPYCNN_EMU against csrc/emu/
// so that tests run the very same text on the CPU (docs/design.md section 5). The two macros
// below are the only places where the two builds differ inside a kernel source.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef PYCNN_EMU
#include "../emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

// PYCNN_LAUNCH(grid, block, smem_bytes, stream, kernel<T, ...>)(args...)
// The kernel comes last so template arguments with commas need no extra parentheses.
#ifdef PYCNN_EMU
#define PYCNN_LAUNCH(grid, block, smem, stream, ...) \
  ::pycnn_emu::launcher(#__VA_ARGS__, __VA_ARGS__, (grid), (block), (smem))
#else
#define PYCNN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#endif

// PYCNN_DYNAMIC_SMEM(T, name): `T* name` pointing at the launch's dynamic shared memory (16-byte aligned).
#ifdef PYCNN_EMU
#define PYCNN_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::pycnn_emu::dynamic_smem())
#else
#define PYCNN_DYNAMIC_SMEM(T, name)                                  \
  extern __shared__ __align__(16) unsigned char pycnn_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(pycnn_dynamic_smem_)
#endif

namespace pycnn {
namespace cuda {

// Launchers return the launch status instead of throwing: the torch glue checks it
// (C10_CUDA_CHECK) and the emulator tests read it.
#define PYCNN_RETURN_IF_ERROR(expr)          \
  do {                                       \
    cudaError_t pycnn_err_ = (expr);         \
    if (pycnn_err_ != cudaSuccess) return pycnn_err_; \
  } while (0)

// Element type of a launch (params structs carry it; launchers dispatch on it).
enum class DType : int32_t { Float32, Float16, BFloat16, Float64 };

// Host-side sizes of a launch's element and accumulation types, and the 16-byte alignment of its pointers
// (null counts as aligned) that the vectorized (16 bytes per thread) kernels need.
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Float64: return 8;
    default: return 4;
  }
}
inline size_t acc_size(DType t) { return t == DType::Float64 ? 8 : 4; }
inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per thread vector: 16 bytes' worth when `channels` is a multiple of it and every pointer is 16-byte
// aligned (all_aligned), else 1.
inline int vector_width16(DType dtype, int64_t channels, bool all_aligned) {
  const int full = static_cast<int>(16 / dtype_size(dtype));
  return (all_aligned && channels % full == 0) ? full : 1;
}

// How a kernel over rows of `channels` values spreads over a block of `threads`: vec elements per thread
// (vector_width16), cols vectors per row, tx threads along a row's vectors (a power of two up to a warp) and
// ty = threads / tx rows. The start of bn_act's and se's launch plans.
struct RowVectors {
  int vec;
  int tx, ty;
  int64_t cols;
};

inline RowVectors row_vectors(DType dtype, int64_t channels, bool all_aligned, int threads) {
  RowVectors r;
  r.vec = vector_width16(dtype, channels, all_aligned);
  r.cols = channels / r.vec;
  r.tx = 1;
  while (r.tx < 32 && r.tx < r.cols) r.tx *= 2;
  r.ty = threads / r.tx;
  return r;
}

// float32 accumulation for float/half/bfloat16, double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;

template <typename T> __host__ __device__ __forceinline__ acc_t<T> to_acc(T v) { return static_cast<acc_t<T>>(v); }
template <> __host__ __device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <> __host__ __device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __host__ __device__ __forceinline__ T from_acc(acc_t<T> v) { return static_cast<T>(v); }
template <> __host__ __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// VEC elements of T moved as one aligned load/store (128 bits when VEC * sizeof(T) == 16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// Calls f.template run<T>() with the element type (kernels without vector widths).
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F f) {
  switch (dtype) {
    case DType::Float32: return f.template run<float>();
    case DType::Float16: return f.template run<__half>();
    case DType::BFloat16: return f.template run<__nv_bfloat16>();
    case DType::Float64: return f.template run<double>();
  }
  return cudaErrorInvalidValue;
}

// Calls f.template run<T, VEC>() with the element type and the vector width (16 bytes per thread, or 1).
template <typename F>
cudaError_t dispatch_dtype_vec(DType dtype, int vec, F f) {
  switch (dtype) {
    case DType::Float32: return vec == 4 ? f.template run<float, 4>() : f.template run<float, 1>();
    case DType::Float16: return vec == 8 ? f.template run<__half, 8>() : f.template run<__half, 1>();
    case DType::BFloat16:
      return vec == 8 ? f.template run<__nv_bfloat16, 8>() : f.template run<__nv_bfloat16, 1>();
    case DType::Float64: return vec == 2 ? f.template run<double, 2>() : f.template run<double, 1>();
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace pycnn
