// pycnn CUDA emulation: __half and __nv_bfloat16 on the host, bit-exact with CUDA's conversions
// (round-to-nearest-even; NaN converts to the canonical 0x7fff like cuda_fp16.hpp / cuda_bf16.hpp).
// Arithmetic on __half / __nv_bfloat16 computes in float and rounds once, which equals the correctly
// rounded native fp16/bf16 result for + - * / (float has >= 2p+2 bits for both formats).
// Honors __CUDA_NO_HALF_CONVERSIONS__, __CUDA_NO_HALF_OPERATORS__, __CUDA_NO_BFLOAT16_CONVERSIONS__,
// __CUDA_NO_BFLOAT16_OPERATORS__ like the CUDA headers do.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace pycnn_emu {
namespace fp {

inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

enum class Round { Nearest, Zero, Down, Up };

// float -> IEEE binary16 with the given rounding.
inline uint16_t float_to_half_bits(float f, Round mode = Round::Nearest) {
  const uint32_t x = f2u(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t u = x & 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7fffu;                     // NaN
  if (u == 0x7f800000u) return uint16_t(sign | 0x7c00u);   // Inf
  uint32_t result, remainder;  // remainder: discarded bits, left-aligned in 32 bits
  const int exp = int(u >> 23) - 127;
  if (exp > 15) {  // overflows (finite max is 65504)
    result = sign | 0x7bffu;
    remainder = 0xffffffffu;  // "more than half": rounds to Inf in nearest, stays at max toward zero
  } else if (exp >= -14) {    // normal half
    result = sign | (uint32_t(exp + 15) << 10) | ((u & 0x7fffffu) >> 13);
    remainder = u << 19;
  } else if (exp >= -25) {    // subnormal half (2^-25 included: may round up to the smallest subnormal)
    const uint32_t mant = (u & 0x7fffffu) | 0x800000u;

    // value = mant * 2^(exp-23); half subnormal unit is 2^-24 -> q = mant * 2^(exp+1) = mant >> (-(exp+1))
    const int s = -(exp + 1);  // 13 .. 24
    result = sign | (mant >> s);
    remainder = (s >= 32) ? 0u : (mant << (32 - s));

  } else {  // below half of the smallest subnormal's rounding range
    result = sign;
    remainder = u ? 1u : 0u;  // nonzero but < 2^-25: less than half an ulp
  }
  bool up = false;
  switch (mode) {
    case Round::Nearest: up = remainder > 0x80000000u || (remainder == 0x80000000u && (result & 1u)); break;
    case Round::Zero: up = false; break;
    case Round::Down: up = sign && remainder; break;
    case Round::Up: up = !sign && remainder; break;
  }
  if (exp > 15 && mode != Round::Nearest) {
    // directed rounding of an overflow: toward the value's own direction gives Inf
    up = (mode == Round::Up && !sign) || (mode == Round::Down && sign);
  }
  if (up) result++;
  return uint16_t(result);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { e++; mant <<= 1; } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      u = sign | (uint32_t(127 - 15 - e) << 23) | (mant << 13);
    }
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return u2f(u);
}

inline uint16_t float_to_bf16_bits(float f, Round mode = Round::Nearest) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
  const uint32_t sign = u & 0x80000000u;
  const uint32_t rem = u & 0xffffu;
  uint32_t r = u >> 16;
  switch (mode) {
    case Round::Nearest: u += 0x7fffu + ((u >> 16) & 1u); return uint16_t(u >> 16);
    case Round::Zero: return uint16_t(r);
    case Round::Down: return uint16_t(r + ((sign && rem) ? 1u : 0u));
    case Round::Up: return uint16_t(r + ((!sign && rem) ? 1u : 0u));
  }
  return uint16_t(r);
}

inline float bf16_bits_to_float(uint16_t b) { return u2f(uint32_t(b) << 16); }

