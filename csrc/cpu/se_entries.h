// The entry points of cpu/se_kernels.h, one table per variant (cpu/isa_kernels.h): the forward's passes
// over the activation (pool, scale) and the small excitations, called by se.cpp.
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
};

PYCNN_CPU_VARIANTS(SeKernels, se)

}  // namespace pycnn
