// The entry points of cpu/gconv_kernels.h, one table per variant (cpu/isa_kernels.h), called by gconv.cpp.
// All tensors are NHWC in the accumulation dtype; optional ones are passed undefined.
#pragma once

#include "cpu/kernel_utils.h"
#include "gconv.h"

namespace pycnn {

struct GConvKernels {
  // The forward's layout of the weight [C_out, Cg, k, k], in dtype (the accumulation type): this variant's,
  // the same for every call with the weight (cpu/weight_forms.h keeps it between inference calls).
  Tensor (*forward_weight)(const GConvGeometry& g, const Tensor& weight, at::ScalarType dtype);
  // y = act(conv(x) [* scale] [+ bias] [+ res]), saved = conv(x) when defined; wk: forward_weight's.
  void (*forward)(const GConvGeometry& g, Act act, const Tensor& x, const Tensor& wk, const Tensor& scale,
                  const Tensor& bias, const Tensor& res, const Tensor& y, const Tensor& saved);
  // dx = the transposed convolution of dc (the gradient of conv(x)) with the weight.
  void (*dgrad)(const GConvGeometry& g, const Tensor& dc, const Tensor& weight, const Tensor& dx);
  // The weight gradient as [G, k*k, Cg, Cog]; dc is make_grad_conv's flat buffer (16 readable elements past
  // the gradient).
  Tensor (*wgrad)(const GConvGeometry& g, const Tensor& x, const Tensor& dc);
};

PYCNN_CPU_VARIANTS(GConvKernels, gc)

}  // namespace pycnn