// double -> half / bfloat16 rounded once (to nearest even), like __double2half / __double2bfloat16: scale the
// value so that the target's unit in the last place is 1, round to an integer (exact, ties to even), scale
// back; the result is representable in the target format, so the final float conversion is exact.
inline double round_to_format(double d, int mant_bits, int min_exp) {
  if (d == 0 || !std::isfinite(d)) return d;
  int e;
  std::frexp(d, &e);  // |d| in [2^(e-1), 2^e)
  const int exp = std::max(e - 1, min_exp);
  const double ulp = std::ldexp(1.0, exp - mant_bits);
  return std::nearbyint(d / ulp) * ulp;
}
inline uint16_t double_to_half_bits(double d) {
  if (std::isnan(d)) return 0x7fffu;
  const double r = round_to_format(d, 10, -14);
  if (std::fabs(r) > 65504.0) return std::signbit(d) ? 0xfc00u : 0x7c00u;
  return float_to_half_bits(float(r));
}
inline uint16_t double_to_bf16_bits(double d) {
  if (std::isnan(d)) return 0x7fffu;
  const double r = round_to_format(d, 7, -126);
  return float_to_bf16_bits(float(r));  // exact, or +-inf past the largest finite bfloat16
}

}  // namespace fp
}  // namespace pycnn_emu

struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };

struct __align__(2) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
  operator __half_raw() const { return __half_raw{__x}; }
#if !defined(__CUDA_NO_HALF_CONVERSIONS__)
  __half(float f) : __x(pycnn_emu::fp::float_to_half_bits(f)) {}
  __half(double f) : __x(pycnn_emu::fp::double_to_half_bits(f)) {}
  __half(int v) : __half(float(v)) {}
  __half(unsigned int v) : __half(float(v)) {}
  __half(long long v) : __half(float(v)) {}
  __half(unsigned long long v) : __half(float(v)) {}
  __half(short v) : __half(float(v)) {}
  __half(unsigned short v) : __half(float(v)) {}
  __half& operator=(float f) { __x = pycnn_emu::fp::float_to_half_bits(f); return *this; }
  __half& operator=(double f) { __x = pycnn_emu::fp::double_to_half_bits(f); return *this; }
  operator float() const { return pycnn_emu::fp::half_bits_to_float(__x); }
#endif
};

