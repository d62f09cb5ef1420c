// pycnn CUDA emulation: warp collectives, atomics, loads, math and bit intrinsics, runtime API functions.
#pragma once

#include <math.h>  // the float overloads of exp, sqrt, ... in the global namespace, as in device code

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- warp collectives ----------------------------------------------------------------------------------------
namespace pycnn_emu {
namespace detail {

template <typename T>
inline T poison() {  // what a lane reads from an exited / non-participating lane: all bits set (NaN, -1)
  T v;
  std::memset(static_cast<void*>(&v), 0xff, sizeof(T));
  return v;
}

enum class ShflMode { Idx, Up, Down, Bfly };

template <typename T>
struct ShflArgs {
  T val;
  unsigned b;  // srcLane / delta / laneMask
  unsigned c;  // PTX "c" operand: clamp value and segment mask, derived from width
  T out;
};

// PTX shfl.sync semantics (including width < 32 segments and out-of-range sources, which read their own value).
template <typename T, ShflMode M>
inline void shfl_resolve(WarpCall* const* calls, unsigned present) {
  for (int lane = 0; lane < 32; ++lane) {
    if (!((present >> lane) & 1u)) continue;
    auto* a = static_cast<ShflArgs<T>*>(calls[lane]->payload);
    const int bval = int(a->b & 31u), cval = int(a->c & 31u), segmask = int((a->c >> 8) & 31u);
    const int max_lane = (lane & segmask) | (cval & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool ok = true;
    switch (M) {
      case ShflMode::Up: j = lane - bval; ok = j >= max_lane; break;
      case ShflMode::Down: j = lane + bval; ok = j <= max_lane; break;
      case ShflMode::Bfly: j = lane ^ bval; ok = j <= max_lane; break;
      case ShflMode::Idx: j = min_lane | (bval & ~segmask); ok = j <= max_lane; break;
    }
    if (!ok) j = lane;
    if ((present >> j) & 1u) a->out = static_cast<ShflArgs<T>*>(calls[j]->payload)->val;
    else a->out = poison<T>();
  }
}

template <typename T, ShflMode M>
inline T shfl(const char* op, unsigned mask, T var, unsigned b, int width, const char* file, int line) {
  static_assert(std::is_trivially_copyable<T>::value, "shuffled values must be trivially copyable");
  if (!g_run) return var;
  const unsigned clamp = (M == ShflMode::Up) ? 0u : 31u;
  ShflArgs<T> a{var, b, (unsigned(32 - width) << 8) | clamp, var};
  WarpCall c{op, mask, file, line, &a, &shfl_resolve<T, M>};
  warp_collective(c);
  return a.out;
}

struct VoteArgs {
  int pred;
  unsigned out;
};
enum class VoteMode { Ballot, Any, All, Sync };
template <VoteMode M>
inline void vote_resolve(WarpCall* const* calls, unsigned present) {
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (((present >> l) & 1u) && static_cast<VoteArgs*>(calls[l]->payload)->pred) ballot |= 1u << l;
  unsigned out = 0;
  switch (M) {
    case VoteMode::Ballot: out = ballot; break;
    case VoteMode::Any: out = ballot != 0; break;
    case VoteMode::All: out = ballot == present; break;
    case VoteMode::Sync: out = 0; break;
  }
  for (int l = 0; l < 32; ++l)
    if ((present >> l) & 1u) static_cast<VoteArgs*>(calls[l]->payload)->out = out;
}
template <VoteMode M>
inline unsigned vote(const char* op, unsigned mask, int pred, const char* file, int line) {
  if (!g_run) return M == VoteMode::Ballot ? (pred ? 1u : 0u) : unsigned(pred != 0);
  VoteArgs a{pred != 0, 0};
  WarpCall c{op, mask, file, line, &a, &vote_resolve<M>};
  warp_collective(c);
  return a.out;
}

template <typename T>
struct MatchArgs {
  T val;
  unsigned out;
  int all;
};
template <typename T, bool ALL>
inline void match_resolve(WarpCall* const* calls, unsigned present) {
  for (int l = 0; l < 32; ++l) {
    if (!((present >> l) & 1u)) continue;
    auto* a = static_cast<MatchArgs<T>*>(calls[l]->payload);
    unsigned m = 0;
    for (int k = 0; k < 32; ++k)
      if (((present >> k) & 1u) && static_cast<MatchArgs<T>*>(calls[k]->payload)->val == a->val) m |= 1u << k;
    a->all = m == present;
    a->out = ALL ? (a->all ? present : 0u) : m;
  }
}

template <typename T, int OP>  // 0 add, 1 min, 2 max, 3 and, 4 or, 5 xor
inline void reduce_resolve(WarpCall* const* calls, unsigned present) {
  T acc{};
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (!((present >> l) & 1u)) continue;
    T v = static_cast<ShflArgs<T>*>(calls[l]->payload)->val;
    if (first) { acc = v; first = false; continue; }
    switch (OP) {
      case 0: acc = T(acc + v); break;
      case 1: acc = v < acc ? v : acc; break;
      case 2: acc = v > acc ? v : acc; break;
      case 3: acc = T(acc & v); break;
      case 4: acc = T(acc | v); break;
      case 5: acc = T(acc ^ v); break;
    }
  }
  for (int l = 0; l < 32; ++l)
    if ((present >> l) & 1u) static_cast<ShflArgs<T>*>(calls[l]->payload)->out = acc;
}
template <typename T, int OP>
inline T warp_reduce(const char* op, unsigned mask, T v, const char* file, int line) {
  if (!g_run) return v;
  ShflArgs<T> a{v, 0, 0, v};
  WarpCall c{op, mask, file, line, &a, &reduce_resolve<T, OP>};
  warp_collective(c);
  return a.out;
}

}  // namespace detail
}  // namespace pycnn_emu

