// Torch-side helpers of pycnn::bn_act_* shared by its CPU and CUDA implementations: the argument checks
// (op_common.h has the ones every op shares).
#pragma once

#include <algorithm>
#include <string_view>

#include "op_common.h"

namespace pycnn {

inline void check_bn_act_forward_args(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                      const OptTensor& residual, const OptTensor& running_mean,
                                      const OptTensor& running_var, bool training) {
  constexpr std::string_view op = "pycnn.bn_act";
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D with shape ",
              input.sizes());
  check_floating(op, input);
  const int64_t channels = input.size(1);
  if (weight) check_channel_vector(op, "weight", *weight, input, channels);
  if (bias) check_channel_vector(op, "bias", *bias, input, channels);
  if (running_mean) check_channel_vector(op, "running_mean", *running_mean, input, channels);
  if (running_var) check_channel_vector(op, "running_var", *running_var, input, channels);
  if (residual) check_same_as_input(op, "residual", *residual, input);
  if (training) {
    TORCH_CHECK(input.numel() / std::max<int64_t>(channels, 1) > 1, op,
                ": expected more than 1 value per channel when training, got input of shape ", input.sizes(),
                " (N * H * W == 1); use eval mode or a larger batch");
  } else {
    TORCH_CHECK(running_mean && running_var, op,
                ": running_mean and running_var are required when training=False");
  }
}

inline void check_bn_act_backward_args(const Tensor& grad_output, const Tensor& input, const OptTensor& weight,
                                       const OptTensor& bias, const OptTensor& residual, const Tensor& save_mean,
                                       const Tensor& save_var) {
  constexpr std::string_view op = "pycnn.bn_act_backward";
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got shape ", input.sizes());
  check_floating(op, input);
  check_same_as_input(op, "grad_output", grad_output, input);
  const int64_t channels = input.size(1);
  if (weight) check_channel_vector(op, "weight", *weight, input, channels);
  if (bias) check_channel_vector(op, "bias", *bias, input, channels);
  if (residual) check_same_as_input(op, "residual", *residual, input);
  check_channel_vector(op, "save_mean", save_mean, input, channels);
  check_channel_vector(op, "save_var", save_var, input, channels);
}

}  // namespace pycnn
