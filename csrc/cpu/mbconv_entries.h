// The entry points of cpu/mbconv_kernels.h, one table per variant (cpu/isa_kernels.h), called by mbconv.cpp
// once it has checked the arguments and laid the weights out.
#pragma once

#include "cpu/kernel_utils.h"
#include "mbconv.h"

namespace pycnn {

// Channel counts of the packed weights are padded to a multiple of this (zeros), so every variant's vectors
// (4, 8 or 16 lanes) tile them without tails.
constexpr int64_t kMbConvPad = 16;

inline int64_t mbconv_padded(int64_t channels) { return (channels + kMbConvPad - 1) / kMbConvPad * kMbConvPad; }

// The squeeze-and-excitation inside the block (g.r > 0), contiguous in the input's dtype: w1 [R][E] (fc1),
// b1 [R], w2 [E][R] (fc2), b2 [E]; the biases undefined when absent.
struct MbConvSeTensors {
  Tensor w1, b1, w2, b2;
  Act act = Act::None;
};

template <typename T>
struct MbConvSe {
  const T *w1, *b1, *w2, *b2;  // b1, b2 may be null
  Act act;
};

struct MbConvKernels {
  // A 1x1 weight w [N][K] (contiguous, the input's dtype) as this variant's GEMM panels of its transpose,
  // enough for `cols` >= N columns (zeros past N): the layout forward reads.
  Tensor (*panels)(const Tensor& w, int64_t cols);
  // y = project(act(dw(act(expand(x)))) [* se scale]) [+ x], x and y NHWC-contiguous; the weights (input's
  // dtype): we = panels([E][C], Ep) (undefined without expansion), be [Ep], wd [k*k][Ep], bd [Ep],
  // wp = panels([C_out][E], C_out), bp [Cop], where Ep = mbconv_padded(E) and Cop = mbconv_padded(C_out),
  // zero-padded; se's tensors undefined without SE.
  void (*forward)(const MbConvGeometry& g, Act act, const Tensor& x, const Tensor& we, const Tensor& be,
                  const Tensor& wd, const Tensor& bd, const Tensor& wp, const Tensor& bp, const Tensor& y,
                  const MbConvSeTensors& se);
};

PYCNN_CPU_VARIANTS(MbConvKernels, mb)

}  // namespace pycnn
