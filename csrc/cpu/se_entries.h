// The entry points of cpu/se_kernels.h, one table per variant (cpu/isa_kernels.h): the passes over the
// activation (forward: pool, scale; backward: gate sums, input gradient) and the small excitations, called
// by se.cpp.
#pragma once

#include "cpu/kernel_utils.h"
#include "se.h"

namespace pycnn {

struct SeKernels {
  // pooled = mean over H*W of input ([N, C], acc); with `direct`, hidden and gate (preallocated) from the
  // excitation in plain loops, otherwise they are left for se.cpp's GEMMs.
  void (*pool_excite)(const cpu::Layout& l, Act act, bool direct, const Tensor& input, const Tensor& fc1_weight,
                      const OptTensor& fc1_bias, const Tensor& fc2_weight, const OptTensor& fc2_bias,
                      const Tensor& pooled, const Tensor& hidden, const Tensor& gate);
  // output = post(input * gate [+ residual]).
  void (*scale)(const cpu::Layout& l, Act post, const Tensor& input, const Tensor& residual, const Tensor& gate,
                const Tensor& output);
  // The backward's passes over the activation, with g = dy * post'(input * gate [+ residual]):
  // grad_gate = sum over H*W of g * input ([N, C], acc);
  void (*backward_gate_sums)(const cpu::Layout& l, Act post, const Tensor& input, const Tensor& grad_output,
                             const Tensor& residual, const Tensor& gate, const Tensor& grad_gate);
  // grad_input = g * gate + dpooled ([N, C], acc: the gradient through the pool), grad_residual = g if defined.
  void (*backward_input)(const cpu::Layout& l, Act post, const Tensor& input, const Tensor& grad_output,
                         const Tensor& residual, const Tensor& gate, const Tensor& dpooled, const Tensor& grad_input,
                         const Tensor& grad_residual);
};

PYCNN_CPU_VARIANTS(SeKernels, se)

}  // namespace pycnn
