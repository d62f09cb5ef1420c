// CPU implementation of pycnn::dwconv_forward / dwconv_backward (at::parallel_for, OpenMP in torch).
//
// Two sets of kernels, one per layout, so neither converts: channels_last (and strided) tensors run on
// dwconv_kernels.h (a pixel's channels contiguous, loops over channel vectors), NCHW-contiguous ones on
// dwconv_nchw_kernels.h (each (n, c) plane a 2-D convolution vectorized along its rows). Both are
// compiled once per variant (baseline, AVX2+FMA, AVX-512: cpu/isa_kernels.h), each in its own translation
// unit, and the best one the CPU has runs: the build targets the baseline, so without this the loops would
// be 4-wide SSE.
//
// NHWC forward: y = act(conv(x) [* scale + bias] [+ residual]), one pass (a row of conv(x) at a time, then
//           its epilogue).
// NHWC backward: with an identity epilogue (no scale, bias, residual or act: the conv of a training step, whose
//           BN runs in bn_act) dy is the gradient of conv(x) and is read in place; otherwise a pass over
//           output rows recomputes conv(x) (cheaper than saving it: memory-bound) and gives that gradient
//           (a float buffer), dresidual and the per-block partial sums of dscale and dbias. Then dweight
//           (per-block partial sums, the k accumulators of a kernel row in registers) and dx: with stride
//           and dilation 1 the forward kernel over the gradient with the flipped kernel, otherwise the
//           transposed convolution loop.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/dwconv_entries.h"
#include "cpu/kernel_utils.h"
#include "cpu/weight_forms.h"
#include "dwconv.h"

