// CPU implementation of pycnn::se_forward / se_backward (at::parallel_for, OpenMP in torch).
//
// Two passes over the activation each way, as on the GPU:
//   forward:  per-(image, channel) sums of x (the pool) -> the two tiny FCs on [N, C] (ATen GEMMs, so
//             wide SE layers such as RegNetY-32GF's run at BLAS speed) -> y = post(x * gate [+ residual]).
//   backward: per-(image, channel) sums of g * x, g = dy * post'(x * gate [+ residual]) -> the FC
//             gradients on [N, C] -> dx = g * gate + dpooled / HW, dresidual = g.
// The tensor is visited as contiguous spans as in bn_act: in NCHW one (n, c) plane of H*W elements of a
// single channel; in channels_last one pixel's C channels. Span loops take the channel stride S (0 or 1)
// as a template argument so one body serves both layouts and the compiler vectorizes it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/kernel_utils.h"
#include "cpu/se_entries.h"
#include "se.h"

namespace pycnn {

// The passes over the activation (forward: pool, scale; backward: gate sums, input gradient) and the small
// excitations run in cpu/se_kernels.h, built once per variant (baseline, AVX2+FMA, AVX-512:
// cpu/isa_kernels.h); this file checks, allocates and runs the FC GEMMs.

namespace {

using cpu::Layout;

// Elementwise act(z) on a small contiguous tensor (hidden [N, C_r]).
template <typename acc>
Tensor apply_act(const Tensor& z, Act act) {
  Tensor out = at::empty_like(z);
  const acc* zp = z.const_data_ptr<acc>();
  acc* op = out.data_ptr<acc>();
  for (int64_t i = 0; i < z.numel(); ++i) op[i] = act_forward<acc>(act, zp[i]);
  return out;
}

// act_backward(dy, z) elementwise, in place on dy (same shape as z, contiguous).
template <typename acc>
Tensor& apply_act_backward_(Tensor& dy, const Tensor& z, Act act) {
  const acc* zp = z.const_data_ptr<acc>();
  acc* dp = dy.data_ptr<acc>();
  for (int64_t i = 0; i < z.numel(); ++i) dp[i] = act_backward<acc>(act, dp[i], zp[i]);
  return dy;
}

Tensor fc_matrix(const Tensor& w, at::ScalarType acc_type) {  // [out, in] in the accumulation dtype
  return w.reshape({w.size(0), w.size(1)}).to(acc_type).contiguous();
}

std::tuple<Tensor, Tensor, Tensor, Tensor> se_forward_cpu(const Tensor& input_, const Tensor& fc1_weight,
                                                          const OptTensor& fc1_bias, const Tensor& fc2_weight,
                                                          const OptTensor& fc2_bias, const OptTensor& residual_,
                                                          c10::string_view act_name, c10::string_view post_name) {
  constexpr std::string_view op = "pycnn.se";
  check_se_args(op, input_, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual_);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  [[maybe_unused]] const auto [format, input, residual, no_grad_output, l, acc_type] =
      cpu::kernel_operands(input_, residual_);
  Tensor output = at::empty_like(input, format);
  Tensor pooled = at::empty({l.n, l.c}, input.options().dtype(acc_type));
  Tensor hidden, gate;

  const int64_t cr = fc1_weight.size(0);
  // Up to this many multiply-adds per FC the excitation runs in se_kernels.h's loops (microseconds); wider
  // SE layers (RegNetY-32GF) go to ATen's GEMMs.
  constexpr int64_t kDirectExciteMacs = int64_t(1) << 20;
  const bool direct = l.n * l.c * cr <= kDirectExciteMacs;
  if (direct) {
    hidden = at::empty({l.n, cr}, pooled.options());
    gate = at::empty({l.n, l.c}, pooled.options());
  }

  const auto& kernels = PYCNN_CPU_KERNELS(se, input.scalar_type());
  kernels.pool_excite(l, act, direct, input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pooled, hidden, gate);
  if (!direct) {
    // The excitation: [N, C] -> [N, C_r] -> [N, C], GEMMs in the accumulation dtype.
    const Tensor w1 = fc_matrix(fc1_weight, acc_type), w2 = fc_matrix(fc2_weight, acc_type);
    hidden = fc1_bias ? at::addmm(fc1_bias->to(acc_type), pooled, w1.t()) : at::mm(pooled, w1.t());
    AT_DISPATCH_FLOATING_TYPES(acc_type, "se_forward_cpu", [&] {
      const Tensor a1 = apply_act<scalar_t>(hidden, act);
      gate = (fc2_bias ? at::addmm(fc2_bias->to(acc_type), a1, w2.t()) : at::mm(a1, w2.t())).sigmoid_();
    });
  }
  kernels.scale(l, post, input, residual, gate, output);
  return {output, pooled, hidden, gate};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, OptTensor> se_backward_cpu(
    const Tensor& grad_output_, const Tensor& input_, const Tensor& fc1_weight, const Tensor& fc2_weight,
    const OptTensor& residual_, const Tensor& pooled_, const Tensor& hidden_, const Tensor& gate_,
    c10::string_view act_name, c10::string_view post_name) {
  constexpr std::string_view op = "pycnn.se_backward";
  check_se_backward_args(op, grad_output_, input_, fc1_weight, fc2_weight, residual_, pooled_, hidden_, gate_);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  const auto [format, input, residual, grad_output, l, acc_type] =
      cpu::kernel_operands(input_, residual_, grad_output_);
  const Tensor pooled = pooled_.contiguous(), hidden = hidden_.contiguous(), gate = gate_.contiguous();
  Tensor grad_input = at::empty_like(input, format);
  Tensor grad_residual = residual.defined() ? at::empty_like(input, format) : Tensor();
  Tensor grad_gate = at::empty({l.n, l.c}, input.options().dtype(acc_type));  // sum_hw g * x
  Tensor gw1, gb1, gw2, gb2;

  const auto& kernels = PYCNN_CPU_KERNELS(se, input.scalar_type());
  kernels.backward_gate_sums(l, post, input, grad_output, residual, gate, grad_gate);
  Tensor dp;  // d loss / d x through the pool, [N, C]
  AT_DISPATCH_FLOATING_TYPES(acc_type, "se_backward_cpu", [&] {
    using acc = scalar_t;
    // Back through sigmoid, fc2, act, fc1 on [N, C] / [N, C_r].
    const Tensor w1 = fc_matrix(fc1_weight, acc_type), w2 = fc_matrix(fc2_weight, acc_type);
    const Tensor dz2 = grad_gate * gate * (1 - gate);
    const Tensor a1 = apply_act<acc>(hidden, act);
    gw2 = dz2.t().mm(a1);
    gb2 = dz2.sum(0);
    Tensor dz1 = dz2.mm(w2);
    apply_act_backward_<acc>(dz1, hidden.contiguous(), act);
    gw1 = dz1.t().mm(pooled);
    gb1 = dz1.sum(0);
    dp = dz1.mm(w1).mul_(1.0 / static_cast<double>(l.hw)).contiguous();
  });
  kernels.backward_input(l, post, input, grad_output, residual, gate, dp, grad_input, grad_residual);
  const auto wtype = fc1_weight.scalar_type();
  return {grad_input,
          gw1.reshape(fc1_weight.sizes()).to(wtype),
          gb1.to(wtype),
          gw2.reshape(fc2_weight.sizes()).to(wtype),
          gb2.to(wtype),
          residual.defined() ? OptTensor(grad_residual) : std::nullopt};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("se_forward", &se_forward_cpu);
  m.impl("se_backward", &se_backward_cpu);
}

}  // namespace pycnn
