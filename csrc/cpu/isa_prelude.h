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

// v (a vector of fewer lanes than a register: gconv's narrow tiles) as the low lanes of one register, the
// others undefined (for a masked store in avx512): free register casts from 16 and 32 bytes in avx512
// (GCC's own shuffles to a wider vector went through the stack), lanes doubled by a shuffle otherwise.
template <typename V, std::size_t... I>
inline auto doubled_lanes(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (I % (sizeof...(I) / 2))...);
}

template <typename acc, typename VN>
inline typename Vec<acc>::type widen_to_register(VN v) {
  using V = typename Vec<acc>::type;
  if constexpr (sizeof(VN) == sizeof(V)) {
    return v;
#ifdef PYCNN_CPU_AVX512
  } else if constexpr (sizeof(VN) == 16) {
    return (V)_mm512_castps128_ps512((__m128)v);
  } else if constexpr (sizeof(VN) == 32) {
    return (V)_mm512_castps256_ps512((__m256)v);
#endif
  } else {
    return widen_to_register<acc>(doubled_lanes(v, std::make_index_sequence<2 * sizeof(VN) / sizeof(acc)>{}));
  }
}

// One vector of acc from n values of T (n < lanes: avx512's masked tails; lanes [n, lanes) are zero and
// not read), and back. T other than acc (half, bfloat16) is widened with F16C / AVX2 / AVX-512
// instructions in the avx2 and avx512 variants (exact: half to float is vcvtph2ps, bfloat16 to float a
// 16-bit shift), lane by lane in the baseline; stores narrow lane by lane. Written as whole vectors, a
// kernel's loads are never sunk into one branch of a select and if-converted into masked loads (GCC 12's
// avx2 code for such a masked load of a 16-lane group gave the upper 8 lanes the lower 8 lanes' mask).
template <typename acc, typename T>
inline typename Vec<acc>::type vload_as(const T* p, int n = Vec<acc>::lanes) {
  using V = typename Vec<acc>::type;
  constexpr bool half_to_float =
      std::is_same_v<acc, float> && (std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>);
  if constexpr (std::is_same_v<T, acc>) {
    return vload_n(p, n);
#if defined(PYCNN_CPU_AVX512)
  } else if constexpr (half_to_float) {
    const __m256i h = _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p);
    if constexpr (std::is_same_v<T, at::Half>) return (V)_mm512_cvtph_ps(h);
    else return (V)_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
#elif defined(PYCNN_CPU_FMA) && defined(__x86_64__)
  } else if constexpr (half_to_float) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<T, at::Half>) return (V)_mm256_cvtph_ps(h);
    else return (V)_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
#endif
  } else {
    (void)half_to_float;
    V v{};
    for (int t = 0; t < (kMaskedTails ? n : Vec<acc>::lanes); ++t) v[t] = static_cast<acc>(p[t]);
    return v;
  }
}

template <typename acc, typename T>
inline void vstore_as(T* p, typename Vec<acc>::type v, int n = Vec<acc>::lanes) {
  if constexpr (std::is_same_v<T, acc>) {
    vstore_n(p, v, n);
  } else {
    for (int t = 0; t < (kMaskedTails ? n : Vec<acc>::lanes); ++t) p[t] = static_cast<T>(v[t]);
  }
}

// The vector at p of a loop over [0, len) in vectors: whole vectors (Tail false: vload_as / vstore_as, n
// is the lane count) or the last, partial one (Tail true, n < lanes): a masked load / store in avx512
// (kMaskedTails), lane by lane elsewhere; loaded lanes [n, lanes) are zero. One loop body serves both.
template <bool Tail, typename acc, typename T>
inline typename Vec<acc>::type vload_span(const T* p, int n) {
  if constexpr (!Tail || kMaskedTails) {
    return vload_as<acc>(p, n);
  } else {
    typename Vec<acc>::type v{};
    for (int t = 0; t < n; ++t) v[t] = static_cast<acc>(p[t]);
    return v;
  }
}

template <bool Tail, typename acc, typename T>
inline void vstore_span(T* p, typename Vec<acc>::type v, int n) {
  if constexpr (!Tail || kMaskedTails) {
    vstore_as<acc>(p, v, n);
  } else {
    for (int t = 0; t < n; ++t) p[t] = static_cast<T>(v[t]);
  }
}

// Runs body(j, n, tail) over [0, len) in spans of S values: tail std::false_type with n = S, then for a
// last partial span std::true_type with its n < S.
template <int S, typename Body>
inline void for_spans(int64_t len, Body body) {
  int64_t j = 0;
  for (; j + S <= len; j += S) body(j, S, std::false_type{});
  if (j < len) body(j, static_cast<int>(len - j), std::true_type{});
}

