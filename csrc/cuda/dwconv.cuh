// pycnn::dwconv on CUDA: params and launchers (torch-free). Tensors are NHWC; the weight is [k * k][C]
// (taps major) and the per-channel scale and bias are [C], all three in the accumulation type (float, or
// double for double); the weight, scale and bias gradients are accumulated in that type too.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "common.cuh"

namespace pycnn {
namespace cuda {

struct DwConvGeom {
  int64_t n, h, w, c;  // input
  int64_t oh, ow;      // output
  int k;               // kernel size (k x k): 1, 3, 5 or 7
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

struct DwConvForwardParams {
  const void* x;         // [n, h, w, c]
  const void* weight;    // [k * k][c], accumulation type
  const void* scale;     // [c], accumulation type
  const void* bias;      // [c], accumulation type
  const void* residual;  // [n, oh, ow, c] or nullptr
  void* y;               // [n, oh, ow, c]
  DwConvGeom g;
  Act act;
  DType dtype;
};

struct DwConvBackwardParams {
  const void* dy;        // [n, oh, ow, c]
  const void* x;         // [n, h, w, c]
  const void* weight;    // [k * k][c], accumulation type
  const void* scale;     // [c]
  const void* bias;      // [c]
  const void* residual;  // [n, oh, ow, c] or nullptr
  void* dx;              // [n, h, w, c]
  void* dresidual;       // [n, oh, ow, c] or nullptr (when residual is given)
  void* dweight;         // [k * k][c], accumulation type (zeroed and accumulated by the launcher)
  void* dscale;          // [c], accumulation type (zeroed and accumulated by the launcher)
  void* dbias;           // [c], accumulation type (zeroed and accumulated by the launcher)
  void* workspace;       // dwconv_backward_workspace_bytes(p) bytes, 16-byte aligned
  DwConvGeom g;
  Act act;
  DType dtype;
  int num_sms;  // sizes the grid of the weight-gradient pass
};

// Forward: one launch. Backward: two (the gradient of the convolution's output g = dy * act'(z) * scale,
// with dresidual, dscale, dbias and dweight from the same pass; then dx, the transposed convolution of g).
size_t dwconv_backward_workspace_bytes(const DwConvBackwardParams& p);
cudaError_t dwconv_forward(const DwConvForwardParams& p, cudaStream_t stream);
cudaError_t dwconv_backward(const DwConvBackwardParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
