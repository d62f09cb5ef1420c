// Micro benchmark of the CPU kernels' copies that were plain loops before the vector helpers of
// csrc/cpu/isa_prelude.h took them over: dwconv NCHW's stride-2 dx interleave, pack_rows (GCC had made a
// memmove of its loop) and gconv's store of a narrow tile (fewer channels than a register). Each old loop
// (as it was in the kernels) against the new code, the kernels' compiler flags, best of 15 rounds. (The
// stride-2 phase copy of fill_phases stays a plain loop: GCC vectorizes it with vpermt2ps / vpermps.)
//   for v in baseline avx2 avx512; do g++ -std=gnu++20 -O3 -fno-trapping-math -fno-math-errno -DVARIANT_$v \
//     tools/cpu_copies_bench.cpp -o /tmp/copies_$v && /tmp/copies_$v; done
// The prelude is included as the kernels include it (cpu/isa_kernels.h), with stand-ins for the few ATen
// names it uses.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace at {
struct Half { unsigned short x; operator float() const { return 0; } };
struct BFloat16 { unsigned short x; operator float() const { return 0; } };
}  // namespace at
enum class Act { None, ReLU, ReLU6, SiLU, HardSwish };
namespace cpu {
template <Act A, typename acc> acc cpu_act(acc z) { return z; }
template <Act A, typename acc> acc cpu_act_backward(acc d, acc) { return d; }
}  // namespace cpu

#if defined(VARIANT_avx512)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#define PYCNN_CPU_FMA 1
#define PYCNN_CPU_AVX512 1
#elif defined(VARIANT_avx2)
#pragma GCC target("avx2,fma,f16c")
#define PYCNN_CPU_FMA 1
#endif

namespace bench {
#include "../csrc/cpu/isa_prelude.h"

// ---- the old loops
__attribute__((noinline)) void inter_old(const float* e, const float* o, float* __restrict__ dxr, int64_t W) {
  for (int bb = 0; bb < 2; ++bb) {
    const float* __restrict__ src = bb == 0 ? e : o;
    const int64_t cnt = (W - bb + 1) / 2;
    for (int64_t m = 0; m < cnt; ++m) dxr[bb + 2 * m] = src[m];
  }
}
__attribute__((noinline)) void pack_old(float* u, int64_t rows, int64_t P, int64_t OW) {
  for (int64_t i = 1; i < rows; ++i) {
    const float* src = u + i * P;
    float* dst = u + i * OW;
    for (int64_t t = 0; t < OW; ++t) dst[t] = src[t];
  }
}
template <int T>
__attribute__((noinline)) void store_old(float* out, const float* v, int64_t tiles, int64_t n) {
  for (int64_t i = 0; i < tiles; ++i) {
    const typename VecN<float, T>::type x = vload<float, T>(v + i * T);
    for (int64_t j = 0; j < n; ++j) out[i * 32 + j] = out[i * 32 + j] + x[j];
  }
}

// ---- the new code (the kernels' bodies)
__attribute__((noinline)) void inter_new(const float* e, const float* o, float* dxr, int64_t W) {
  for_spans<2 * Vec<float>::lanes>(W, [&](int64_t iw, int k, auto tail) {
    copy_interleaved_span<decltype(tail)::value, float>(dxr + iw, e + iw / 2, o + iw / 2, k);
  });
}
__attribute__((noinline)) void pack_new(float* u, int64_t rows, int64_t P, int64_t OW) {
  for (int64_t i = 1; i < rows; ++i) {
    const float* src = u + i * P;
    float* dst = u + i * OW;
    if (kMaskedTails && OW >= 8) {
      for_vectors<float>(OW, [&](int64_t t, int k, auto tail) {
        constexpr bool Tl = decltype(tail)::value;
        vstore_span<Tl, float>(dst + t, vload_span<Tl, float>(src + t, k), k);
      });
    } else {
      for (int64_t t = 0; t < OW; ++t) dst[t] = src[t];
    }
  }
}
template <int T>
__attribute__((noinline)) void store_new(float* out, const float* v, int64_t tiles, int64_t n) {
  for (int64_t i = 0; i < tiles; ++i) {
    float* o = out + i * 32;  // a tile per pixel: c_out apart
    typename VecN<float, T>::type x = vload<float, T>(v + i * T);
    if (n == T) {
      x += vload<float, T>(o);
      vstore(o, x);
    } else if constexpr (kMaskedTails) {
      const int k = static_cast<int>(n);
      auto w = widen_to_register<float>(x);
      w += vload_span<true, float>(o, k);
      vstore_span<true, float>(o, w, k);
    } else {
      for (int64_t j = 0; j < n; ++j) o[j] = o[j] + x[j];
    }
  }
}
}  // namespace bench

