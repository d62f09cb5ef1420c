// The translation unit of one variant of one kernels header. CMake generates one per kernels header and
// variant (build/<dir>/isa/<header>.<variant>.cpp, see CMakeLists.txt), each of the form
//   #define PYCNN_ISA_VARIANT 2                   // 0 baseline, 1 avx2, 2 avx512
//   #define PYCNN_ISA_ENTRIES "cpu/dwconv_entries.h"  // the op's table of entry points (a normal header)
//   #define PYCNN_ISA_KERNELS "cpu/dwconv_kernels.h"  // the kernels, ending with `kernels`, the table
//   #define PYCNN_ISA_NS dw
//   #include "cpu/isa_kernels.h"
// so the variants build in parallel. The kernels header is compiled in namespace pycnn::PYCNN_ISA_NS##_base,
// _avx2 or _avx512 (distinct names: no inline function of one variant can stand in for another's at link
// time), under #pragma GCC target for the avx2 (AVX2+FMA) and avx512 (AVX-512 F/BW/DQ/VL, 512-bit vectors)
// variants, after cpu/isa_prelude.h (madd and the vector types of the variant's width). Helpers the kernels
// inline from other headers (exp_approx, cpu_act) are compiled into each copy with its ISA. The host code
// (csrc/cpu/<op>.cpp) calls the variant that runs through PYCNN_CPU_KERNELS(ns) (cpu/kernel_utils.h).
// The tensor core and the few operators the kernels headers call, not ATen/ATen.h (every operator: 4x the
// parse time, paid by each of the variants' units).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>  // gconv_kernels.h
#include <ATen/ops/zeros.h>            // gconv_kernels.h

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include "cpu/kernel_utils.h"
#include PYCNN_ISA_ENTRIES

#define PYCNN_ISA_CAT_(a, b) a##b
#define PYCNN_ISA_CAT(a, b) PYCNN_ISA_CAT_(a, b)

#if PYCNN_ISA_VARIANT == 0
#define PYCNN_ISA_SUFFIX _base
#elif PYCNN_ISA_VARIANT == 1
#define PYCNN_ISA_SUFFIX _avx2
#ifdef PYCNN_CPU_X86_VARIANTS
#pragma GCC target("avx2,fma,f16c")
#define PYCNN_CPU_FMA 1
#endif
#else
#define PYCNN_ISA_SUFFIX _avx512
#ifdef PYCNN_CPU_X86_VARIANTS
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#define PYCNN_CPU_FMA 1
#define PYCNN_CPU_AVX512 1
#endif
#endif

// The dtypes a kernels header's entry points dispatch on: float64 in the baseline variant only (the host
// code runs float64 there whatever the CPU: cpu::select in cpu/kernel_utils.h).
#if PYCNN_ISA_VARIANT == 0
#define PYCNN_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) AT_DISPATCH_FLOATING_TYPES(TYPE, NAME, __VA_ARGS__)
#define PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
#else
#define PYCNN_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__))
#define PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(TYPE, NAME, ...)                                          \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                         AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))
#endif

namespace pycnn {
namespace PYCNN_ISA_CAT(PYCNN_ISA_NS, PYCNN_ISA_SUFFIX) {
#include "cpu/isa_prelude.h"
#include PYCNN_ISA_KERNELS
}  // namespace
}  // namespace pycnn
