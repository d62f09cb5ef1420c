// What every op's torch-side code shares (the CPU kernels, the CUDA glue, pycnn._C's check_* functions):
// the activation names, the accumulation dtype, argument checks whose messages name the argument, per-channel
// parameter preparation and the memory format the kernels work in. <op>.h adds the op's own checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>  // not ATen/ATen.h: 4x the parse time, paid by every kernel variant's unit
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

// A residual added to a convolution's output: the output's shape [n, c, oh, ow], the input's device and dtype.
inline void check_residual_output(std::string_view op, const Tensor& residual, const Tensor& input, int64_t n,
                                  int64_t c, int64_t oh, int64_t ow) {
  const auto& r = residual;
  TORCH_CHECK(r.dim() == 4 && r.size(0) == n && r.size(1) == c && r.size(2) == oh && r.size(3) == ow, op,
              ": residual must have the output's shape [", n, ", ", c, ", ", oh, ", ", ow, "], got ", r.sizes());
  TORCH_CHECK(r.device() == input.device(), op, ": residual is on ", r.device(), " but input is on ",
              input.device());
  TORCH_CHECK(r.scalar_type() == input.scalar_type(), op, ": residual has dtype ", r.scalar_type(),
              " but input has dtype ", input.scalar_type());
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
