// Torch-side helpers shared by the CPU and CUDA implementations of pycnn::bn_act_*:
// argument checks with messages that name the argument, and per-channel parameter preparation.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <string_view>

#include "activation.h"

namespace pycnn {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

inline Act parse_act(std::string_view op, std::string_view name) {
  if (name == "none" || name == "identity") return Act::None;
  if (name == "relu") return Act::ReLU;
  if (name == "relu6") return Act::ReLU6;
  if (name == "silu" || name == "swish") return Act::SiLU;
  if (name == "hardswish") return Act::HardSwish;
  TORCH_CHECK(false, op, ": unknown activation '", std::string(name),
              "' (expected one of none, relu, relu6, silu, hardswish)");
}

// Padding beyond this only makes outputs too large to allocate; refused with a message naming the argument
// (rather than the allocator's size overflow). The convolution kernels index padded rows in 32 bits.
constexpr int64_t kMaxPadding = int64_t(1) << 20;

// float32 statistics and parameters for float/half/bfloat16 inputs, float64 for float64.
inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_floating(std::string_view op, const Tensor& input) {
  auto t = input.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble, op,
              ": input must be float32, float16, bfloat16 or float64, got ", t);
}

// A per-channel vector argument (weight, bias, running_mean, ...): 1-D of `channels` elements on the
// input's device, float32 or the input's dtype.
inline void check_channel_vector(std::string_view op, const char* name, const Tensor& t, const Tensor& input,
                                 int64_t channels) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == channels, op, ": ", name, " must be 1-D with ", channels,
              " elements (one per channel of input), got shape ", t.sizes());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.is_floating_point(), op, ": ", name, " must be a floating tensor, got ", t.scalar_type());
}

inline void check_same_as_input(std::string_view op, const char* name, const Tensor& t, const Tensor& input) {
  TORCH_CHECK(t.sizes() == input.sizes(), op, ": ", name, " must have the input's shape ", input.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but input has dtype ", input.scalar_type());
}

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

// A per-channel vector in the accumulation dtype, contiguous; `fill` when absent (weight 1, bias 0).
inline Tensor channel_vector_acc(const OptTensor& t, const Tensor& input, double fill) {
  auto acc = acc_dtype(input.scalar_type());
  if (t) return t->to(acc).contiguous();
  return at::full({input.size(1)}, fill, input.options().dtype(acc));
}

// The memory format the kernels work in and return: channels_last when the input is laid out so (and
// not also plainly contiguous, as when C == 1 or H == W == 1), else NCHW. pycnn/ops.py's fake kernels
// apply the same rule.
inline at::MemoryFormat kernel_memory_format(const Tensor& input) {
  return input.is_contiguous(at::MemoryFormat::ChannelsLast) && !input.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

}  // namespace pycnn