struct __align__(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) { __x = r.x; return *this; }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
#if !defined(__CUDA_NO_BFLOAT16_CONVERSIONS__)
  __nv_bfloat16(float f) : __x(pycnn_emu::fp::float_to_bf16_bits(f)) {}
  __nv_bfloat16(double f) : __x(pycnn_emu::fp::double_to_bf16_bits(f)) {}
  __nv_bfloat16(int v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16(unsigned int v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16(long long v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16(unsigned long long v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16(short v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16(unsigned short v) : __nv_bfloat16(float(v)) {}
  __nv_bfloat16& operator=(float f) { __x = pycnn_emu::fp::float_to_bf16_bits(f); return *this; }
  __nv_bfloat16& operator=(double f) { __x = pycnn_emu::fp::double_to_bf16_bits(f); return *this; }
  operator float() const { return pycnn_emu::fp::bf16_bits_to_float(__x); }
#endif
};

typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

struct __align__(4) __half2 {
  __half x, y;
};
struct __align__(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;

// ---- conversions --------------------------------------------------------------------------------------
#define PYCNN_EMU_MKH(bits) __half(__half_raw{static_cast<unsigned short>(bits)})
#define PYCNN_EMU_MKB(bits) __nv_bfloat16(__nv_bfloat16_raw{static_cast<unsigned short>(bits)})
namespace pycnn_emu { namespace fp {
inline unsigned short hbits(__half h) { return __half_raw(h).x; }
inline unsigned short bbits(__nv_bfloat16 h) { return __nv_bfloat16_raw(h).x; }
}}

inline float __half2float(__half a) { return pycnn_emu::fp::half_bits_to_float(pycnn_emu::fp::hbits(a)); }
inline __half __float2half(float a) { return PYCNN_EMU_MKH(pycnn_emu::fp::float_to_half_bits(a)); }
inline __half __float2half_rn(float a) { return PYCNN_EMU_MKH(pycnn_emu::fp::float_to_half_bits(a)); }
inline __half __float2half_rz(float a) {
  return PYCNN_EMU_MKH(pycnn_emu::fp::float_to_half_bits(a, pycnn_emu::fp::Round::Zero));
}
inline __half __float2half_rd(float a) {
  return PYCNN_EMU_MKH(pycnn_emu::fp::float_to_half_bits(a, pycnn_emu::fp::Round::Down));
}
inline __half __float2half_ru(float a) {
  return PYCNN_EMU_MKH(pycnn_emu::fp::float_to_half_bits(a, pycnn_emu::fp::Round::Up));
}
inline float __bfloat162float(__nv_bfloat16 a) { return pycnn_emu::fp::bf16_bits_to_float(pycnn_emu::fp::bbits(a)); }
inline __nv_bfloat16 __float2bfloat16(float a) { return PYCNN_EMU_MKB(pycnn_emu::fp::float_to_bf16_bits(a)); }
inline __nv_bfloat16 __float2bfloat16_rn(float a) { return PYCNN_EMU_MKB(pycnn_emu::fp::float_to_bf16_bits(a)); }
inline __nv_bfloat16 __float2bfloat16_rz(float a) {
  return PYCNN_EMU_MKB(pycnn_emu::fp::float_to_bf16_bits(a, pycnn_emu::fp::Round::Zero));
}
inline __nv_bfloat16 __float2bfloat16_rd(float a) {
  return PYCNN_EMU_MKB(pycnn_emu::fp::float_to_bf16_bits(a, pycnn_emu::fp::Round::Down));
}
inline __nv_bfloat16 __float2bfloat16_ru(float a) {
  return PYCNN_EMU_MKB(pycnn_emu::fp::float_to_bf16_bits(a, pycnn_emu::fp::Round::Up));
}
inline __half __double2half(double a) { return PYCNN_EMU_MKH(pycnn_emu::fp::double_to_half_bits(a)); }
inline __nv_bfloat16 __double2bfloat16(double a) { return PYCNN_EMU_MKB(pycnn_emu::fp::double_to_bf16_bits(a)); }
inline __half __int2half_rn(int a) { return __float2half_rn(float(a)); }
inline __nv_bfloat16 __int2bfloat16_rn(int a) { return __float2bfloat16_rn(float(a)); }
inline int __half2int_rz(__half a) { return int(std::trunc(__half2float(a))); }
inline int __half2int_rn(__half a) { return int(std::nearbyint(__half2float(a))); }
inline int __bfloat162int_rz(__nv_bfloat16 a) { return int(std::trunc(__bfloat162float(a))); }
inline int __bfloat162int_rn(__nv_bfloat16 a) { return int(std::nearbyint(__bfloat162float(a))); }
inline unsigned short __half_as_ushort(__half a) { return pycnn_emu::fp::hbits(a); }
inline short __half_as_short(__half a) { return short(pycnn_emu::fp::hbits(a)); }
inline __half __ushort_as_half(unsigned short a) { return PYCNN_EMU_MKH(a); }
inline __half __short_as_half(short a) { return PYCNN_EMU_MKH(a); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 a) { return pycnn_emu::fp::bbits(a); }
inline short __bfloat16_as_short(__nv_bfloat16 a) { return short(pycnn_emu::fp::bbits(a)); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short a) { return PYCNN_EMU_MKB(a); }
inline __nv_bfloat16 __short_as_bfloat16(short a) { return PYCNN_EMU_MKB(a); }

// ---- scalar arithmetic (float, rounded once) -------------------------------------------------------------
#define PYCNN_EMU_HALF_ARITH(H, TOF, FROMF, P)                                                      \
  inline H P##add(H a, H b) { return FROMF(TOF(a) + TOF(b)); }                                      \
  inline H P##sub(H a, H b) { return FROMF(TOF(a) - TOF(b)); }                                      \
  inline H P##mul(H a, H b) { return FROMF(TOF(a) * TOF(b)); }                                      \
  inline H P##div(H a, H b) { return FROMF(TOF(a) / TOF(b)); }                                      \
  inline H P##fma(H a, H b, H c) { return FROMF(float(double(TOF(a)) * double(TOF(b)) + double(TOF(c)))); } \
  inline H P##neg(H a) { H##_raw r = a; r.x ^= 0x8000u; return H(r); }                             \
  inline H P##abs(H a) { H##_raw r = a; r.x &= 0x7fffu; return H(r); }                             \
  inline H P##max(H a, H b) { float x = TOF(a), y = TOF(b); return std::isnan(x) ? b : std::isnan(y) ? a : (x > y ? a : b); } \
  inline H P##min(H a, H b) { float x = TOF(a), y = TOF(b); return std::isnan(x) ? b : std::isnan(y) ? a : (x < y ? a : b); } \
  inline bool P##eq(H a, H b) { return TOF(a) == TOF(b); }                                          \
  inline bool P##ne(H a, H b) { return TOF(a) != TOF(b) && !std::isnan(TOF(a)) && !std::isnan(TOF(b)); } \
  inline bool P##lt(H a, H b) { return TOF(a) < TOF(b); }                                           \
  inline bool P##le(H a, H b) { return TOF(a) <= TOF(b); }                                          \
  inline bool P##gt(H a, H b) { return TOF(a) > TOF(b); }                                           \
  inline bool P##ge(H a, H b) { return TOF(a) >= TOF(b); }                                          \
  inline bool P##isnan(H a) { return std::isnan(TOF(a)); }

PYCNN_EMU_HALF_ARITH(__half, __half2float, __float2half_rn, __h)
PYCNN_EMU_HALF_ARITH(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn, __h)
#undef PYCNN_EMU_HALF_ARITH
inline __half __hadd_rn(__half a, __half b) { return __hadd(a, b); }
inline __half __hsub_rn(__half a, __half b) { return __hsub(a, b); }
inline __half __hmul_rn(__half a, __half b) { return __hmul(a, b); }
inline __nv_bfloat16 __hadd_rn(__nv_bfloat16 a, __nv_bfloat16 b) { return __hadd(a, b); }
inline __nv_bfloat16 __hsub_rn(__nv_bfloat16 a, __nv_bfloat16 b) { return __hsub(a, b); }
inline __nv_bfloat16 __hmul_rn(__nv_bfloat16 a, __nv_bfloat16 b) { return __hmul(a, b); }
inline __half hsqrt(__half a) { return __float2half_rn(std::sqrt(__half2float(a))); }
inline __half hrsqrt(__half a) { return __float2half_rn(1.0f / std::sqrt(__half2float(a))); }
inline __half hexp(__half a) { return __float2half_rn(std::exp(__half2float(a))); }
inline __half hlog(__half a) { return __float2half_rn(std::log(__half2float(a))); }
inline __half hrcp(__half a) { return __float2half_rn(1.0f / __half2float(a)); }
inline __nv_bfloat16 hsqrt(__nv_bfloat16 a) { return __float2bfloat16_rn(std::sqrt(__bfloat162float(a))); }
inline __nv_bfloat16 hrsqrt(__nv_bfloat16 a) { return __float2bfloat16_rn(1.0f / std::sqrt(__bfloat162float(a))); }
inline __nv_bfloat16 hexp(__nv_bfloat16 a) { return __float2bfloat16_rn(std::exp(__bfloat162float(a))); }
inline __nv_bfloat16 hlog(__nv_bfloat16 a) { return __float2bfloat16_rn(std::log(__bfloat162float(a))); }
inline __nv_bfloat16 hrcp(__nv_bfloat16 a) { return __float2bfloat16_rn(1.0f / __bfloat162float(a)); }

// ---- operators --------------------------------------------------------------------------------------------
#define PYCNN_EMU_HALF_OPS(H)                                                       \
  inline H operator+(H a, H b) { return __hadd(a, b); }                             \
  inline H operator-(H a, H b) { return __hsub(a, b); }                             \
  inline H operator*(H a, H b) { return __hmul(a, b); }                             \
  inline H operator/(H a, H b) { return __hdiv(a, b); }                             \
  inline H& operator+=(H& a, H b) { return a = __hadd(a, b); }                      \
  inline H& operator-=(H& a, H b) { return a = __hsub(a, b); }                      \
  inline H& operator*=(H& a, H b) { return a = __hmul(a, b); }                      \
  inline H& operator/=(H& a, H b) { return a = __hdiv(a, b); }                      \
  inline H operator+(H a) { return a; }                                             \
  inline H operator-(H a) { return __hneg(a); }                                     \
  inline bool operator==(H a, H b) { return __heq(a, b); }                          \
  inline bool operator!=(H a, H b) { return !__heq(a, b); }                         \
  inline bool operator<(H a, H b) { return __hlt(a, b); }                           \
  inline bool operator<=(H a, H b) { return __hle(a, b); }                          \
  inline bool operator>(H a, H b) { return __hgt(a, b); }                           \
  inline bool operator>=(H a, H b) { return __hge(a, b); }
#if !defined(__CUDA_NO_HALF_OPERATORS__)
PYCNN_EMU_HALF_OPS(__half)
#endif
#if !defined(__CUDA_NO_BFLOAT16_OPERATORS__)
PYCNN_EMU_HALF_OPS(__nv_bfloat16)
#endif
#undef PYCNN_EMU_HALF_OPS

// ---- paired types -----------------------------------------------------------------------------------------
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline __half2 __half2half2(__half a) { return __half2{a, a}; }
inline __half2 __float2half2_rn(float a) { return __half2{__float2half_rn(a), __float2half_rn(a)}; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __float22half2_rn(float2 a) { return __half2{__float2half_rn(a.x), __float2half_rn(a.y)}; }
inline float2 __half22float2(__half2 a) { return make_float2(__half2float(a.x), __half2float(a.y)); }
inline float __low2float(__half2 a) { return __half2float(a.x); }
inline float __high2float(__half2 a) { return __half2float(a.y); }
inline __half __low2half(__half2 a) { return a.x; }
inline __half __high2half(__half2 a) { return a.y; }
inline __half2 __lowhigh2highlow(__half2 a) { return __half2{a.y, a.x}; }

inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162{a, b}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162{a, a}; }
inline __nv_bfloat162 __float2bfloat162_rn(float a) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(a)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 a) {
  return __nv_bfloat162{__float2bfloat16_rn(a.x), __float2bfloat16_rn(a.y)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 a) {
  return make_float2(__bfloat162float(a.x), __bfloat162float(a.y));
}
inline float __low2float(__nv_bfloat162 a) { return __bfloat162float(a.x); }
inline float __high2float(__nv_bfloat162 a) { return __bfloat162float(a.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 a) { return a.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 a) { return a.y; }

#define PYCNN_EMU_PAIR_ARITH(H2)                                                                 \
  inline H2 __hadd2(H2 a, H2 b) { return H2{__hadd(a.x, b.x), __hadd(a.y, b.y)}; }               \
  inline H2 __hsub2(H2 a, H2 b) { return H2{__hsub(a.x, b.x), __hsub(a.y, b.y)}; }               \
  inline H2 __hmul2(H2 a, H2 b) { return H2{__hmul(a.x, b.x), __hmul(a.y, b.y)}; }               \
  inline H2 __h2div(H2 a, H2 b) { return H2{__hdiv(a.x, b.x), __hdiv(a.y, b.y)}; }               \
  inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; } \
  inline H2 __hneg2(H2 a) { return H2{__hneg(a.x), __hneg(a.y)}; }                               \
  inline H2 __habs2(H2 a) { return H2{__habs(a.x), __habs(a.y)}; }                               \
  inline H2 __hmax2(H2 a, H2 b) { return H2{__hmax(a.x, b.x), __hmax(a.y, b.y)}; }               \
  inline H2 __hmin2(H2 a, H2 b) { return H2{__hmin(a.x, b.x), __hmin(a.y, b.y)}; }
PYCNN_EMU_PAIR_ARITH(__half2)
PYCNN_EMU_PAIR_ARITH(__nv_bfloat162)
#undef PYCNN_EMU_PAIR_ARITH
#if !defined(__CUDA_NO_HALF2_OPERATORS__)
inline __half2 operator+(__half2 a, __half2 b) { return __hadd2(a, b); }
inline __half2 operator-(__half2 a, __half2 b) { return __hsub2(a, b); }
inline __half2 operator*(__half2 a, __half2 b) { return __hmul2(a, b); }
inline __half2& operator+=(__half2& a, __half2 b) { return a = __hadd2(a, b); }
inline __half2& operator*=(__half2& a, __half2 b) { return a = __hmul2(a, b); }
inline __nv_bfloat162 operator+(__nv_bfloat162 a, __nv_bfloat162 b) { return __hadd2(a, b); }
inline __nv_bfloat162 operator-(__nv_bfloat162 a, __nv_bfloat162 b) { return __hsub2(a, b); }
inline __nv_bfloat162 operator*(__nv_bfloat162 a, __nv_bfloat162 b) { return __hmul2(a, b); }
inline __nv_bfloat162& operator+=(__nv_bfloat162& a, __nv_bfloat162 b) { return a = __hadd2(a, b); }
inline __nv_bfloat162& operator*=(__nv_bfloat162& a, __nv_bfloat162 b) { return a = __hmul2(a, b); }
#endif
#undef PYCNN_EMU_MKH
#undef PYCNN_EMU_MKB
