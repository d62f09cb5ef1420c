// Compiles a kernels header twice (no include guard: included once per kernels header). Define
//   #define PYCNN_ISA_KERNELS "cpu/<op>_kernels.h"
//   #define PYCNN_ISA_NS <op-prefix>
// then include this inside namespace pycnn, after every include the kernels need. The header is compiled
// in namespace PYCNN_ISA_NS##_base for the baseline ISA the build targets (SSE2 on x86-64) and, where the
// compiler supports it (PYCNN_CPU_AVX2, kernel_utils.h), again in PYCNN_ISA_NS##_avx2 under
// #pragma GCC target("avx2,fma") with PYCNN_CPU_FMA defined. PYCNN_CPU_KERNEL(ns, fn) picks the one for
// the CPU at run time. cpu/isa_prelude.h (madd, vector types) comes first in each. Helpers the kernels inline from other headers (exp_approx, cpu_act) are compiled
// into each copy with its ISA.
#define PYCNN_ISA_CAT_(a, b) a##b
#define PYCNN_ISA_CAT(a, b) PYCNN_ISA_CAT_(a, b)

namespace PYCNN_ISA_CAT(PYCNN_ISA_NS, _base) {
#include "cpu/isa_prelude.h"
#include PYCNN_ISA_KERNELS
}

#ifdef PYCNN_CPU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace PYCNN_ISA_CAT(PYCNN_ISA_NS, _avx2) {
#define PYCNN_CPU_FMA 1
#include "cpu/isa_prelude.h"
#include PYCNN_ISA_KERNELS
#undef PYCNN_CPU_FMA
}
#pragma GCC pop_options
#endif

#undef PYCNN_ISA_KERNELS
#undef PYCNN_ISA_NS
