// Helpers every kernels header compiled by cpu/isa_kernels.h shares, compiled into the namespace of its
// variant: the multiply-add of that variant and GCC vector types of its width (32 bytes in the baseline
// and avx2 variants, 64 in avx512).

// PYCNN_CPU_FMA (avx2, avx512): fused multiply-add (std::fma) instead of a multiply and an add.
#ifdef PYCNN_CPU_FMA
template <typename acc> inline acc madd(acc a, acc b, acc c) { return std::fma(a, b, c); }
#else
template <typename acc> inline acc madd(acc a, acc b, acc c) { return a * b + c; }
#endif

// The vector types are only passed between inlined functions of one variant, so GCC's note that their
// ABI differs between the baseline and AVX builds does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// Bytes of the variant's vectors: one AVX-512 register, one AVX register, two SSE ones in the baseline.
#ifdef PYCNN_CPU_AVX512
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif

// N values of acc as one GCC vector. Hot loops written with them keep their register blocking whatever the
// auto-vectorizer does (plain arrays of scalars were spilled, or scalarized under link-time optimization).
// Under -ffp-contract=fast (GNU C++) a * b + c is an FMA in the avx2 and avx512 variants. Unaligned loads
// and stores go through a type of the element's alignment.
template <typename acc, int N>
struct VecN {
  typedef acc type __attribute__((vector_size(N * sizeof(acc))));
  typedef acc unaligned __attribute__((vector_size(N * sizeof(acc)), aligned(alignof(acc)), may_alias));
  static constexpr int lanes = N;
};

// One vector register of the variant (8 floats or 4 doubles; 16 and 8 in avx512).
template <typename acc>
struct Vec : VecN<acc, kVectorBytes / int(sizeof(acc))> {};

template <typename acc, int N = Vec<acc>::lanes>
inline typename VecN<acc, N>::type vload(const acc* p) {
  return *reinterpret_cast<const typename VecN<acc, N>::unaligned*>(p);
}

template <typename acc, typename V>
inline void vstore(acc* p, V v) {
  constexpr int N = sizeof(V) / sizeof(acc);
  *reinterpret_cast<typename VecN<acc, N>::unaligned*>(p) = v;
}

// Keeps v in a register where it is: GCC otherwise folds a vector load into every multiply-add that uses
// it (one load per use, and the addresses of all of them live in spilled registers). The avx2 and avx512
// variants only: there a vector is one register.
template <typename V>
inline void in_register(V& v) {
#if defined(PYCNN_CPU_AVX512)
  asm("" : "+v"(v));
#elif defined(PYCNN_CPU_FMA)
  asm("" : "+x"(v));
#endif
}

// The first n lanes of one vector (0 < n <= lanes), the rest zero / left alone: masked AVX-512 loads and
// stores in the avx512 variant (a masked load costs what a plain one does, so a channel tail runs through
// the same register blocks as the whole vectors); elsewhere only n == lanes is used (kMaskedTails false:
// the tails take the kernels' scalar loops).
#ifdef PYCNN_CPU_AVX512
constexpr bool kMaskedTails = true;

template <typename acc>
inline typename Vec<acc>::type vload_n(const acc* p, int n) {
  using V = typename Vec<acc>::type;
  if constexpr (std::is_same_v<acc, float>) {
    return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  } else if constexpr (std::is_same_v<acc, double>) {
    return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
  } else {
    V v{};
    for (int t = 0; t < n; ++t) v[t] = p[t];
    return v;
  }
}

template <typename acc>
inline void vstore_n(acc* p, typename Vec<acc>::type v, int n) {
  if constexpr (std::is_same_v<acc, float>) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), (__m512)v);
  } else if constexpr (std::is_same_v<acc, double>) {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), (__m512d)v);
  } else {
    for (int t = 0; t < n; ++t) p[t] = v[t];
  }
}
#else
constexpr bool kMaskedTails = false;

template <typename acc>
inline typename Vec<acc>::type vload_n(const acc* p, int) {
  return vload(p);
}

template <typename acc>
inline void vstore_n(acc* p, typename Vec<acc>::type v, int) {
  vstore(p, v);
}
#endif