namespace pycnn {

namespace {

Tensor output_like(const Tensor& input, const DwConvGeometry& g) {
  return at::empty({g.n, g.c, g.oh, g.ow}, input.options(), at::MemoryFormat::ChannelsLast);
}

// ------------------------------------------------------------------ NCHW (dwconv_nchw_kernels.h) ----

// The weight as [C][k * k] in the accumulation dtype (a channel's taps contiguous).
Tensor dwconv_weight_planes(const Tensor& weight) {
  return weight.reshape({weight.size(0), weight.size(2) * weight.size(3)})
      .to(acc_dtype(weight.scalar_type()))
      .contiguous();
}

Tensor dwconv_forward_nchw(const DwConvOperands& a, const Tensor& weight) {
  const DwConvGeometry& g = a.g;
  const Tensor wt = dwconv_weight_planes(weight);
  Tensor y = at::empty({g.n, g.c, g.oh, g.ow}, a.x.options());
  if (y.numel() == 0) return y;
  PYCNN_CPU_KERNELS(dwn, a.x.scalar_type()).forward(g, a.act, a.x, wt, a.scale, a.bias, a.residual, y);
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, OptTensor> dwconv_backward_nchw(
    const DwConvOperands& a, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias) {
  const DwConvGeometry& g = a.g;
  const Act act = a.act;
  const Tensor &x = a.x, &dy = a.dy, &r = a.residual, &sc = a.scale, &bi = a.bias;
  const Tensor wt = dwconv_weight_planes(weight);
  const auto acc_opts = input.options().dtype(acc_dtype(input.scalar_type()));
  Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options());
  Tensor dr = r.defined() ? at::empty({g.n, g.c, g.oh, g.ow}, input.options()) : Tensor();
  Tensor gw = at::zeros({g.c, int64_t(g.k) * g.k}, acc_opts);
  Tensor gs = at::zeros({g.c}, acc_opts), gb = at::zeros({g.c}, acc_opts);
  if (g.n * g.c * g.h * g.w > 0) PYCNN_CPU_KERNELS(dwn, x.scalar_type()).backward(g, act, x, dy, wt, sc, bi, r, dx, dr, gw, gs, gb);
  Tensor grad_weight = gw.reshape(weight.sizes()).to(weight.scalar_type()).contiguous();
  if (scale) gs = gs.to(scale->scalar_type());
  if (bias) gb = gb.to(bias->scalar_type());
  return {dx, grad_weight, gs, gb, dr.defined() ? OptTensor(dr) : std::nullopt};
}

// ------------------------------------------------------------------ NHWC (dwconv_kernels.h) ----

Tensor dwconv_forward_cpu(const Tensor& input, const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                          const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, c10::string_view act_name) {
  constexpr std::string_view op = "pycnn.dwconv";
  const auto format = kernel_memory_format(input);  // NCHW or channels_last, the kernels' two layouts
  const DwConvOperands a = prepare_dwconv(op, Tensor(), input, weight, scale, bias, residual, stride, padding,
                                          dilation, std::string_view(act_name.data(), act_name.size()), format);
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor for the CPU kernel, got ", input.device());
  if (format == at::MemoryFormat::Contiguous) return dwconv_forward_nchw(a, weight);
  const DwConvGeometry& g = a.g;
  // (the same layout for every variant; kept only inside an eval plan's scope)
  static const char taps_layout = 0;
  const Tensor wt = cpu::weight_form(weight, &taps_layout, cpu::form_detail(0, weight.scalar_type()),
                                     [&] { return dwconv_weight_taps(weight); });
  // Without scale and bias the epilogue skips the multiply-add (sc, bi null).
  const bool affine = scale.has_value() || bias.has_value();
  Tensor y = output_like(input, g);
  if (y.numel() > 0) {
    PYCNN_CPU_KERNELS(dw, y.scalar_type())
        .forward(g, a.act, a.x, wt, affine ? a.scale : Tensor(), affine ? a.bias : Tensor(), a.residual, y);
  }
  return y.contiguous(format);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, OptTensor> dwconv_backward_cpu(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, c10::string_view act_name) {
  constexpr std::string_view op = "pycnn.dwconv_backward";
  const auto format = kernel_memory_format(input);
  const DwConvOperands a = prepare_dwconv(op, grad_output, input, weight, scale, bias, residual, stride, padding,
                                          dilation, std::string_view(act_name.data(), act_name.size()), format);
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor for the CPU kernel, got ", input.device());
  if (format == at::MemoryFormat::Contiguous) return dwconv_backward_nchw(a, input, weight, scale, bias);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const DwConvGeometry& g = a.g;
  const Act act = a.act;
  const Tensor &x = a.x, &dy = a.dy, &r = a.residual, &sc = a.scale, &bi = a.bias;
  const Tensor wt = dwconv_weight_taps(weight);
  const auto acc_type = acc_dtype(input.scalar_type());
  const int64_t kk = int64_t(g.k) * g.k;
  // With no scale, bias, residual or activation (the conv of a training step, BN done by bn_act) the
  // gradient of conv(x) is dy itself: conv(x) is not recomputed and dy is read in place.
  const bool identity = !scale && !bias && !r.defined() && act == Act::None;
  Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options(), nhwc);
  Tensor dr = r.defined() ? output_like(input, g) : Tensor();
  Tensor gu = identity ? Tensor() : at::empty({g.n, g.c, g.oh, g.ow}, input.options().dtype(acc_type), nhwc);
  // Blocks of output rows for the partial sums: a few per thread, each at least ~64K multiply-adds.
  const int64_t rows = g.n * g.oh;
  const int64_t work_per_row = std::max<int64_t>(1, g.ow * g.c * kk);
  const int64_t rows_per_block = std::max<int64_t>(
      std::max<int64_t>(1, 65536 / work_per_row), (rows + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads()));
  const int64_t blocks = std::max<int64_t>(1, (rows + rows_per_block - 1) / rows_per_block);
  Tensor partials = at::empty({blocks, kk + 2, g.c}, input.options().dtype(acc_type));
  if (rows == 0) partials.zero_();
  // Stride and dilation 1 with padding <= k - 1: dx is the forward convolution of the gradient with the
  // flipped kernel and padding k - 1 - p (the register-blocked path); otherwise the generic transposed loop.
  const bool transposed_as_forward = g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.ph <= g.k - 1 &&
                                     g.pw <= g.k - 1;

  const Tensor flipped = transposed_as_forward ? dwconv_weight_taps(weight.flip({2, 3})) : Tensor();
  PYCNN_CPU_KERNELS(dw, x.scalar_type()).backward(g, act, identity, x, dy, r, wt, flipped, sc, bi, dx, dr, gu, partials,
                                 rows_per_block, blocks);
  Tensor sums = partials.sum(0);  // [k*k + 2][C]
  // With the identity epilogue dz = dy, so dscale = sum dy * conv(x) = sum over taps of w * dweight.
  if (identity) sums[kk].copy_((wt * sums.narrow(0, 0, kk)).sum(0));
  Tensor grad_weight = dwconv_weight_from_taps(sums.narrow(0, 0, kk), weight);
  Tensor grad_scale = sums[kk].clone(), grad_bias = sums[kk + 1].clone();
  if (scale) grad_scale = grad_scale.to(scale->scalar_type());
  if (bias) grad_bias = grad_bias.to(bias->scalar_type());
  return {dx.contiguous(format), grad_weight, grad_scale, grad_bias,
          dr.defined() ? OptTensor(dr.contiguous(format)) : std::nullopt};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("dwconv_forward", &dwconv_forward_cpu);
  m.impl("dwconv_backward", &dwconv_backward_cpu);
}

}  // namespace pycnn