#define PYCNN_EMU_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return shfl<T, ShflMode::Idx>("__shfl_sync", mask, var, unsigned(srcLane), width, file, line);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return shfl<T, ShflMode::Up>("__shfl_up_sync", mask, var, delta, width, file, line);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return shfl<T, ShflMode::Down>("__shfl_down_sync", mask, var, delta, width, file, line);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return shfl<T, ShflMode::Bfly>("__shfl_xor_sync", mask, var, unsigned(laneMask), width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return vote<VoteMode::Ballot>("__ballot_sync", mask, pred, file, line);
}
inline int __any_sync(unsigned mask, int pred, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return int(vote<VoteMode::Any>("__any_sync", mask, pred, file, line));
}
inline int __all_sync(unsigned mask, int pred, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  return int(vote<VoteMode::All>("__all_sync", mask, pred, file, line));
}
inline int __uni_sync(unsigned mask, int pred, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  const int any = int(vote<VoteMode::Any>("__uni_sync/any", mask, pred, file, line));
  const int all = int(vote<VoteMode::All>("__uni_sync/all", mask, pred, file, line));
  return any == all;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  vote<VoteMode::Sync>("__syncwarp", mask, 0, file, line);
}
// Not computable without lockstep execution: the lanes of the caller's warp that have not exited.
inline unsigned __activemask() {
  using namespace pycnn_emu::detail;
  if (!g_run) return 1u;
  const int w = g_run->cur / 32;
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) {
    const int t = w * 32 + l;
    if (t < g_run->nthreads && g_run->fibers[t].state != pycnn_emu::TState::Done) m |= 1u << l;
  }
  return m;
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  if (!g_run) return 1u;
  MatchArgs<T> a{value, 0, 0};
  pycnn_emu::WarpCall c{"__match_any_sync", mask, file, line, &a, &match_resolve<T, false>};
  warp_collective(c);
  return a.out;
}
template <typename T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred, PYCNN_EMU_SITE) {
  using namespace pycnn_emu::detail;
  if (!g_run) { *pred = 1; return 1u; }
  MatchArgs<T> a{value, 0, 0};
  pycnn_emu::WarpCall c{"__match_all_sync", mask, file, line, &a, &match_resolve<T, true>};
  warp_collective(c);
  *pred = a.all;
  return a.out;
}
#define PYCNN_EMU_WREDUCE(NAME, T, OP) \
  inline T NAME(unsigned mask, T v, PYCNN_EMU_SITE) { return pycnn_emu::detail::warp_reduce<T, OP>(#NAME, mask, v, file, line); }
PYCNN_EMU_WREDUCE(__reduce_add_sync, unsigned, 0)
PYCNN_EMU_WREDUCE(__reduce_add_sync, int, 0)
PYCNN_EMU_WREDUCE(__reduce_min_sync, unsigned, 1)
PYCNN_EMU_WREDUCE(__reduce_min_sync, int, 1)
PYCNN_EMU_WREDUCE(__reduce_max_sync, unsigned, 2)
PYCNN_EMU_WREDUCE(__reduce_max_sync, int, 2)
PYCNN_EMU_WREDUCE(__reduce_and_sync, unsigned, 3)
PYCNN_EMU_WREDUCE(__reduce_or_sync, unsigned, 4)
PYCNN_EMU_WREDUCE(__reduce_xor_sync, unsigned, 5)
#undef PYCNN_EMU_WREDUCE
#undef PYCNN_EMU_SITE

// ---- memory fences, clocks -----------------------------------------------------------------------------------
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline long long clock64() {
  static long long t = 0;
  return t += 1000;
}
// A spin-wait yields to the other threads of the block (they are fibers of one OS thread).
inline void __nanosleep(unsigned) {
  if (pycnn_emu::detail::g_run) pycnn_emu::detail::switch_to_scheduler();
}

// ---- loads and stores with cache hints: plain accesses -----------------------------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

// ---- atomics (threads of a launch never run in parallel, so plain read-modify-write is atomic) ---------------
#define PYCNN_EMU_ATOMIC2(NAME, T, EXPR) \
  inline T NAME(T* addr, T val) { T old = *addr; *addr = (EXPR); return old; }
#define PYCNN_EMU_ATOMIC_ALL_SCOPES(NAME, T, EXPR) \
  PYCNN_EMU_ATOMIC2(NAME, T, EXPR) PYCNN_EMU_ATOMIC2(NAME##_block, T, EXPR) PYCNN_EMU_ATOMIC2(NAME##_system, T, EXPR)

PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, int, old + val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, unsigned int, old + val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, unsigned long long, old + val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, float, old + val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, double, old + val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, __half, __hadd(old, val))
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, __nv_bfloat16, __hadd(old, val))
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, __half2, __hadd2(old, val))
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAdd, __nv_bfloat162, __hadd2(old, val))
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicSub, int, old - val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicSub, unsigned int, old - val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicExch, int, val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicExch, unsigned int, val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicExch, unsigned long long, val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicExch, float, val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMin, int, val < old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMin, unsigned int, val < old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMin, long long, val < old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMin, unsigned long long, val < old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMax, int, val > old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMax, unsigned int, val > old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMax, long long, val > old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicMax, unsigned long long, val > old ? val : old)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAnd, int, old & val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAnd, unsigned int, old & val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicAnd, unsigned long long, old & val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicOr, int, old | val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicOr, unsigned int, old | val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicOr, unsigned long long, old | val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicXor, int, old ^ val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicXor, unsigned int, old ^ val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicXor, unsigned long long, old ^ val)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicInc, unsigned int, (old >= val) ? 0u : old + 1u)
PYCNN_EMU_ATOMIC_ALL_SCOPES(atomicDec, unsigned int, (old == 0u || old > val) ? val : old - 1u)
#undef PYCNN_EMU_ATOMIC_ALL_SCOPES
#undef PYCNN_EMU_ATOMIC2
#define PYCNN_EMU_CAS(T)                                                                              \
  inline T atomicCAS(T* addr, T compare, T val) { T old = *addr; if (old == compare) *addr = val; return old; } \
  inline T atomicCAS_block(T* addr, T compare, T val) { return atomicCAS(addr, compare, val); }       \
  inline T atomicCAS_system(T* addr, T compare, T val) { return atomicCAS(addr, compare, val); }
