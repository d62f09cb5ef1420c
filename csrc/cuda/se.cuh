// pycnn::se on CUDA: params and launchers (torch-free). Activations are NHWC, viewed per image as
// [hw, channels]; pooled/hidden/gate and the weight gradients' accumulation are in the accumulation type
// (float, or double for double). The fc weights and biases are in the element type, or in the
// accumulation type when weights_acc is set (float32 parameters with half-precision activations).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "common.cuh"

namespace pycnn {
namespace cuda {

// What a forward and its backward launch share besides their pointers (both params structs derive from it).
struct SeConfig {
  int64_t n, hw, channels, reduced;
  Act act, post_act;
  DType dtype;
  bool weights_acc;
  int num_sms;  // sizes the grids
};

struct SeForwardParams : SeConfig {
  const void* x;         // [n, hw, channels]
  const void* residual;  // [n, hw, channels] or nullptr
  void* y;               // [n, hw, channels]
  const void* w1;        // [reduced, channels]
  const void* b1;        // [reduced] or nullptr
  const void* w2;        // [channels, reduced]
  const void* b2;        // [channels] or nullptr
  void* pooled;          // [n, channels] accumulation type: mean over hw
  void* hidden;          // [n, reduced]  accumulation type: w1 @ pooled + b1 (before act)
  void* gate;            // [n, channels] accumulation type: sigmoid(w2 @ act(hidden) + b2)
  void* workspace;       // se_forward_workspace_bytes(...) bytes
};

struct SeBackwardParams : SeConfig {
  const void* dy;        // [n, hw, channels]
  const void* x;         // [n, hw, channels]
  const void* residual;  // [n, hw, channels] or nullptr
  void* dx;              // [n, hw, channels]
  void* dresidual;       // [n, hw, channels] or nullptr
  const void* w1;        // [reduced, channels]
  const void* w2;        // [channels, reduced]
  const void* pooled;    // [n, channels] accumulation type (saved by the forward)
  const void* hidden;    // [n, reduced]
  const void* gate;      // [n, channels]
  void* dw1;             // [reduced, channels] weight type
  void* db1;             // [reduced]
  void* dw2;             // [channels, reduced]
  void* db2;             // [channels]
  void* workspace;       // se_backward_workspace_bytes(...) bytes
};

// Launch limits the torch glue checks first (so its errors can say what is too large).
constexpr int64_t kSeMaxBatch = 65535;  // images are a grid dimension
size_t se_forward_smem_bytes(const SeForwardParams& p);
size_t se_backward_smem_bytes(const SeBackwardParams& p);
constexpr size_t kSeMaxSmemBytes = 227 * 1024;

size_t se_forward_workspace_bytes(const SeForwardParams& p);
size_t se_backward_workspace_bytes(const SeBackwardParams& p);
// Two launches each: forward = per-(image, row chunk) channel sums -> excite (both FCs, per image) + scale;
// backward = per-(image, row chunk) sums of dL/dgate -> one launch whose blocks compute dx/dresidual
// (per image and row chunk), dw2/db2 (per tile of channels) and dw1/db1 (per tile of reduced channels).
cudaError_t se_forward(const SeForwardParams& p, cudaStream_t stream);
cudaError_t se_backward(const SeBackwardParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
