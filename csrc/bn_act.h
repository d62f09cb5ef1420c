// Torch-side helpers of pycnn::bn_act_* shared by its CPU and CUDA implementations: the argument checks
// (op_common.h has the ones every op shares).
#pragma once

#include <algorithm>
#include <optional>
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

inline void check_bn_act_update_stats_args(const Tensor& running_mean, const Tensor& running_var,
                                           const OptTensor& num_batches_tracked, const Tensor& save_mean,
                                           const Tensor& save_var, std::optional<double> momentum, int64_t count) {
  constexpr std::string_view op = "pycnn.bn_act_update_stats_";
  TORCH_CHECK(running_mean.dim() == 1, op, ": running_mean must be 1-D, got shape ", running_mean.sizes());
  const auto dtype = running_mean.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": running_mean must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t channels = running_mean.size(0);
  auto check_vector = [&](const char* name, const Tensor& t) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == channels, op, ": ", name, " must be 1-D with ", channels,
                " elements (as running_mean), got shape ", t.sizes());
    TORCH_CHECK(t.device() == running_mean.device(), op, ": ", name, " is on ", t.device(),
                " but running_mean is on ", running_mean.device());
  };
  check_vector("running_var", running_var);
  check_vector("save_mean", save_mean);
  check_vector("save_var", save_var);
  TORCH_CHECK(running_var.scalar_type() == dtype, op, ": running_var has dtype ", running_var.scalar_type(),
              " but running_mean has dtype ", dtype);
  TORCH_CHECK(save_mean.scalar_type() == at::kFloat || save_mean.scalar_type() == at::kDouble, op,
              ": save_mean must be float32 or float64 (what bn_act_forward returns), got ", save_mean.scalar_type());
  TORCH_CHECK(save_var.scalar_type() == save_mean.scalar_type(), op, ": save_var has dtype ",
              save_var.scalar_type(), " but save_mean has dtype ", save_mean.scalar_type());
  TORCH_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op,
              ": running_mean and running_var must be contiguous (they are updated in place)");
  if (num_batches_tracked) {
    const Tensor& n = *num_batches_tracked;
    TORCH_CHECK(n.numel() == 1 && n.scalar_type() == at::kLong, op,
                ": num_batches_tracked must be one int64 value, got ", n.scalar_type(), " of shape ", n.sizes());
    TORCH_CHECK(n.device() == running_mean.device(), op, ": num_batches_tracked is on ", n.device(),
                " but running_mean is on ", running_mean.device());
  }
  TORCH_CHECK(momentum || num_batches_tracked, op,
              ": momentum=None (a cumulative average) needs num_batches_tracked, the count of batches seen");
  TORCH_CHECK(count > 1, op, ": count (values per channel) must be more than 1 for the unbiased variance, got ",
              count);
}

}  // namespace pycnn
