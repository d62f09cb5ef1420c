// Which variant of the CPU kernels runs (cpu/isa_kernels.h): the best one the CPU has, capped by the
// environment variable PYCNN_CPU_ISA=baseline|avx2|avx512 (as oneDNN's ONEDNN_MAX_CPU_ISA) and, in tests,
// by set_isa_cap.
#include <atomic>
#include <cstdlib>
#include <string>

#include "cpu/kernel_utils.h"

namespace pycnn {
namespace cpu {

namespace {

constexpr const char* kNames[kIsaCount] = {"baseline", "avx2", "avx512"};

Isa detect() {
#ifdef PYCNN_CPU_X86_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512 ? Isa::avx512 : (avx2 ? Isa::avx2 : Isa::baseline);
#else
  return Isa::baseline;  // the avx2 and avx512 variants are baseline code here
#endif
}

// The cap from PYCNN_CPU_ISA (unset or empty: none), read once.
Isa env_cap() {
  static const Isa cap = [] {
    const char* v = std::getenv("PYCNN_CPU_ISA");
    return v == nullptr || *v == '\0' ? Isa::avx512 : parse_isa(v);
  }();
  return cap;
}

Isa min_isa(Isa a, Isa b) { return static_cast<int>(a) < static_cast<int>(b) ? a : b; }

// -1: not resolved yet (the first call reads the CPU and the environment).
std::atomic<int> g_active{-1};

}  // namespace

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

Isa parse_isa(std::string_view name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == kNames[i]) return static_cast<Isa>(i);
  TORCH_CHECK_VALUE(false, "PYCNN_CPU_ISA must be one of baseline, avx2, avx512 (the CPU kernel variant to cap at), got '",
              std::string(name), "'");
}

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(min_isa(cpu_isa(), env_cap()));
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

Isa set_isa_cap(Isa cap) {
  const Isa isa = min_isa(min_isa(cpu_isa(), env_cap()), cap);
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

}  // namespace cpu
}  // namespace pycnn
