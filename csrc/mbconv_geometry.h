// The geometry of pycnn::mbconv_forward (the fused inverted-residual block), torch-free: the CPU kernels
// (csrc/cpu/mbconv_kernels.h) and the CUDA ones (csrc/cuda/mbconv.cu) take it as csrc/mbconv.h's checks
// computed it.
#pragma once

#include <cstdint>

namespace pycnn {

constexpr int kMbConvMaxKernel = 7;

// x [n, c, h, w] -> expand 1x1 (c -> e; absent: e == c) -> depthwise k x k, stride s, padding k / 2
// [-> squeeze-and-excitation: scaled by sigmoid(fc2(se_act(fc1(mean_hw)))), fc1 e -> r, fc2 r -> e]
// -> project 1x1 (e -> co) [+ x when residual] -> y [n, co, oh, ow].
struct MbConvGeometry {
  int64_t n, c, h, w;  // input
  int64_t e, co;       // expanded and output channels
  int64_t r;           // the squeeze-and-excitation's reduced channels (0: no SE)
  int64_t oh, ow;      // output
  int k, s, p;         // depthwise kernel size, stride, padding (k / 2)
  bool expand, residual;
};

}  // namespace pycnn