PYCNN_EMU_CAS(int)
PYCNN_EMU_CAS(unsigned int)
PYCNN_EMU_CAS(unsigned long long)
PYCNN_EMU_CAS(unsigned short)
#undef PYCNN_EMU_CAS

// ---- bit manipulation and reinterpretation -------------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(unsigned(x))) << 32) | __brev(unsigned(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return unsigned((v << (shift & 31u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return unsigned(v >> (shift & 31u));
}
inline int __mulhi(int a, int b) { return int((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((static_cast<unsigned long long>(a) * b) >> 32); }
inline int __mul24(int a, int b) { return ((a << 8) >> 8) * ((b << 8) >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline unsigned __float_as_uint(float x) { unsigned r; std::memcpy(&r, &x, 4); return r; }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned x) { float r; std::memcpy(&r, &x, 4); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }

// ---- math -------------------------------------------------------------------------------------------------------
// Exact-rounding intrinsics are exact here too; the GPU's approximate ones (__expf, rsqrtf, __fdividef, ...)
// are computed with the accurate host function, so results can differ from the GPU in the last bits.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline void sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return int(std::trunc(x)); }
inline int __float2int_rd(float x) { return int(std::floor(x)); }
inline int __float2int_ru(float x) { return int(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return unsigned(std::nearbyint(x)); }
inline unsigned __float2uint_rz(float x) { return unsigned(std::trunc(x)); }
inline long long __float2ll_rn(float x) { return (long long)std::nearbyint(x); }
inline long long __float2ll_rz(float x) { return (long long)std::trunc(x); }
inline float __int2float_rn(int x) { return float(x); }
inline float __uint2float_rn(unsigned x) { return float(x); }
inline float __ll2float_rn(long long x) { return float(x); }
inline int __double2int_rn(double x) { return int(std::nearbyint(x)); }
inline float __double2float_rn(double x) { return float(x); }

// CUDA's global min/max overloads for device code.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(unsigned(a), b); }
inline unsigned max(int a, unsigned b) { return max(unsigned(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, unsigned(b)); }
inline unsigned max(unsigned a, int b) { return max(a, unsigned(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(double(a), b); }
inline double max(float a, double b) { return std::fmax(double(a), b); }
inline double min(double a, float b) { return std::fmin(a, double(b)); }
inline double max(double a, float b) { return std::fmax(a, double(b)); }

// ---- runtime API ------------------------------------------------------------------------------------------------
inline cudaError_t cudaGetLastError() {
  auto& s = pycnn_emu::error_state();
  const cudaError_t e = s.last;
  s.last = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return pycnn_emu::error_state().last; }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
  }
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaMemset(void* p, int v, size_t n) { std::memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t n, size_t offset = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
  std::memcpy(reinterpret_cast<char*>(&symbol) + offset, src, n);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMemcpyToSymbolAsync(T& symbol, const void* src, size_t n, size_t offset = 0,
                                           cudaMemcpyKind = cudaMemcpyHostToDevice, cudaStream_t = nullptr) {
  std::memcpy(reinterpret_cast<char*>(&symbol) + offset, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { std::free(p); return cudaSuccess; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* entry, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;
    pycnn_emu::max_dynamic_smem_attr()[reinterpret_cast<const void*>(entry)] = value;
  }
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
  const auto& s = pycnn_emu::settings();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 * 1024; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMultiProcessorCount: *v = s.sm_count; break;
    case cudaDevAttrComputeCapabilityMajor: *v = s.cc_major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = s.cc_minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p));
  const auto& s = pycnn_emu::settings();
  std::strcpy(p->name, "pycnn emulated device");
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
  p->maxThreadsPerMultiProcessor = 2048;
  p->multiProcessorCount = s.sm_count;
  p->major = s.cc_major;
  p->minor = s.cc_minor;
  return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F, int block_size, size_t) {
  *n = block_size > 0 ? std::max(1, std::min(32, 2048 / block_size)) : 0;
  return cudaSuccess;
}
