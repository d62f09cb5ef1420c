// Torch-side helpers shared by the CPU and CUDA implementations of pycnn::dwconv_*: argument checks
// whose messages name the argument, the output geometry, and per-channel / per-tap parameter preparation.
#pragma once

#include <ATen/core/Tensor.h>  // not ATen/ATen.h: 4x the parse time, in every kernel variant's unit

#include <string_view>

#include "op_common.h"

namespace pycnn {

constexpr int kDwConvMaxKernel = 7;

// Geometry of a depthwise convolution: square odd kernel k, per-dimension stride, padding, dilation.
struct DwConvGeometry {
  int64_t n, c, h, w;    // input
  int64_t oh, ow;        // output
  int k;                 // kernel size (k x k)
  int sh, sw, ph, pw, dh, dw;
};

inline int64_t checked_pair(std::string_view op, const char* name, at::IntArrayRef v, int i) {
  TORCH_CHECK(v.size() == 2 || v.size() == 1, op, ": ", name, " must have 1 or 2 elements, got ", v);
  return v.size() == 1 ? v[0] : v[i];
}

inline DwConvGeometry check_dwconv_args(std::string_view op, const Tensor& input, const Tensor& weight,
                                        const OptTensor& scale, const OptTensor& bias, const OptTensor& residual,
                                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got ", input.dim(), "-D with shape ",
              input.sizes());
  check_floating(op, input);
  const int64_t c = input.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == c && weight.size(1) == 1, op,
              ": weight must have shape (C, 1, k, k) with C = ", c,
              " (the input's channels; depthwise: channel multiplier 1), got ", weight.sizes());
  const int64_t k = weight.size(2);
  TORCH_CHECK(weight.size(3) == k, op, ": kernel size must be square (weight shape (C, 1, k, k)), got ",
              weight.size(2), "x", weight.size(3));
  TORCH_CHECK(k % 2 == 1 && k >= 1 && k <= kDwConvMaxKernel, op,
              ": kernel size must be odd and at most 7 (1, 3, 5 or 7), got ", k);
  TORCH_CHECK(weight.device() == input.device(), op, ": weight is on ", weight.device(), " but input is on ",
              input.device());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight has dtype ", weight.scalar_type(),
              " but input has dtype ", input.scalar_type());
  if (scale) check_channel_vector(op, "scale", *scale, input, c);
  if (bias) check_channel_vector(op, "bias", *bias, input, c);
  DwConvGeometry g{};
  g.n = input.size(0);
  g.c = c;
  g.h = input.size(2);
  g.w = input.size(3);
  g.k = static_cast<int>(k);
  const int64_t sh = checked_pair(op, "stride", stride, 0), sw = checked_pair(op, "stride", stride, 1);
  const int64_t ph = checked_pair(op, "padding", padding, 0), pw = checked_pair(op, "padding", padding, 1);
  const int64_t dh = checked_pair(op, "dilation", dilation, 0), dw = checked_pair(op, "dilation", dilation, 1);
  TORCH_CHECK((sh == 1 || sh == 2) && (sw == 1 || sw == 2), op, ": stride must be 1 or 2, got ", stride);
  TORCH_CHECK((dh == 1 || dh == 2) && (dw == 1 || dw == 2), op, ": dilation must be 1 or 2, got ", dilation);
  TORCH_CHECK(ph >= 0 && pw >= 0, op, ": padding must be non-negative, got ", padding);
  TORCH_CHECK(ph <= kMaxPadding && pw <= kMaxPadding, op, ": padding must be at most ", kMaxPadding, ", got ",
              padding);
  g.sh = static_cast<int>(sh);
  g.sw = static_cast<int>(sw);
  g.ph = static_cast<int>(ph);
  g.pw = static_cast<int>(pw);
  g.dh = static_cast<int>(dh);
  g.dw = static_cast<int>(dw);
  const int64_t span_h = g.h + 2 * ph - dh * (k - 1), span_w = g.w + 2 * pw - dw * (k - 1);
  TORCH_CHECK(span_h >= 1 && span_w >= 1, op, ": input of spatial size ", g.h, "x", g.w,
              " is too small for kernel size ", k, " with padding ", padding, " and dilation ", dilation);
  g.oh = (span_h - 1) / sh + 1;
  g.ow = (span_w - 1) / sw + 1;
  if (residual) check_residual_output(op, *residual, input, g.n, c, g.oh, g.ow);
  return g;
}

// check_dwconv_args plus grad_output (the output's shape, the input's dtype and device).
inline DwConvGeometry check_dwconv_backward_args(std::string_view op, const Tensor& grad_output, const Tensor& input,
                                                 const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                                                 const OptTensor& residual, at::IntArrayRef stride,
                                                 at::IntArrayRef padding, at::IntArrayRef dilation) {
  const DwConvGeometry g = check_dwconv_args(op, input, weight, scale, bias, residual, stride, padding, dilation);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.n && grad_output.size(1) == g.c &&
                  grad_output.size(2) == g.oh && grad_output.size(3) == g.ow,
              op, ": grad_output must have the output's shape [", g.n, ", ", g.c, ", ", g.oh, ", ", g.ow, "], got ",
              grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(), op,
              ": grad_output must have the input's dtype and device, got ", grad_output.scalar_type(), " on ",
              grad_output.device());
  return g;
}

// A dwconv call's checked arguments in the layout its kernels read, for the CPU kernels and the CUDA launchers:
// x, dy and the residual in `format`; scale and bias per channel in the accumulation dtype (1 and 0 when absent).
// The weight's layout differs between the kernels, so each caller arranges it.
struct DwConvOperands {
  DwConvGeometry g;
  Act act;
  Tensor x, dy, residual, scale, bias;
};

// grad_output: undefined for the forward (then dy is too).
inline DwConvOperands prepare_dwconv(std::string_view op, const Tensor& grad_output, const Tensor& input,
                                     const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                                     const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, std::string_view act_name, at::MemoryFormat format) {
  DwConvOperands a{};
  a.g = grad_output.defined() ? check_dwconv_backward_args(op, grad_output, input, weight, scale, bias, residual,
                                                           stride, padding, dilation)
                              : check_dwconv_args(op, input, weight, scale, bias, residual, stride, padding, dilation);
  a.act = parse_act(op, act_name);
  a.x = input.contiguous(format);
  if (grad_output.defined()) a.dy = grad_output.contiguous(format);
  if (residual) a.residual = residual->contiguous(format);
  a.scale = channel_vector_acc(scale, input, 1.0);
  a.bias = channel_vector_acc(bias, input, 0.0);
  return a;
}

// The weight as [k * k][C] in the accumulation dtype (taps major: a tap's channels are contiguous).
inline Tensor dwconv_weight_taps(const Tensor& weight) {
  const int64_t c = weight.size(0), kk = weight.size(2) * weight.size(3);
  return weight.reshape({c, kk}).t().to(acc_dtype(weight.scalar_type())).contiguous();
}

// The gradient of the weight back from [k * k][C] (accumulation dtype) to (C, 1, k, k) in the weight's dtype.
inline Tensor dwconv_weight_from_taps(const Tensor& taps, const Tensor& weight) {
  return taps.t().reshape(weight.sizes()).to(weight.scalar_type()).contiguous();
}

}  // namespace pycnn
