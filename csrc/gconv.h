// Torch-side helpers shared by the CPU and CUDA implementations of pycnn::gconv_*: argument checks whose
// messages name the argument, the output geometry, and the weight layouts the kernels read.
//
// Weight layouts (k*k taps, G groups, Cg = C_in / G input and Cog = C_out / G output channels per group):
//   PyTorch      [C_out, Cg, k, k]
//   "wk"  (fwd)  [G, k*k, Cg, Cog]: per group and tap a [Cg x Cog] row-major GEMM B matrix
//   "wt"  (dgrad)[G, k*k, Cog, Cg]: the same transposed per tap
#pragma once

#include <ATen/core/Tensor.h>  // not ATen/ATen.h: 4x the parse time, in every kernel variant's unit
#include <c10/util/Optional.h>

#include <string_view>

#include "op_common.h"

namespace pycnn {

// Geometry of one grouped convolution (NCHW names; the kernels index NHWC).
struct GConvGeometry {
  int64_t n, c_in, h, w;       // input
  int64_t c_out, oh, ow;       // output
  int64_t groups, cg, cog, k;  // channels per group in / out, square kernel size
  int64_t sh, sw, ph, pw;      // stride, padding
  int64_t taps() const { return k * k; }
  int64_t out_rows() const { return n * oh * ow; }
  int64_t in_rows() const { return n * h * w; }
};

inline void check_pair(std::string_view op, const char* name, c10::IntArrayRef v, int64_t min) {
  TORCH_CHECK(v.size() == 2, op, ": ", name, " must have 2 elements (height, width), got ", v);
  TORCH_CHECK(v[0] >= min && v[1] >= min, op, ": ", name, " must be >= ", min, ", got ", v);
}

// Checks every argument of gconv_forward / gconv_backward and returns the geometry.
inline GConvGeometry check_gconv_args(std::string_view op, const Tensor& input, const Tensor& weight,
                                      const OptTensor& scale, const OptTensor& bias, const OptTensor& residual,
                                      c10::IntArrayRef stride, c10::IntArrayRef padding, int64_t groups) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D with shape ",
              input.sizes());
  check_floating(op, input);
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  const int64_t c_in = input.size(1);
  TORCH_CHECK(c_in % groups == 0, op, ": groups (", groups, ") must divide the input channels (", c_in, ")");
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in / groups, k, k), got shape ",
              weight.sizes());
  TORCH_CHECK(weight.size(2) == weight.size(3) && (weight.size(2) == 1 || weight.size(2) == 3), op,
              ": kernel_size must be 1x1 or 3x3, got weight of shape ", weight.sizes());
  const int64_t c_out = weight.size(0);
  TORCH_CHECK(c_out >= groups && c_out % groups == 0, op, ": groups (", groups,
              ") must divide the output channels (weight.size(0) = ", c_out, ")");
  TORCH_CHECK(weight.size(1) == c_in / groups, op, ": weight must have shape (C_out, C_in / groups, k, k) = (",
              c_out, ", ", c_in / groups, ", k, k) for ", c_in, " input channels and ", groups, " groups, got ",
              weight.sizes());
  TORCH_CHECK(weight.device() == input.device(), op, ": weight is on ", weight.device(), " but input is on ",
              input.device());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight has dtype ", weight.scalar_type(),
              " but input has dtype ", input.scalar_type());
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  TORCH_CHECK(padding[0] <= kMaxPadding && padding[1] <= kMaxPadding, op, ": padding must be at most ", kMaxPadding,
              ", got ", padding);
  GConvGeometry g;
  g.n = input.size(0);
  g.c_in = c_in;
  g.h = input.size(2);
  g.w = input.size(3);
  g.c_out = c_out;
  g.groups = groups;
  g.cg = c_in / groups;
  g.cog = c_out / groups;
  g.k = weight.size(2);
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  TORCH_CHECK(g.h + 2 * g.ph >= g.k && g.w + 2 * g.pw >= g.k, op, ": input of spatial size ", g.h, "x", g.w,
              " with padding ", padding, " is smaller than kernel_size ", g.k);
  g.oh = (g.h + 2 * g.ph - g.k) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.k) / g.sw + 1;
  if (scale) check_channel_vector(op, "scale", *scale, input, c_out);
  if (bias) check_channel_vector(op, "bias", *bias, input, c_out);
  if (residual) check_residual_output(op, *residual, input, g.n, c_out, g.oh, g.ow);
  return g;
}

// check_gconv_args plus grad_output (the output's shape and dtype) and saved (empty or the output's shape).
inline GConvGeometry check_gconv_backward_args(std::string_view op, const Tensor& grad_output, const Tensor& input,
                                               const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                                               const OptTensor& residual, const Tensor& saved,
                                               c10::IntArrayRef stride, c10::IntArrayRef padding, int64_t groups) {
  const GConvGeometry g = check_gconv_args(op, input, weight, scale, bias, residual, stride, padding, groups);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n && grad_output.size(1) == g.c_out &&
                  grad_output.size(2) == g.oh && grad_output.size(3) == g.ow,
              op, ": grad_output must have the output's shape [", g.n, ", ", g.c_out, ", ", g.oh, ", ", g.ow,
              "], got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op, ": grad_output has dtype ",
              grad_output.scalar_type(), " but input has dtype ", input.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), op, ": grad_output is on ", grad_output.device(),
              " but input is on ", input.device());
  TORCH_CHECK(saved.numel() == 0 || saved.sizes() == grad_output.sizes(), op,
              ": saved must be empty or have the output's shape ", grad_output.sizes(), ", got ", saved.sizes());
  if (saved.numel() > 0) {
    TORCH_CHECK(saved.scalar_type() == input.scalar_type() && saved.device() == input.device(), op,
                ": saved must have the input's dtype and device");
  }
  return g;
}

// Whether backward needs the raw convolution output saved by forward: it does when the epilogue is not
// the identity up to a bias (a scale, or an activation, makes d(output)/d(conv) depend on it).
inline bool gconv_needs_saved(const OptTensor& scale, Act act) { return scale.has_value() || act != Act::None; }

// [C_out, Cg, k, k] -> [G, k*k, Cg, Cog] (transposed = false) or [G, k*k, Cog, Cg] (true), in `dtype`.
inline Tensor gconv_kernel_weight(const Tensor& weight, const GConvGeometry& g, bool transposed, at::ScalarType dtype) {
  Tensor w = weight.to(dtype).reshape({g.groups, g.cog, g.cg, g.k * g.k});
  w = transposed ? w.permute({0, 3, 1, 2}) : w.permute({0, 3, 2, 1});
  return w.contiguous();
}

// [G, k*k, Cg, Cog] -> [C_out, Cg, k, k]
inline Tensor gconv_weight_from_kernel(const Tensor& wk, const GConvGeometry& g) {
  return wk.reshape({g.groups, g.taps(), g.cg, g.cog}).permute({0, 3, 2, 1}).reshape({g.c_out, g.cg, g.k, g.k});
}

}  // namespace pycnn
