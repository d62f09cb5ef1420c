// BatchNorm's running-statistics update (pycnn::bn_act_update_stats_), one channel, shared by the CPU and
// CUDA kernels (torch-free). It follows what nn.BatchNorm2d's update amounts to in PyTorch's own ops, with
// their roundings: the batch statistics are rounded to the buffers' dtype R, then torch.lerp runs in R's
// computation type O (float for half/bfloat16/float, double for double). Results agree with PyTorch's to the
// last bit or within one unit of it: PyTorch's vectorized CPU lerp fuses a multiply-add, its scalar one and
// this one do not (and nvcc may contract), so PyTorch's own paths differ there too.
#pragma once

#include "activation.h"  // PYCNN_HOST_DEVICE

namespace pycnn {

// torch.lerp (ATen's Lerp.h): exact at weight 0 and 1.
template <typename O>
PYCNN_HOST_DEVICE O torch_lerp(O self, O end, O weight) {
  const bool small = weight < O(0.5) && weight > O(-0.5);
  return small ? self + weight * (end - self) : end - (end - self) * (O(1) - weight);
}

// mean, var: the running statistics (in O, read from R); save_mean, save_var: the batch mean and biased
// variance in their own type S; unbias = count / (count - 1) in S; round(v): v rounded to R, back in O.
template <typename O, typename S, typename Round>
PYCNN_HOST_DEVICE void running_stats_update(O& mean, O& var, S save_mean, S save_var, S unbias, O factor,
                                            Round round) {
  mean = torch_lerp(mean, round(static_cast<O>(save_mean)), factor);
  var = torch_lerp(var, round(static_cast<O>(save_var * unbias)), factor);
}

// count / (count - 1), the unbiased variance's factor, computed in double and rounded to S (as PyTorch rounds
// the Python float it multiplies save_var by).
template <typename S>
PYCNN_HOST_DEVICE S unbias_factor(int64_t count) {
  return static_cast<S>(static_cast<double>(count) / static_cast<double>(count - 1));
}

// The factor of momentum=None, the cumulative average over `batches` batches: 1 / batches in R.
template <typename O, typename Round>
PYCNN_HOST_DEVICE O cumulative_factor(int64_t batches, Round round) {
  return round(O(1) / round(static_cast<O>(batches)));
}

}  // namespace pycnn
