// Helpers every kernels header compiled by cpu/isa_kernels.h shares, compiled into each of its ISA
// namespaces (so no include guard): the multiply-add of that build and 32-byte GCC vector types.

// PYCNN_CPU_FMA (the AVX2+FMA build): fused multiply-add (std::fma) instead of a multiply and an add.
#ifdef PYCNN_CPU_FMA
template <typename acc> inline acc madd(acc a, acc b, acc c) { return std::fma(a, b, c); }
#else
template <typename acc> inline acc madd(acc a, acc b, acc c) { return a * b + c; }
#endif

// The vector types are only passed between inlined functions of one build, so GCC's note that their
// ABI differs between the baseline and AVX builds does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// 32-byte vectors (one AVX register, two SSE ones) of float or double. Hot loops written with them keep
// their register blocking whatever the auto-vectorizer does (plain arrays of scalars were spilled, or
// scalarized under link-time optimization). Under -ffp-contract=fast (GNU C++) a * b + c is an FMA in the
// AVX2 build. Unaligned loads and stores go through a type of the element's alignment.
template <typename acc> struct Vec {
  typedef acc type __attribute__((vector_size(32)));
  typedef acc unaligned __attribute__((vector_size(32), aligned(alignof(acc)), may_alias));
  static constexpr int lanes = 32 / sizeof(acc);
};

template <typename acc>
inline typename Vec<acc>::type vload(const acc* p) {
  return *reinterpret_cast<const typename Vec<acc>::unaligned*>(p);
}

template <typename acc>
inline void vstore(acc* p, typename Vec<acc>::type v) {
  *reinterpret_cast<typename Vec<acc>::unaligned*>(p) = v;
}

// Keeps v in a register where it is: GCC otherwise folds a vector load into every multiply-add that uses
// it (one load per use, and the addresses of all of them live in spilled registers). The AVX2 build only:
// there a 32-byte vector is one register.
template <typename V>
inline void in_register(V& v) {
#ifdef PYCNN_CPU_FMA
  asm("" : "+x"(v));
#endif
}
