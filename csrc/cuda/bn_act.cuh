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

// The running-statistics update (pycnn::bn_act_update_stats_; formula in running_stats.h), one block.
struct BnActStatsParams {
  int64_t channels;
  void* running_mean;           // [channels], running_dtype, updated in place
  void* running_var;            // [channels], running_dtype, updated in place
  int64_t* num_batches_tracked; // one value, incremented; or nullptr
  const void* save_mean;        // [channels], save_dtype (Float32 or Float64)
  const void* save_var;         // [channels], biased batch variance
  bool cumulative;              // factor 1 / num_batches_tracked (momentum None) instead of momentum
  double momentum;
  int64_t count;                // values per channel of the batch (> 1)
  DType running_dtype, save_dtype;
};

size_t bn_act_forward_workspace_bytes(const BnActForwardParams& p);
size_t bn_act_backward_workspace_bytes(const BnActBackwardParams& p);
cudaError_t bn_act_forward(const BnActForwardParams& p, cudaStream_t stream);
cudaError_t bn_act_backward(const BnActBackwardParams& p, cudaStream_t stream);
cudaError_t bn_act_update_stats(const BnActStatsParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
