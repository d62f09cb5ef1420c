// The entry points of cpu/mbconv_kernels.h, one table per variant (cpu/isa_kernels.h), called by mbconv.cpp
// once it has checked the arguments and packed the weights.
#pragma once

#include "cpu/kernel_utils.h"
#include "mbconv.h"

namespace pycnn {

// Channel counts of the packed weights are padded to a multiple of this (zeros), so every variant's vectors
// (4, 8 or 16 lanes) tile them without tails.
constexpr int64_t kMbConvPad = 16;

inline int64_t mbconv_padded(int64_t channels) { return (channels + kMbConvPad - 1) / kMbConvPad * kMbConvPad; }

struct MbConvKernels {
  // y = project(act(dw(act(expand(x))))) [+ x], x and y NHWC-contiguous; the packed weights (input's dtype):
  // we [C][Ep], be [Ep] (undefined without expansion), wd [k*k][Ep], bd [Ep], wp [E][Cop], bp [Cop], where
  // Ep = mbconv_padded(E) and Cop = mbconv_padded(C_out), zero-padded.
  void (*forward)(const MbConvGeometry& g, Act act, const Tensor& x, const Tensor& we, const Tensor& be,
                  const Tensor& wd, const Tensor& bd, const Tensor& wp, const Tensor& bp, const Tensor& y);
};

PYCNN_CPU_VARIANTS(MbConvKernels, mb)

}  // namespace pycnn
