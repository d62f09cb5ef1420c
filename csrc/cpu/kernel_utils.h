// Helpers shared by the CPU kernels (csrc/cpu/*.cpp): the layout a kernel works in, compile-time
// dispatch of the activation and of the channel stride of a span, and the run-time choice between the
// variants of a kernels header (baseline, AVX2+FMA, AVX-512: cpu/isa_kernels.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "../activation.h"
#include "../op_common.h"

// PYCNN_CPU_X86_VARIANTS: the compiler can build functions for AVX2+FMA and AVX-512 inside a baseline
// translation unit (#pragma GCC target), so the avx2 and avx512 variants of the kernels headers
// (cpu/isa_kernels.h) are built for those ISAs; elsewhere they are baseline code the dispatch never picks.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PYCNN_CPU_X86_VARIANTS 1
#endif

namespace pycnn {
namespace cpu {

// The variants of the CPU kernels (cpu/isa_kernels.h), in increasing order of what they need from the CPU.
enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };
constexpr int kIsaCount = 3;

// Defined in cpu/isa.cpp:
// the best variant this CPU runs (AVX2 needs avx2+fma, AVX-512 needs avx512f/bw/dq/vl as well);
Isa cpu_isa();
// the variant the kernels use: cpu_isa() capped by PYCNN_CPU_ISA=baseline|avx2|avx512 (read once; another
// value is an error naming the allowed ones) or by set_isa_cap (tests);
Isa active_isa();
// caps the variant further for this process (tests run each op under every variant the CPU has; avx512
// lifts the cap back to PYCNN_CPU_ISA's); returns the variant that runs from now on.
Isa set_isa_cap(Isa cap);
const char* isa_name(Isa isa);
Isa parse_isa(std::string_view name);  // throws, naming the allowed values, on anything else

// The variant's copy of an op's table of entry points: kernels headers define `kernels` in each variant
// namespace (ns##_base, ns##_avx2, ns##_avx512); PYCNN_CPU_VARIANTS declares them. dtype is the one the
// kernel dispatches on: float64 always runs the baseline variant (it serves gradient checks and references,
// not speed), so the avx2 and avx512 variants are compiled for float32, float16 and bfloat16 only
// (PYCNN_DISPATCH_FLOATING_TYPES in cpu/isa_kernels.h), a quarter less code to build.
template <typename Table>
inline const Table& select(at::ScalarType dtype, const Table& base, const Table& avx2, const Table& avx512) {
  switch (dtype == at::kDouble ? Isa::baseline : active_isa()) {
    case Isa::avx512: return avx512;
    case Isa::avx2: return avx2;
    default: return base;
  }
}

// NCHW (channels_last false) or NHWC, contiguous; hw = H * W.
struct Layout {
  int64_t n, c, hw;
  bool channels_last;
  int64_t pixels() const { return n * hw; }
};

inline Layout layout_of(const at::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), kernel_memory_format(x) == at::MemoryFormat::ChannelsLast};
}

// What a CPU kernel call reads, in the layout the kernels run (the input's kernel_memory_format): the input,
// the residual and grad_output (undefined when absent) contiguous in it, the layout and the accumulation dtype.
struct KernelOperands {
  at::MemoryFormat format;
  at::Tensor input, residual, grad_output;
  Layout l;
  at::ScalarType acc_type;
};

inline KernelOperands kernel_operands(const at::Tensor& input_, const OptTensor& residual,
                                      const at::Tensor& grad_output = at::Tensor()) {
  const auto format = kernel_memory_format(input_);
  at::Tensor input = input_.contiguous(format);
  const Layout l = layout_of(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  return {format, std::move(input), residual ? residual->contiguous(format) : at::Tensor(),
          grad_output.defined() ? grad_output.contiguous(format) : at::Tensor(), l, acc_type};
}

// exp for float in plain arithmetic the compiler vectorizes (std::exp is a scalar libm call): 2^(x log2 e)
// as 2^i (exponent bits) * 2^f (degree-6 polynomial, f in [-0.5, 0.5]); relative error ~2e-7. Inlined
// into kernels compiled for AVX2+FMA (dwconv_kernels.h), the multiply-adds contract to FMAs there.
// Outside the clamped range the result is exp(88) or exp(-87) (within float precision of the true value
// for the sigmoid and SiLU that use it) except above 88.72, where exp overflows to inf as std::exp does, and
// NaN stays NaN: silu(-inf) = -inf * sigmoid(-inf) = -inf * 0 is NaN as in PyTorch.
inline float exp_approx(float x_in) {
  const float x = std::min(std::max(x_in, -87.0f), 88.0f);
  const float t = x * 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float r = t + kRound;
  const int32_t i = std::bit_cast<int32_t>(r) - std::bit_cast<int32_t>(kRound);
  const float f = (t - (r - kRound)) * 0.693147180559945309f;
  float p = 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const float e = std::bit_cast<float>(std::bit_cast<int32_t>(p) + (i << 23));
  return x_in > 88.72284f ? std::numeric_limits<float>::infinity() : (x_in != x_in ? x_in : e);
}

// sigmoid(z) = 1 / (1 + e^-z) for float through exp_approx.
inline float sigmoid_approx(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// The activation and its derivative (activation.h) for the CPU kernels, with SiLU on float through
// exp_approx so that loops over it vectorize. SiLU is z * sigmoid(z), one vector division: written as
// z / (1 + e^-z), GCC if-converted exp_approx's clamp into a second division blended in for the clamped range.
template <Act A, typename acc>
inline acc cpu_act(acc z) {
  if constexpr (A == Act::SiLU && std::is_same_v<acc, float>) {
    return z * sigmoid_approx(z);
  } else {
    return act_forward<acc>(A, z);
  }
}

template <Act A, typename acc>
inline acc cpu_act_derivative(acc z) {
  if constexpr (A == Act::SiLU && std::is_same_v<acc, float>) {
    const float s = sigmoid_approx(z);
    return s * (1.0f + z * (1.0f - s));
  } else {
    return act_derivative<acc>(A, z);
  }
}

// dy * act'(z) as act_backward (activation.h) computes it, with SiLU on float through sigmoid_approx.
template <Act A, typename acc>
inline acc cpu_act_backward(acc dy, acc z) {
  if constexpr (A == Act::SiLU && std::is_same_v<acc, float>) {
    return dy * cpu_act_derivative<A, acc>(z);
  } else {
    return act_backward<acc>(A, dy, z);
  }
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

// Declares an op's table of entry points (struct Table, function pointers) in each variant namespace of
// its kernels header (ns##_base, ns##_avx2, ns##_avx512); inside namespace pycnn.
#define PYCNN_CPU_VARIANTS(Table, ns)           \
  namespace ns##_base {                         \
  extern const Table kernels;                   \
  }                                             \
  namespace ns##_avx2 {                         \
  extern const Table kernels;                   \
  }                                             \
  namespace ns##_avx512 {                       \
  extern const Table kernels;                   \
  }

// The entry points of the variant that runs (cpu::active_isa()) for tensors of dtype (see select):
// PYCNN_CPU_KERNELS(dw, x.scalar_type()).forward(args...)
#define PYCNN_CPU_KERNELS(ns, dtype) \
  (::pycnn::cpu::select((dtype), ns##_base::kernels, ns##_avx2::kernels, ns##_avx512::kernels))
