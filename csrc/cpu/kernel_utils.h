// Helpers shared by the CPU kernels (csrc/cpu/*.cpp): the layout a kernel works in and compile-time
// dispatch of the activation and of the channel stride of a span.
#pragma once

#include <ATen/ATen.h>

#include <type_traits>

#include "../activation.h"
#include "../bn_act.h"

namespace pycnn {
namespace cpu {

// NCHW (channels_last false) or NHWC, contiguous; hw = H * W.
struct Layout {
  int64_t n, c, hw;
  bool channels_last;
  int64_t pixels() const { return n * hw; }
};

inline Layout layout_of(const at::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), kernel_memory_format(x) == at::MemoryFormat::ChannelsLast};
}

// Runs body(std::integral_constant<Act, A>) so the activation is a compile-time constant in hot loops.
template <typename Body>
void dispatch_act(Act act, Body body) {
  switch (act) {
    case Act::ReLU: return body(std::integral_constant<Act, Act::ReLU>{});
    case Act::ReLU6: return body(std::integral_constant<Act, Act::ReLU6>{});
    case Act::SiLU: return body(std::integral_constant<Act, Act::SiLU>{});
    case Act::HardSwish: return body(std::integral_constant<Act, Act::HardSwish>{});
    default: return body(std::integral_constant<Act, Act::None>{});
  }
}

// Runs body(std::integral_constant<int, S>{}) with S = 1 for channels_last spans (one pixel's channels),
// 0 for NCHW planes (one channel).
template <typename Body>
void dispatch_channel_stride(const Layout& l, Body body) {
  if (l.channels_last) return body(std::integral_constant<int, 1>{});
  return body(std::integral_constant<int, 0>{});
}

}  // namespace cpu
}  // namespace pycnn