// Runs body(j, n, tail) over [0, len) one vector at a time: tail std::false_type with n = lanes, then for
// a last partial vector std::true_type with its n < lanes (pass both to vload_span / vstore_span).
template <typename acc, typename Body>
inline void for_vectors(int64_t len, Body body) {
  for_spans<Vec<acc>::lanes>(len, body);
}

// Whether the variant's vectors shuffle as one register (vpermps in avx2, vpermt2ps in avx512); the baseline's
// 32-byte vectors are two SSE registers, and GCC's SSE2 code for a shuffle across both was 2-5x slower than a
// scalar copy (tools/cpu_copies_bench.cpp).
#ifdef PYCNN_CPU_FMA
constexpr bool kVectorShuffles = true;
#else
constexpr bool kVectorShuffles = false;
#endif

template <typename V, std::size_t H, std::size_t... I>
inline V interleave_lanes(V a, V b, std::index_sequence<I...>) {  // a[H], b[H], a[H + 1], b[H + 1], ...
  return __builtin_shufflevector(a, b, (H + I / 2 + (I % 2) * sizeof...(I))...);
}

// dst[2t] = even[t], dst[2t + 1] = odd[t] for the n values dst[0, n), n <= 2 lanes (a span of for_spans<2 *
// lanes>; dwconv NCHW's two column phases of dx): two shuffles and two stores of whole vectors, the stores
// masked for a partial span in avx512; scalar loops in the baseline and for the other variants' partial
// spans (a tail gathered into a vector lane by lane goes through the stack: 2x slower than these loops).
// even and odd are read as whole vectors: the caller has a vector past them readable.
template <bool Tail, typename acc, typename T>
inline void copy_interleaved_span(T* dst, const acc* even, const acc* odd, int n) {
  constexpr int L = Vec<acc>::lanes;
  if constexpr (!kVectorShuffles || (Tail && !kMaskedTails)) {
    const int n_even = (n + 1) / 2, n_odd = n / 2;
    for (int t = 0; t < n_even; ++t) dst[2 * t] = static_cast<T>(even[t]);
    for (int t = 0; t < n_odd; ++t) dst[2 * t + 1] = static_cast<T>(odd[t]);
  } else {
    using Seq = std::make_index_sequence<L>;
    const auto a = vload<acc>(even), b = vload<acc>(odd);
    vstore_span<Tail, acc>(dst, interleave_lanes<decltype(a), 0>(a, b, Seq{}), Tail ? std::min(n, L) : L);
    vstore_span<Tail, acc>(dst + L, interleave_lanes<decltype(a), L / 2>(a, b, Seq{}), Tail ? std::max(n - L, 0) : L);
  }
}

// act(z) and dy * act'(z) on a vector: the piecewise-linear activations as vector selects (the formulas of
// activation.h, NaN passing through alike), SiLU lane by lane through cpu_act / cpu_act_backward
// (cpu/kernel_utils.h: the vectorizable exp). Written lane by lane, GCC 12 left ReLU6 and HardSwish scalar
// in avx512 (4x slower dwconv NCHW epilogues).
template <Act A, typename acc>
inline typename Vec<acc>::type act_lanes(typename Vec<acc>::type z) {
  using V = typename Vec<acc>::type;
  const V zero{}, six = zero + acc(6);
  if constexpr (A == Act::ReLU) {
    return z < zero ? zero : z;
  } else if constexpr (A == Act::ReLU6) {
    return z < zero ? zero : (z > six ? six : z);
  } else if constexpr (A == Act::HardSwish) {
    V t = z + acc(3);
    t = t < zero ? zero : (t > six ? six : t);
    return z * t / acc(6);
  } else if constexpr (A == Act::None) {
    return z;
  } else {
    V y;
    for (int t = 0; t < Vec<acc>::lanes; ++t) y[t] = cpu::cpu_act<A, acc>(z[t]);
    return y;
  }
}

template <Act A, typename acc>
inline typename Vec<acc>::type act_backward_lanes(typename Vec<acc>::type dy, typename Vec<acc>::type z) {
  using V = typename Vec<acc>::type;
  const V zero{}, three = zero + acc(3);
  if constexpr (A == Act::ReLU) {
    return z <= zero ? zero : dy;
  } else if constexpr (A == Act::ReLU6) {
    return ((z > zero) & (z < zero + acc(6))) ? dy : zero;
  } else if constexpr (A == Act::HardSwish) {
    return z <= -three ? zero : (z >= three ? dy : dy * (z / acc(3) + acc(0.5)));
  } else if constexpr (A == Act::None) {
    return dy;
  } else {
    V g;
    for (int t = 0; t < Vec<acc>::lanes; ++t) g[t] = cpu::cpu_act_backward<A, acc>(dy[t], z[t]);
    return g;
  }
}
