// Torch-side helpers shared by the CPU and CUDA implementations of pycnn::se_*: argument checks whose
// messages name the argument, and the shapes of the saved vectors.
#pragma once

#include "op_common.h"

namespace pycnn {

// fc1_weight [C_r, C] or [C_r, C, 1, 1] (nn.Conv2d 1x1 or nn.Linear), fc2_weight [C, C_r] or [C, C_r, 1, 1].
inline void check_fc_weight(std::string_view op, const char* name, const Tensor& w, const Tensor& input,
                            int64_t out, int64_t in, const char* expect) {
  const bool shape_ok = (w.dim() == 2 || (w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1)) &&
                        w.size(0) == out && w.size(1) == in;
  TORCH_CHECK(shape_ok, op, ": ", name, " must have shape ", expect, " = [", out, ", ", in, "] or [", out, ", ", in,
              ", 1, 1], got ", w.sizes());
  TORCH_CHECK(w.device() == input.device(), op, ": ", name, " is on ", w.device(), " but input is on ",
              input.device());
  const auto t = w.scalar_type();
  TORCH_CHECK(t == input.scalar_type() || t == acc_dtype(input.scalar_type()), op, ": ", name, " has dtype ", t,
              " but must have the input's dtype (", input.scalar_type(), ") or ", acc_dtype(input.scalar_type()));
}

inline void check_fc_bias(std::string_view op, const char* name, const Tensor& b, const Tensor& input,
                          const Tensor& weight, int64_t out) {
  TORCH_CHECK(b.dim() == 1 && b.size(0) == out, op, ": ", name, " must be 1-D with ", out, " elements, got shape ",
              b.sizes());
  TORCH_CHECK(b.device() == input.device(), op, ": ", name, " is on ", b.device(), " but input is on ",
              input.device());
  TORCH_CHECK(b.scalar_type() == weight.scalar_type(), op, ": ", name, " has dtype ", b.scalar_type(),
              " but its weight has dtype ", weight.scalar_type());
}

// Checks input, fc weights/biases, residual; returns the reduced channel count C_r.
inline int64_t check_se_args(std::string_view op, const Tensor& input, const Tensor& fc1_weight,
                             const OptTensor& fc1_bias, const Tensor& fc2_weight, const OptTensor& fc2_bias,
                             const OptTensor& residual) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D with shape ",
              input.sizes());
  check_floating(op, input);
  TORCH_CHECK(input.size(2) * input.size(3) > 0, op, ": input must have H * W > 0 to be pooled, got shape ",
              input.sizes());
  const int64_t c = input.size(1);
  TORCH_CHECK(fc1_weight.dim() >= 1, op, ": fc1_weight must have shape [C_r, C] or [C_r, C, 1, 1], got ",
              fc1_weight.sizes());
  const int64_t cr = fc1_weight.size(0);
  TORCH_CHECK(cr >= 1, op, ": fc1_weight must have at least one output channel (C_r >= 1), got ",
              fc1_weight.sizes());
  check_fc_weight(op, "fc1_weight", fc1_weight, input, cr, c, "[C_r, C]");
  check_fc_weight(op, "fc2_weight", fc2_weight, input, c, cr, "[C, C_r]");
  TORCH_CHECK(fc2_weight.scalar_type() == fc1_weight.scalar_type(), op, ": fc2_weight has dtype ",
              fc2_weight.scalar_type(), " but fc1_weight has dtype ", fc1_weight.scalar_type());
  if (fc1_bias) check_fc_bias(op, "fc1_bias", *fc1_bias, input, fc1_weight, cr);
  if (fc2_bias) check_fc_bias(op, "fc2_bias", *fc2_bias, input, fc2_weight, c);
  if (residual) check_same_as_input(op, "residual", *residual, input);
  return cr;
}

// A saved per-image vector (pooled [N, C], hidden [N, C_r], gate [N, C]) in the accumulation dtype.
inline void check_saved(std::string_view op, const char* name, const Tensor& t, const Tensor& input, int64_t n,
                        int64_t k) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == k, op, ": ", name, " must have shape [", n, ", ", k,
              "], got ", t.sizes());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == acc_dtype(input.scalar_type()), op, ": ", name, " must have dtype ",
              acc_dtype(input.scalar_type()), ", got ", t.scalar_type());
}

inline int64_t check_se_backward_args(std::string_view op, const Tensor& grad_output, const Tensor& input,
                                      const Tensor& fc1_weight, const Tensor& fc2_weight, const OptTensor& residual,
                                      const Tensor& pooled, const Tensor& hidden, const Tensor& gate) {
  const int64_t cr = check_se_args(op, input, fc1_weight, std::nullopt, fc2_weight, std::nullopt, residual);
  check_same_as_input(op, "grad_output", grad_output, input);
  const int64_t n = input.size(0), c = input.size(1);
  check_saved(op, "pooled", pooled, input, n, c);
  check_saved(op, "hidden", hidden, input, n, cr);
  check_saved(op, "gate", gate, input, n, c);
  return cr;
}

}  // namespace pycnn
