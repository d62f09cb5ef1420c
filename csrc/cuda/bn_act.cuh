// pycnn::bn_act on CUDA: params and launchers (torch-free). Tensors are NHWC, viewed as [rows, channels]
// with rows = N * H * W; per-channel vectors are in the accumulation type (float, or double for double).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "common.cuh"

namespace pycnn {
namespace cuda {

// What a forward and its backward launch share besides their pointers (both params structs derive from it).
struct BnActConfig {
  int64_t rows;
  int64_t channels;
  double eps;
  Act act;
  bool training;
  DType dtype;
  int num_sms;  // sizes the grid of the reductions
};

struct BnActForwardParams : BnActConfig {
  const void* x;         // [rows, channels]
  const void* residual;  // [rows, channels] or nullptr
  void* y;               // [rows, channels]
  const void* weight;    // [channels]
  const void* bias;      // [channels]
  void* mean;            // [channels]: written when training, read otherwise
  void* var;             // [channels]: biased batch variance when training, running variance otherwise
  void* workspace;       // bn_act_forward_workspace_bytes(...) bytes
};

struct BnActBackwardParams : BnActConfig {
  const void* dy;        // [rows, channels]
  const void* x;         // [rows, channels]
  const void* residual;  // [rows, channels] or nullptr
  void* dx;              // [rows, channels]
  void* dresidual;       // [rows, channels] or nullptr
  const void* weight;    // [channels]
  const void* bias;      // [channels]
  const void* mean;      // [channels]
  const void* var;       // [channels]
  void* dweight;         // [channels]
  void* dbias;           // [channels]
  void* workspace;       // bn_act_backward_workspace_bytes(...) bytes
};

size_t bn_act_forward_workspace_bytes(const BnActForwardParams& p);
size_t bn_act_backward_workspace_bytes(const BnActBackwardParams& p);
cudaError_t bn_act_forward(const BnActForwardParams& p, cudaStream_t stream);
cudaError_t bn_act_backward(const BnActBackwardParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
