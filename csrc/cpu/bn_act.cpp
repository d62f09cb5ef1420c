// CPU implementation of pycnn::bn_act_forward / bn_act_backward (at::parallel_for, OpenMP in torch).
//
// The loops (bn_act_kernels.h: spans of either layout, two-pass statistics) are compiled once per variant
// (baseline, AVX2+FMA, AVX-512: cpu/isa_kernels.h), and the best one the CPU has runs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "bn_act.h"
#include "running_stats.h"
#include "cpu/bn_act_entries.h"
#include "cpu/kernel_utils.h"

namespace pycnn {

namespace {

using cpu::Layout;

std::tuple<Tensor, Tensor, Tensor> bn_act_forward_cpu(const Tensor& input_, const OptTensor& weight,
                                                      const OptTensor& bias, const OptTensor& residual_,
                                                      const OptTensor& running_mean, const OptTensor& running_var,
                                                      bool training, double eps, c10::string_view act_name) {
  check_bn_act_forward_args(input_, weight, bias, residual_, running_mean, running_var, training);
  const Act act = parse_act("pycnn.bn_act", act_name);
  [[maybe_unused]] const auto [format, input, residual, no_grad_output, l, acc_type] =
      cpu::kernel_operands(input_, residual_);
  Tensor output = at::empty_like(input, format);
  Tensor mean, var;
  if (training) {
    mean = at::empty({l.c}, input.options().dtype(acc_type));
    var = at::empty({l.c}, input.options().dtype(acc_type));
  } else {
    mean = running_mean->to(acc_type, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(acc_type, false, true).contiguous();
  }
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);

  PYCNN_CPU_KERNELS(bn, input.scalar_type()).forward(l, act, training, eps, input, residual, w, b, mean, var, output);
  return {output, mean, var};
}

std::tuple<Tensor, Tensor, Tensor, OptTensor> bn_act_backward_cpu(
    const Tensor& grad_output_, const Tensor& input_, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual_, const Tensor& save_mean, const Tensor& save_var, bool training, double eps,
    c10::string_view act_name) {
  check_bn_act_backward_args(grad_output_, input_, weight, bias, residual_, save_mean, save_var);
  const Act act = parse_act("pycnn.bn_act_backward", act_name);
  const auto [format, input, residual, grad_output, l, acc_type] =
      cpu::kernel_operands(input_, residual_, grad_output_);
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);
  const Tensor mean = save_mean.to(acc_type).contiguous(), var = save_var.to(acc_type).contiguous();
  Tensor grad_input = at::empty_like(input, format);
  Tensor grad_residual = residual.defined() ? at::empty_like(input, format) : Tensor();
  Tensor sums = at::empty({2, l.c}, input.options().dtype(acc_type));  // [sum dz, sum dz * (x - mean)]

  PYCNN_CPU_KERNELS(bn, input.scalar_type()).backward(l, act, training, eps, input, grad_output, residual, w, b, mean, var, sums,
                                  grad_input, grad_residual);
  Tensor grad_bias = sums[0].clone(), grad_weight = sums[1].clone();
  if (weight) grad_weight = grad_weight.to(weight->scalar_type());
  if (bias) grad_bias = grad_bias.to(bias->scalar_type());
  return {grad_input, grad_weight, grad_bias, residual.defined() ? OptTensor(grad_residual) : std::nullopt};
}

void bn_act_update_stats_cpu(const Tensor& running_mean, const Tensor& running_var,
                             const OptTensor& num_batches_tracked, const Tensor& save_mean, const Tensor& save_var,
                             std::optional<double> momentum, int64_t count) {
  check_bn_act_update_stats_args(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum,
                                 count);
  int64_t batches = 0;
  if (num_batches_tracked) {
    int64_t* n = num_batches_tracked->data_ptr<int64_t>();
    batches = ++*n;
  }
  const Tensor sm = save_mean.contiguous(), sv = save_var.contiguous();
  const int64_t channels = running_mean.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, running_mean.scalar_type(), "bn_act_update_stats_cpu",
                                  [&] {
    using R = scalar_t;
    using O = at::opmath_type<R>;
    const auto round = [](O v) { return static_cast<O>(static_cast<R>(v)); };
    const O factor = momentum ? static_cast<O>(*momentum) : cumulative_factor<O>(batches, round);
    auto loop = [&](auto* save_mean_data, auto* save_var_data) {
      using S = std::remove_const_t<std::remove_pointer_t<decltype(save_mean_data)>>;
      const S unbias = unbias_factor<S>(count);
      R* rm = running_mean.data_ptr<R>();
      R* rv = running_var.data_ptr<R>();
      for (int64_t c = 0; c < channels; ++c) {
        O mean = static_cast<O>(rm[c]), var = static_cast<O>(rv[c]);
        running_stats_update(mean, var, save_mean_data[c], save_var_data[c], unbias, factor, round);
        rm[c] = static_cast<R>(mean);
        rv[c] = static_cast<R>(var);
      }
    };
    if (sm.scalar_type() == at::kDouble) loop(sm.const_data_ptr<double>(), sv.const_data_ptr<double>());
    else loop(sm.const_data_ptr<float>(), sv.const_data_ptr<float>());
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("bn_act_forward", &bn_act_forward_cpu);
  m.impl("bn_act_backward", &bn_act_backward_cpu);
  m.impl("bn_act_update_stats_", &bn_act_update_stats_cpu);
}

}  // namespace pycnn
