// The entry points of cpu/bn_act_kernels.h, one table per variant (cpu/isa_kernels.h): what bn_act.cpp
// calls once it has checked and prepared the arguments.
#pragma once

#include "bn_act.h"
#include "cpu/kernel_utils.h"

namespace pycnn {

struct BnActKernels {
  // output = act((x - mean) * weight * invstd + bias [+ residual]); in training mean and var (acc, [C])
  // are computed from x first, in eval they hold the running statistics.
  void (*forward)(const cpu::Layout& l, Act act, bool training, double eps, const Tensor& input,
                  const Tensor& residual, const Tensor& weight, const Tensor& bias, const Tensor& mean,
                  const Tensor& var, const Tensor& output);
  // grad_input, grad_residual (if defined) and sums = [sum dz, sum dz * xhat] ([2][C], acc).
  void (*backward)(const cpu::Layout& l, Act act, bool training, double eps, const Tensor& input,
                   const Tensor& grad_output, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                   const Tensor& mean, const Tensor& var, const Tensor& sums, const Tensor& grad_input,
                   const Tensor& grad_residual);
};

PYCNN_CPU_VARIANTS(BnActKernels, bn)

}  // namespace pycnn