// Best ns per call of f_old and f_new over 15 rounds, alternating (load drift falls on both).
template <typename F, typename G>
std::pair<double, double> best_ns(F f_old, G f_new, int inner) {
  double best[2] = {1e30, 1e30};
  for (int r = 0; r < 30; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) r % 2 ? f_new() : f_old();
    const auto t1 = std::chrono::steady_clock::now();
    best[r % 2] = std::min(best[r % 2], std::chrono::duration<double, std::nano>(t1 - t0).count() / inner);
  }
  return {best[0], best[1]};
}

int main() {
  using namespace bench;
  std::vector<float> a(1 << 16), b(1 << 16), c(1 << 16);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i % 97), b[i] = float(i % 89);
  std::printf("variant %s (%d float lanes): ns per call, old loop -> new, ratio\n",
#if defined(VARIANT_avx512)
              "avx512",
#elif defined(VARIANT_avx2)
              "avx2",
#else
              "baseline",
#endif
              Vec<float>::lanes);
  auto line = [](const char* what, std::pair<double, double> t) {
    std::printf("  %-44s %9.1f -> %9.1f  x%.2f\n", what, t.first, t.second, t.first / t.second);
  };
  for (int64_t w : {112, 56, 28, 14, 7}) {
    const int64_t rows = 64, half = w / 2 + 8;
    auto run = [&](auto f) {
      return [&, f] {
        for (int64_t r = 0; r < rows; ++r) f(a.data() + r * half, b.data() + r * half, c.data() + r * w, w);
      };
    };
    char name[64];
    std::snprintf(name, sizeof name, "dx interleave, %ld rows of %ld", long(rows), long(w));
    line(name, best_ns(run(inter_old), run(inter_new), 200));
  }
  for (int64_t ow : {56, 28, 14, 7}) {
    const int64_t P = ow + 2, rows = std::min<int64_t>(4096 / P, ow);
    auto run = [&](auto f) { return [&, f] { f(c.data(), rows, P, ow); }; };
    char name[64];
    std::snprintf(name, sizeof name, "pack_rows, %ld rows of %ld (pitch %ld)", long(rows), long(ow), long(P));
    line(name, best_ns(run(pack_old), run(pack_new), 2000));
  }
  {
    const float* v4 = b.data();  // 1024 tiles of 4, of 8 values
    const float* v8 = b.data();
    line("gconv store, 1024 tiles T=4, n=4 (add)", best_ns([&] { store_old<4>(c.data(), v4, 1024, 4); },
                                                   [&] { store_new<4>(c.data(), v4, 1024, 4); }, 500));
    line("gconv store, 1024 tiles T=4, n=3 (add)", best_ns([&] { store_old<4>(c.data(), v4, 1024, 3); },
                                                   [&] { store_new<4>(c.data(), v4, 1024, 3); }, 500));
    line("gconv store, 1024 tiles T=8, n=8 (add)", best_ns([&] { store_old<8>(c.data(), v8, 1024, 8); },
                                                   [&] { store_new<8>(c.data(), v8, 1024, 8); }, 500));
    line("gconv store, 1024 tiles T=8, n=6 (add)", best_ns([&] { store_old<8>(c.data(), v8, 1024, 6); },
                                                   [&] { store_new<8>(c.data(), v8, 1024, 6); }, 500));
  }
  return c[17] == 12345.f;  // keeps the results live
}
