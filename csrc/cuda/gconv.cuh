// pycnn::gconv on CUDA: params and launchers (torch-free). Tensors are NHWC; the weight comes in the
// GEMM layouts of csrc/gconv.h ("wk" [G, k*k, Cg, Cog] for forward, "wt" [G, k*k, Cog, Cg] for the input
// gradient); per-channel vectors (scale, bias, their gradients) and the weight gradient are float32.
// Element types: float32, float16, bfloat16.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "common.cuh"

namespace pycnn {
namespace cuda {

struct GConvShape {
  int64_t n, h, w, c_in;   // input [n, h, w, c_in]
  int64_t oh, ow, c_out;   // output [n, oh, ow, c_out]
  int64_t groups, cg, cog; // channels per group: cg = c_in / groups, cog = c_out / groups
  int64_t k;               // square kernel, 1 or 3
  int64_t sh, sw, ph, pw;  // stride, padding (dilation 1)
};

// Which forward kernel runs: chosen per shape (Auto), or forced (tests run both on the same shapes).
enum class GConvPath : int32_t { Auto = 0, Simt = 1, TensorCore = 2 };

// What a forward and its backward launch share besides their pointers (both params structs derive from it).
struct GConvConfig {
  GConvShape s;
  Act act;
  DType dtype;
  GConvPath path;  // forward: the kernel; backward: the input-gradient kernel (SIMT or tensor cores)
  int num_sms;
  int cc_major;  // compute capability: tensor-core kernels need >= 8
};

struct GConvForwardParams : GConvConfig {
  const void* x;         // [n, h, w, c_in]
  const void* w;         // wk [groups, k*k, cg, cog]
  const void* scale;     // float [c_out] or nullptr (1)
  const void* bias;      // float [c_out] or nullptr (0)
  const void* residual;  // [n, oh, ow, c_out] or nullptr
  void* y;               // [n, oh, ow, c_out] = act(conv * scale + bias + residual)
  void* saved;           // [n, oh, ow, c_out] raw conv output, or nullptr
};

struct GConvBackwardParams : GConvConfig {
  const void* dy;        // [n, oh, ow, c_out]
  const void* x;         // [n, h, w, c_in]
  const void* wt;        // wt [groups, k*k, cog, cg]
  const void* scale;     // float [c_out] or nullptr
  const void* bias;      // float [c_out] or nullptr
  const void* residual;  // [n, oh, ow, c_out] or nullptr
  const void* saved;     // [n, oh, ow, c_out] raw conv output; required when scale or act is given
  void* dx;              // [n, h, w, c_in]
  void* dw;              // float wk layout [groups, k*k, cg, cog]
  void* dscale;          // float [c_out] or nullptr
  void* dbias;           // float [c_out] or nullptr
  void* dresidual;       // [n, oh, ow, c_out] or nullptr
  void* workspace;       // gconv_backward_workspace_bytes(...) bytes
};

// Whether every tensor of the shape has < 2^31 elements (the kernels index in 32 bits); the launchers
// return cudaErrorInvalidValue otherwise.
bool gconv_shape_fits(const GConvShape& s);
// Whether gconv_forward runs the tensor-core (wmma implicit GEMM) kernel for these params.
bool gconv_forward_uses_tensor_cores(const GConvForwardParams& p);
size_t gconv_backward_workspace_bytes(const GConvBackwardParams& p);
cudaError_t gconv_forward(const GConvForwardParams& p, cudaStream_t stream);
cudaError_t gconv_backward(const GConvBackwardParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
