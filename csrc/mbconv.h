// Torch-side helpers of pycnn::mbconv_forward (the fused inverted-residual block, eval): argument checks
// whose messages name the argument and the block's geometry. Shared by the CPU op, the CUDA op
// (cuda/mbconv_run.h) and pycnn._C's check_mbconv_forward (the fake kernel's checks).
#pragma once

#include <ATen/core/Tensor.h>  // not ATen/ATen.h: 4x the parse time, in every kernel variant's unit

#include <string_view>

#include "mbconv_geometry.h"
#include "op_common.h"

namespace pycnn {

namespace detail {
// A weight of the block: `shape` with the trailing 1x1 of a conv weight optional for the 1x1 convs.
inline void check_mbconv_weight(std::string_view op, const char* name, const Tensor& t, const Tensor& input,
                                int64_t out, int64_t in, int64_t k, bool depthwise) {
  const bool ok = depthwise ? (t.dim() == 4 && t.size(0) == out && t.size(1) == 1 && t.size(2) == k && t.size(3) == k)
                            : ((t.dim() == 4 && t.size(0) == out && t.size(1) == in && t.size(2) == 1 && t.size(3) == 1) ||
                               (t.dim() == 2 && t.size(0) == out && t.size(1) == in));
  if (depthwise) {
    TORCH_CHECK(ok, op, ": ", name, " must have shape (", out, ", 1, k, k), got ", t.sizes());
  } else {
    TORCH_CHECK(ok, op, ": ", name, " must have shape (", out, ", ", in, ", 1, 1) or (", out, ", ", in, "), got ",
                t.sizes());
  }
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but input has dtype ", input.scalar_type());
}
}  // namespace detail

inline MbConvGeometry check_mbconv_args(std::string_view op, const Tensor& input, const OptTensor& expand_weight,
                                        const OptTensor& expand_bias, const Tensor& dw_weight,
                                        const OptTensor& dw_bias, const Tensor& project_weight,
                                        const OptTensor& project_bias, int64_t stride, bool residual) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D with shape ",
              input.sizes());
  check_floating(op, input);  // the CPU kernel narrows it to float32 and float64
  MbConvGeometry g{};
  g.n = input.size(0);
  g.c = input.size(1);
  g.h = input.size(2);
  g.w = input.size(3);
  TORCH_CHECK(g.h >= 1 && g.w >= 1, op, ": input must have a non-empty spatial size, got ", input.sizes());
  g.expand = expand_weight.has_value();
  TORCH_CHECK(g.expand || !expand_bias, op, ": expand_bias is given without expand_weight");
  TORCH_CHECK(!g.expand || expand_weight->dim() >= 1, op, ": expand_weight must have shape (C_exp, ", g.c,
              ", 1, 1) or (C_exp, ", g.c, "), got ", expand_weight->sizes());
  g.e = g.expand ? expand_weight->size(0) : g.c;
  g.r = 0;
  if (g.expand) detail::check_mbconv_weight(op, "expand_weight", *expand_weight, input, g.e, g.c, 1, false);
  TORCH_CHECK(dw_weight.dim() == 4, op, ": dw_weight must have shape (", g.e, ", 1, k, k), got ", dw_weight.sizes());
  const int64_t k = dw_weight.size(2);
  detail::check_mbconv_weight(op, "dw_weight", dw_weight, input, g.e, 1, k, true);
  TORCH_CHECK(k % 2 == 1 && k <= kMbConvMaxKernel, op, ": dw_weight's kernel size must be odd and at most ",
              kMbConvMaxKernel, ", got ", k);
  TORCH_CHECK(project_weight.dim() >= 1, op, ": project_weight must have shape (C_out, ", g.e,
              ", 1, 1) or (C_out, ", g.e, "), got ", project_weight.sizes());
  g.co = project_weight.size(0);
  detail::check_mbconv_weight(op, "project_weight", project_weight, input, g.co, g.e, 1, false);
  if (expand_bias) check_channel_vector(op, "expand_bias", *expand_bias, input, g.e);
  if (dw_bias) check_channel_vector(op, "dw_bias", *dw_bias, input, g.e);
  if (project_bias) check_channel_vector(op, "project_bias", *project_bias, input, g.co);
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2, got ", stride);
  g.k = static_cast<int>(k);
  g.s = static_cast<int>(stride);
  g.p = g.k / 2;
  g.oh = (g.h + 2 * g.p - g.k) / g.s + 1;
  g.ow = (g.w + 2 * g.p - g.k) / g.s + 1;
  g.residual = residual;
  TORCH_CHECK(!residual || (g.s == 1 && g.co == g.c), op,
              ": residual needs stride 1 and as many output channels as input channels, got stride ", stride,
              ", ", g.c, " -> ", g.co, " channels");
  return g;
}

// The optional squeeze-and-excitation between the depthwise conv and the projection: fc1 (r, e[, 1, 1]) and
// fc2 (e, r[, 1, 1]) both or neither, their biases optional. Sets g.r (0 without SE).
inline void check_mbconv_se(std::string_view op, MbConvGeometry& g, const Tensor& input,
                            const OptTensor& se_reduce_weight, const OptTensor& se_reduce_bias,
                            const OptTensor& se_expand_weight, const OptTensor& se_expand_bias) {
  TORCH_CHECK(se_reduce_weight.has_value() == se_expand_weight.has_value(), op,
              ": se_reduce_weight and se_expand_weight are given together or not at all");
  g.r = 0;
  if (!se_reduce_weight) {
    TORCH_CHECK(!se_reduce_bias && !se_expand_bias, op, ": an SE bias is given without the SE weights");
    return;
  }
  TORCH_CHECK(se_reduce_weight->dim() >= 1 && se_reduce_weight->size(0) >= 1, op,
              ": se_reduce_weight must have shape (C_r, ", g.e, ", 1, 1) or (C_r, ", g.e, "), got ",
              se_reduce_weight->sizes());
  g.r = se_reduce_weight->size(0);
  detail::check_mbconv_weight(op, "se_reduce_weight", *se_reduce_weight, input, g.r, g.e, 1, false);
  detail::check_mbconv_weight(op, "se_expand_weight", *se_expand_weight, input, g.e, g.r, 1, false);
  if (se_reduce_bias) check_channel_vector(op, "se_reduce_bias", *se_reduce_bias, input, g.r);
  if (se_expand_bias) check_channel_vector(op, "se_expand_bias", *se_expand_bias, input, g.e);
}

}  // namespace pycnn
