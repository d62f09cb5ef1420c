// The entry points of cpu/dwconv_kernels.h (NHWC and strided tensors) and cpu/dwconv_nchw_kernels.h
// (NCHW-contiguous ones), one table per variant (cpu/isa_kernels.h), called by dwconv.cpp once it has
// checked and prepared the arguments. Optional tensors are passed undefined.
#pragma once

#include "cpu/kernel_utils.h"
#include "dwconv.h"

namespace pycnn {

struct DwConvKernels {
  // y = act(conv(x) [* sc + bi] [+ r]) (NHWC; sc and bi both given or both undefined; wt [k*k][C], acc).
  // For dx as the forward over the gradient, x may be in the accumulation dtype with y in the input's
  // (act None).
  void (*forward)(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& wt, const Tensor& sc,
                  const Tensor& bi, const Tensor& r, const Tensor& y);
  // dx, dr, the per-block partial sums of dweight, dscale, dbias ([blocks][k*k + 2][C]); gu is the
  // gradient buffer of conv(x) (undefined with the identity epilogue); flipped the flipped weight taps
  // (defined when dx is the forward over the gradient).
  void (*backward)(const DwConvGeometry& g, Act act, bool identity, const Tensor& x, const Tensor& dy,
                   const Tensor& r, const Tensor& wt, const Tensor& flipped, const Tensor& sc, const Tensor& bi,
                   const Tensor& dx, const Tensor& dr, const Tensor& gu, const Tensor& partials,
                   int64_t rows_per_block, int64_t blocks);
};

struct DwConvNchwKernels {
  // y = act(conv(x) * sc + bi [+ r]); wt [C][k*k], sc, bi [C] (acc).
  void (*forward)(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& wt, const Tensor& sc,
                  const Tensor& bi, const Tensor& r, const Tensor& y);
  // dx, dr (if r is defined), gw [C][k*k], gs, gb [C] (acc).
  void (*backward)(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& dy, const Tensor& wt,
                   const Tensor& sc, const Tensor& bi, const Tensor& r, const Tensor& dx, const Tensor& dr,
                   const Tensor& gw, const Tensor& gs, const Tensor& gb);
};

PYCNN_CPU_VARIANTS(DwConvKernels, dw)
PYCNN_CPU_VARIANTS(DwConvNchwKernels, dwn)

}  // namespace pycnn
