// CPU kernels of pycnn::dwconv_* (NHWC). Not a normal header: cpu/isa_kernels.h compiles it once per
// variant (namespaces pycnn::dw_base, dw_avx2, dw_avx512), and dwconv.cpp calls the one that runs through
// its table of entry points (`kernels` at the end, cpu/dwconv_entries.h).
// madd and the vector types (Vec, vload, vstore) come from cpu/isa_prelude.h.
//
// Two paths compute conv(x) for a pixel:
// - the register-blocked path (conv_pixels) when k is 3, 5 or 7, the column stride 1 or 2 and the column
//   dilation 1: P output pixels of one row times one vector of channels at a time, each input vector loaded
//   once per kernel row and used for every (pixel, tap) pair it belongs to, the accumulators and the kernel
//   row's weights in registers. Every output column goes through it: the blocks at the row's borders
//   (a compiled variant) skip the columns outside the input;
// - the generic path (conv_point) for everything else (the channels after the last full vector, other
//   geometries): one pixel at a time over the valid taps.


// SiLU through the vectorizable exp (kernel_utils.h).
using cpu::cpu_act;
using cpu::cpu_act_backward;

// Vectors of channels (cpu/isa_prelude.h): 8 floats or 4 doubles (16 and 8 in avx512), loaded and stored
// through vload_as / vstore_as (half and bfloat16 widened to float).
template <typename acc> constexpr int64_t kLanes = Vec<acc>::lanes;

// Output pixels per register block of the fast path: P accumulators + k weights + 1 input vector stay
// within the 16 vector registers of AVX2.
template <int K> constexpr int pixel_block() { return K <= 3 ? 8 : (K == 5 ? 6 : 4); }

// Valid kernel columns [lo[ow], hi[ow]) per output column, computed once per call (no divisions in the
// hot loops).
struct ColumnTaps {
  std::vector<int> lo, hi;
};

// Taps t in [lo, hi) with 0 <= o * s - p + t * d < size (the taps of output index o inside the input).
inline void tap_range(int64_t o, int s, int p, int d, int k, int64_t size, int& lo, int& hi) {
  const int64_t base = o * s - p;
  if (base > size - 1) {
    lo = hi = 0;
    return;
  }
  lo = base >= 0 ? 0 : static_cast<int>((-base + d - 1) / d);
  hi = static_cast<int>(std::min<int64_t>(k, (size - 1 - base) / d + 1));
  if (hi < lo) hi = lo;
}

// Output row q = n * OH + oh: its image n, its row oh and its kernel rows inside the input, [ilo, ihi).
struct OutputRow {
  int64_t n, oh;
  int ilo, ihi;
};

inline OutputRow output_row(const DwConvGeometry& g, int64_t q) {
  OutputRow r{q / g.oh, q % g.oh, 0, 0};
  tap_range(r.oh, g.sh, g.ph, g.dh, g.k, g.h, r.ilo, r.ihi);
  return r;
}

inline ColumnTaps column_taps(const DwConvGeometry& g) {
  ColumnTaps t;
  t.lo.resize(g.ow);
  t.hi.resize(g.ow);
  for (int64_t ow = 0; ow < g.ow; ++ow) tap_range(ow, g.sw, g.pw, g.dw, g.k, g.w, t.lo[ow], t.hi[ow]);
  return t;
}

// Whether the register-blocked paths are compiled for this geometry: k 3/5/7, column stride 1 or 2, column
// dilation 1.
inline bool fast_geometry(const DwConvGeometry& g) {
  return (g.k == 3 || g.k == 5 || g.k == 7) && g.dw == 1 && (g.sw == 1 || g.sw == 2);
}

// Channels [0, fast_channels) go through the register-blocked paths: whole vectors, for the geometries
// they are compiled for; 0 where they do not apply.
template <typename acc>
inline int64_t fast_channels(const DwConvGeometry& g) {
  return fast_geometry(g) ? g.c / kLanes<acc> * kLanes<acc> : 0;
}

// Channels [0, conv_channels) go through conv_rows's register blocks: fast_channels, and in avx512 the
// channels after the last whole vector too (one masked vector); the rest through conv_point.
template <typename acc>
inline int64_t conv_channels(const DwConvGeometry& g) {
  if constexpr (kMaskedTails) return fast_geometry(g) ? g.c : 0;
  return fast_channels<acc>(g);
}

// backward_weight's register-blocked part of a row: output columns [begin, end) have every kernel column
// inside the input, and channels [0, channels) are fast_channels. Empty (channels == 0) where it does not apply.
struct FastSpan {
  int64_t begin = 0, end = 0, channels = 0;
};

template <typename acc>
inline FastSpan fast_span(const DwConvGeometry& g) {
  FastSpan f;
  if (fast_channels<acc>(g) == 0 || g.w < g.k) return f;
  f.begin = std::min<int64_t>(g.ow, (g.pw + g.sw - 1) / g.sw);
  f.end = std::max<int64_t>(f.begin, std::min<int64_t>(g.ow, (g.w - g.k + g.pw) / g.sw + 1));
  f.channels = f.end > f.begin ? fast_channels<acc>(g) : 0;
  return f;
}

// Runs body(K, S) with the kernel size and column stride as compile-time constants, for a geometry
// fast_channels accepts.
template <typename Body>
inline void dispatch_fast(const DwConvGeometry& g, Body body) {
  using std::integral_constant;
  const bool s1 = g.sw == 1;
  switch (g.k) {
    case 3: return s1 ? body(integral_constant<int, 3>{}, integral_constant<int, 1>{})
                      : body(integral_constant<int, 3>{}, integral_constant<int, 2>{});
    case 5: return s1 ? body(integral_constant<int, 5>{}, integral_constant<int, 1>{})
                      : body(integral_constant<int, 5>{}, integral_constant<int, 2>{});
    default: return s1 ? body(integral_constant<int, 7>{}, integral_constant<int, 1>{})
                       : body(integral_constant<int, 7>{}, integral_constant<int, 2>{});
  }
}

// u[p] = conv(x) for P consecutive output pixels of one row, channels c0 .. c0 + kLanes, over kernel rows
// [ilo, ihi): the first pixel's taps start at column `first` of input rows rows[i] (C values per column).
// Edge: only the block's columns m in [m_lo, m_hi) are inside the input (the row's border blocks and its
// last block, which may reach past the row; its pixels past the row are not stored).
template <int K, int S, int P, bool Edge, typename in_t, typename acc>
inline void conv_pixels(const in_t* const* rows, int64_t first, int m_lo, int m_hi, const acc* wt, int64_t C,
                        int ilo, int ihi, int64_t c0, int n, typename Vec<acc>::type* __restrict__ u) {
  constexpr int M = S * (P - 1) + K;  // input columns the P pixels read
  typename Vec<acc>::type s[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) s[p] = typename Vec<acc>::type{};
  for (int i = ilo; i < ihi; ++i) {
    const acc* wr = wt + int64_t(i) * K * C + c0;
    typename Vec<acc>::type wv[K];
#pragma GCC unroll 7
    for (int j = 0; j < K; ++j) wv[j] = vload_n(wr + j * C, n);
    // One pointer stepped column by column (a register add per load), not M offsets from the row start.
    const in_t* xp = rows[i] + (first * C + c0);
#pragma GCC unroll 32
    for (int m = 0; m < M; ++m, xp += C) {
      asm("" : "+r"(xp));
      if (Edge && (m < m_lo || m >= m_hi)) continue;
      auto xv = vload_as<acc>(xp, n);
      in_register(xv);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const int j = m - S * p;
        if (j >= 0 && j < K) s[p] += xv * wv[j];
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) u[p] = s[p];
}

// u[t] = sum over the valid taps of x * w for channels c0 .. c0 + len of output (oh, ow) of one image.
template <bool Full, int64_t CB, typename in_t, typename acc>
inline void conv_point(const DwConvGeometry& g, const in_t* xn, const acc* wt, int64_t oh, int64_t ow, int ilo,
                       int ihi, int jlo, int jhi, int64_t c0, int64_t cn, acc* __restrict__ u) {
  const int64_t len = Full ? CB : cn;
  for (int64_t t = 0; t < len; ++t) u[t] = acc(0);
  for (int i = ilo; i < ihi; ++i) {
    const int64_t ih = oh * g.sh - g.ph + int64_t(i) * g.dh;
    for (int j = jlo; j < jhi; ++j) {
      const int64_t iw = ow * g.sw - g.pw + int64_t(j) * g.dw;
      const in_t* __restrict__ xp = xn + (ih * g.w + iw) * g.c + c0;
      const acc* __restrict__ wp = wt + (int64_t(i) * g.k + j) * g.c + c0;
      for (int64_t t = 0; t < len; ++t) u[t] = madd(static_cast<acc>(xp[t]), wp[t], u[t]);
    }
  }
}

// Visits (c0, cn, full) blocks of kLanes channels in [begin, channels), full ones first.
template <typename acc, typename Fn>
inline void for_channel_blocks(int64_t begin, int64_t channels, Fn fn) {
  constexpr int64_t CB = kLanes<acc>;
  int64_t c0 = begin;
  for (; c0 + CB <= channels; c0 += CB) fn(c0, CB, std::true_type{});
  if (c0 < channels) fn(c0, channels - c0, std::false_type{});
}

// What conv_rows calls with each row: fn(context, q, u). A plain function pointer, so conv_rows (the fast
// path's unrolled register blocks) is compiled once per input type, not once more per epilogue and
// activation that uses it; one indirect call per output row costs nothing next to the row.
template <typename acc>
struct RowFn {
  void* context;
  void (*fn)(void*, int64_t, acc*);
  template <typename F>
  static RowFn of(F& f) {
    return {&f, [](void* c, int64_t q, acc* u) { (*static_cast<F*>(c))(q, u); }};
  }
};

// For every output row q in [q0, q1) (q = n * OH + oh): u = conv(x) of the row, [OW][C] in the
// accumulation type, at u0 + (q - q0) * u_stride (u_stride 0: one buffer for every row), through the fast
// path where it applies; then row(q, u). Computing a whole row before its epilogue keeps the epilogue a
// plain loop over channels that the compiler vectorizes (the activations' selects compiled to branches).
template <typename in_t, typename acc>
__attribute__((noinline)) void conv_rows(const DwConvGeometry& g, const in_t* x, const acc* wt,
                                         const ColumnTaps& cols, int64_t q0, int64_t q1, acc* u0, int64_t u_stride,
                                         RowFn<acc> row_fn) {
  auto row = [&](int64_t q, acc* u) { row_fn.fn(row_fn.context, q, u); };
  constexpr int64_t L = kLanes<acc>;
  const int64_t fast = conv_channels<acc>(g), vectors = (fast + L - 1) / L;
  // fast_row(n, oh, ilo, ihi, u) computes channels [0, fast) of the row.
  auto each_row = [&](auto fast_row) {
    for (int64_t q = q0; q < q1; ++q) {
      acc* u = u0 + (q - q0) * u_stride;
      const auto [n, oh, ilo, ihi] = output_row(g, q);
      fast_row(n, oh, ilo, ihi, u);
      const in_t* xn = x + n * g.h * g.w * g.c;
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        for_channel_blocks<acc>(fast, g.c, [&](int64_t c0, int64_t cn, auto full) {
          conv_point<decltype(full)::value, L>(g, xn, wt, oh, ow, ilo, ihi, cols.lo[ow], cols.hi[ow], c0, cn,
                                               u + ow * g.c + c0);
        });
      }
      row(q, u);
    }
  };
  if (fast == 0) return each_row([](auto...) {});
  dispatch_fast(g, [&](auto K_, auto S_) {
    constexpr int K = decltype(K_)::value, S = decltype(S_)::value, P = pixel_block<K>();
    constexpr int span = S * (P - 1) + K;  // input columns of a block
    each_row([&](int64_t n, int64_t oh, int ilo, int ihi, acc* u) {
      const in_t* rows[kDwConvMaxKernel];
      for (int i = ilo; i < ihi; ++i) rows[i] = x + (n * g.h + oh * g.sh - g.ph + int64_t(i) * g.dh) * g.w * g.c;
      // The input rows that the next output row reads and this one does not, prefetched into L2 (L1 holds
      // only a few rows) a slice per block: they arrive while this row computes (with the hardware
      // prefetcher alone, the loads of each new row waited on memory: 0.6x oneDNN at batch 8, 0.9x at
      // batch 1 where the input stays in cache).
      const char* ahead[kDwConvMaxKernel];
      int n_ahead = 0;
      if (const int64_t q_next = n * g.oh + oh + 1; q_next < g.n * g.oh) {
        const auto next = output_row(g, q_next);
        const int64_t last = next.n == n ? oh * g.sh - g.ph + int64_t(ihi - 1) * g.dh : -1;
        for (int i = next.ilo; i < next.ihi; ++i) {
          const int64_t ih = next.oh * g.sh - g.ph + int64_t(i) * g.dh;
          if (ih > last) ahead[n_ahead++] = reinterpret_cast<const char*>(x + (next.n * g.h + ih) * g.w * g.c);
        }
      }
      const int64_t blocks = (g.ow + P - 1) / P, row_bytes = g.w * g.c * int64_t(sizeof(in_t));
      for (int64_t b = 0; b < blocks; ++b) {
        // This block's slice of the rows ahead, spread over its vectors of channels (a burst of prefetches
        // stalls once the misses in flight fill the buffers).
        int64_t next = b * row_bytes / blocks / 64 * 64;
        const int64_t to = (b + 1) * row_bytes / blocks, per_vector = ((to - next) / vectors + 63) / 64 * 64;
        const int64_t ow0 = b * P, first = ow0 * S - g.pw, valid = std::min<int64_t>(P, g.ow - ow0);
        const int m_lo = static_cast<int>(std::clamp<int64_t>(-first, 0, span));
        const int m_hi = static_cast<int>(std::clamp<int64_t>(g.w - first, m_lo, span));
        const bool edge = m_lo > 0 || m_hi < span;
        for (int64_t c0 = 0; c0 < fast; c0 += L) {
          for (const int64_t end = std::min(to, next + per_vector); next < end; next += 64) {
            for (int a = 0; a < n_ahead; ++a) __builtin_prefetch(ahead[a] + next, 0, 2);
          }
          const int nv = static_cast<int>(std::min<int64_t>(L, fast - c0));  // < L: avx512's masked tail
          typename Vec<acc>::type v[P];
          if (edge) conv_pixels<K, S, P, true>(rows, first, m_lo, m_hi, wt, g.c, ilo, ihi, c0, nv, v);
          else conv_pixels<K, S, P, false>(rows, first, m_lo, m_hi, wt, g.c, ilo, ihi, c0, nv, v);
          for (int p = 0; p < P; ++p)
            if (p < valid) vstore_n(u + (ow0 + p) * g.c + c0, v[p], nv);
        }
      }
    });
  });
}

// Output rows per parallel chunk: at least ~16K multiply-adds.
inline int64_t row_grain(const DwConvGeometry& g, int64_t width) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(width * g.c * g.k * g.k, 1));
}

// y = act(u [* scale + bias] [+ residual]) over `pixels` pixels of C channels; u is overwritten.
template <Act A, typename acc, typename out_t>
void epilogue_row(int64_t pixels, int64_t C, acc* __restrict__ u, const acc* __restrict__ sc,
                  const acc* __restrict__ bi, const out_t* __restrict__ r, out_t* __restrict__ y) {
  if (sc != nullptr) {
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = 0; c < C; ++c) u[p * C + c] = madd(u[p * C + c], sc[c], bi[c]);
  }
  if (r != nullptr) {
    for (int64_t i = 0; i < pixels * C; ++i) u[i] += static_cast<acc>(r[i]);
  }
  for (int64_t i = 0; i < pixels * C; ++i) y[i] = static_cast<out_t>(cpu_act<A>(u[i]));
}

// y = act(conv(x) [* scale + bias] [+ residual]); x, residual, y NHWC; wt [k*k][C]; scale, bias [C], both
// given or both null (then y = act(conv(x) [+ residual])).
template <typename in_t, typename out_t, typename acc, Act A>
void forward(const DwConvGeometry& g, const in_t* x, const acc* wt, const acc* sc, const acc* bi, const out_t* r,
             out_t* y) {
  const ColumnTaps cols = column_taps(g);
  const int64_t row_size = g.ow * g.c;
  // Without an epilogue, conv(x) goes straight into y (the conv of a training step); otherwise a row buffer.
  constexpr bool same_type = std::is_same_v<out_t, acc>;
  const bool direct = same_type && A == Act::None && sc == nullptr && r == nullptr;
  at::parallel_for(0, g.n * g.oh, row_grain(g, g.ow), [&](int64_t q0, int64_t q1) {
    if constexpr (same_type) {
      if (direct) {
        auto nothing = [](int64_t, acc*) {};
        conv_rows(g, x, wt, cols, q0, q1, y + q0 * row_size, row_size, RowFn<acc>::of(nothing));
        return;
      }
    }
    std::vector<acc> u(row_size);
    auto epilogue = [&](int64_t q, acc* uq) {
      epilogue_row<A>(g.ow, g.c, uq, sc, bi, r != nullptr ? r + q * row_size : nullptr, y + q * row_size);
    };
    conv_rows(g, x, wt, cols, q0, q1, u.data(), 0, RowFn<acc>::of(epilogue));
  });
}

// dz = dy * act'(u * scale + bias [+ r]) to dr (if given), dscale += dz * u, dbias += dz per channel,
// gu = dz * scale, over `pixels` pixels of C channels; u is overwritten.
template <Act A, typename acc, typename scalar_t>
void epilogue_backward_row(int64_t pixels, int64_t C, acc* __restrict__ u, const acc* __restrict__ sc,
                           const acc* __restrict__ bi, const scalar_t* __restrict__ r,
                           const scalar_t* __restrict__ dy, scalar_t* __restrict__ dr, acc* __restrict__ dsc,
                           acc* __restrict__ dbi, acc* __restrict__ gu) {
  for (int64_t p = 0; p < pixels; ++p) {
    acc* __restrict__ up = u + p * C;
    const scalar_t* __restrict__ dyp = dy + p * C;
    acc* __restrict__ gup = gu + p * C;
    for (int64_t c = 0; c < C; ++c) {
      acc z = madd(up[c], sc[c], bi[c]);
      if (r != nullptr) z += static_cast<acc>(r[p * C + c]);
      const acc dz = cpu_act_backward<A>(static_cast<acc>(dyp[c]), z);
      dsc[c] = madd(dz, up[c], dsc[c]);
      dbi[c] += dz;
      gup[c] = dz * sc[c];
      up[c] = dz;
    }
  }
  if (dr != nullptr) {
    for (int64_t i = 0; i < pixels * C; ++i) dr[i] = static_cast<scalar_t>(u[i]);
  }
}

// Backward of the epilogue, over output rows in blocks (each block its own partial sums), where scale,
// bias, residual or act make it more than the identity: u = conv(x) recomputed (cheaper than saving it:
// memory-bound), then epilogue_backward_row, with the partial sums of dscale and dbias in the block's
// partials rows k*k and k*k + 1.
template <typename scalar_t, typename acc, Act A>
void backward_epilogue(const DwConvGeometry& g, const scalar_t* x, const scalar_t* dy, const acc* wt, const acc* sc,
                       const acc* bi, const scalar_t* r, acc* gu, scalar_t* dr, acc* partials,
                       int64_t rows_per_block, int64_t blocks) {
  const int64_t rows = g.n * g.oh, kk = int64_t(g.k) * g.k, stride = (kk + 2) * g.c, row_size = g.ow * g.c;
  const ColumnTaps cols = column_taps(g);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<acc> u(row_size);
    for (int64_t b = b0; b < b1; ++b) {
      acc* dsc = partials + b * stride + kk * g.c;
      acc* dbi = dsc + g.c;
      std::fill(dsc, dsc + 2 * g.c, acc(0));
      auto epilogue = [&](int64_t q, acc* uq) {
        const int64_t off = q * row_size;
        epilogue_backward_row<A>(g.ow, g.c, uq, sc, bi, r != nullptr ? r + off : nullptr, dy + off,
                                 dr != nullptr ? dr + off : nullptr, dsc, dbi, gu + off);
      };
      conv_rows(g, x, wt, cols, b * rows_per_block, std::min(rows, (b + 1) * rows_per_block), u.data(), 0,
                RowFn<acc>::of(epilogue));
    }
  });
}

// dweight[i][j][c] = sum over output pixels of gu * x at tap (i, j), partial sums per block of output
// rows into the block's partials rows [0, k*k); with sum_gu also sum gu into row k*k + 1. For the fast
// path's columns the k accumulators of a kernel row stay in registers across the block's pixels.
template <typename scalar_t, typename acc, typename gu_t>
void backward_weight(const DwConvGeometry& g, const scalar_t* x, const gu_t* gu, acc* partials, bool sum_gu,
                     int64_t rows_per_block, int64_t blocks) {
  constexpr int64_t L = kLanes<acc>;
  const int64_t rows = g.n * g.oh, kk = int64_t(g.k) * g.k, stride = (kk + 2) * g.c;
  const ColumnTaps cols = column_taps(g);
  const FastSpan fast = fast_span<acc>(g);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      acc* dw = partials + b * stride;
      std::fill(dw, dw + kk * g.c, acc(0));
      acc* dbi = dw + (kk + 1) * g.c;
      if (sum_gu) std::fill(dw + kk * g.c, dw + stride, acc(0));  // rows dscale (left 0) and dbias
      const int64_t qa = b * rows_per_block, qb = std::min(rows, (b + 1) * rows_per_block);
      // Generic pixels: border columns, and the channels after the fast path's vectors.
      for (int64_t q = qa; q < qb; ++q) {
        const auto [n, oh, ilo, ihi] = output_row(g, q);
        const scalar_t* xn = x + n * g.h * g.w * g.c;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          const bool interior = ow >= fast.begin && ow < fast.end;
          const int64_t off = (q * g.ow + ow) * g.c;
          if (sum_gu) {
            for (int64_t c = 0; c < g.c; ++c) dbi[c] += static_cast<acc>(gu[off + c]);
          }
          const int64_t cbeg = interior ? fast.channels : 0;
          for (int i = ilo; i < ihi; ++i) {
            const int64_t ih = oh * g.sh - g.ph + int64_t(i) * g.dh;
            for (int j = cols.lo[ow]; j < cols.hi[ow]; ++j) {
              const int64_t iw = ow * g.sw - g.pw + int64_t(j) * g.dw;
              const scalar_t* __restrict__ xp = xn + (ih * g.w + iw) * g.c;
              const gu_t* __restrict__ gp = gu + off;
              acc* __restrict__ dwp = dw + (int64_t(i) * g.k + j) * g.c;
              for (int64_t c = cbeg; c < g.c; ++c)
                dwp[c] = madd(static_cast<acc>(gp[c]), static_cast<acc>(xp[c]), dwp[c]);
            }
          }
        }
      }
      if (fast.channels == 0) continue;
      dispatch_fast(g, [&](auto K_, auto S_) {
        constexpr int K = decltype(K_)::value, S = decltype(S_)::value;
        for (int64_t c0 = 0; c0 < fast.channels; c0 += L) {
          for (int i = 0; i < K; ++i) {
            typename Vec<acc>::type s[K];
#pragma GCC unroll 7
            for (int j = 0; j < K; ++j) s[j] = typename Vec<acc>::type{};
            for (int64_t q = qa; q < qb; ++q) {
              const int64_t n = q / g.oh, oh = q % g.oh;
              const int64_t ih = oh * g.sh - g.ph + int64_t(i) * g.dh;
              if (ih < 0 || ih >= g.h) continue;
              const scalar_t* xr = x + ((n * g.h + ih) * g.w - g.pw) * g.c + c0;
              const gu_t* gr = gu + q * g.ow * g.c + c0;
              for (int64_t ow = fast.begin; ow < fast.end; ++ow) {
                const auto gv = vload_as<acc>(gr + ow * g.c);
                const scalar_t* xp = xr + ow * S * g.c;
#pragma GCC unroll 7
                for (int j = 0; j < K; ++j) s[j] += gv * vload_as<acc>(xp + j * g.c);
              }
            }
            for (int j = 0; j < K; ++j) {
              acc* dwp = dw + (int64_t(i) * K + j) * g.c + c0;
              vstore(dwp, vload(dwp) + s[j]);
            }
          }
        }
      });
    }
  });
}

// Input columns per register block of the stride-2 dx: P accumulators + k weights + 1 gradient vector.
template <int K> constexpr int transposed_block() { return K <= 5 ? 8 : 6; }

// u[p] = dx for P consecutive input columns iw0 + p of one input row (column stride 2, dilation 1),
// channels c0 .. c0 + kLanes: the sum over its (kernel row, output row) pairs t < ntaps (taps_i[t], gu row
// gu_rows[t]) of gu[ow] * w[i][j] for iw0 + p = 2 * ow - pw + j. With iw0 + pw even, the block reads gu
// columns ow0 + m, m < M, ow0 = (iw0 + pw - (K - 1)) / 2, and column m meets pixel p at tap
// j = p + K - 1 - 2 * m: like conv_pixels, each gu vector is loaded once per kernel row. Edge: only the
// columns m in [m_lo, m_hi) are inside gu.
template <int K, int P, bool Edge, typename gu_t, typename acc>
inline void transposed_pixels_s2(const gu_t* const* gu_rows, const int* taps_i, int ntaps, int64_t ow0, int m_lo,
                                 int m_hi, const acc* wt, int64_t C, int64_t c0,
                                 typename Vec<acc>::type* __restrict__ u) {
  constexpr int M = (P + K - 2) / 2 + 1;
  typename Vec<acc>::type s[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) s[p] = typename Vec<acc>::type{};
  for (int t = 0; t < ntaps; ++t) {
    const acc* wr = wt + int64_t(taps_i[t]) * K * C + c0;
    typename Vec<acc>::type wv[K];
#pragma GCC unroll 7
    for (int j = 0; j < K; ++j) wv[j] = vload(wr + j * C);
    const gu_t* gp = gu_rows[t] + (ow0 * C + c0);
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m, gp += C) {
      asm("" : "+r"(gp));
      if (Edge && (m < m_lo || m >= m_hi)) continue;
      auto gv = vload_as<acc>(gp);
      in_register(gv);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const int j = p + K - 1 - 2 * m;
        if (j >= 0 && j < K) s[p] += gv * wv[j];
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) u[p] = s[p];
}

// dx = the transposed depthwise convolution of gu with w: register-blocked (transposed_pixels_s2) for
// column stride 2, dilation 1 and k 3/5/7 over the whole vectors of channels; generic (any stride and
// dilation) for the rest. With stride and dilation 1, dwconv.cpp computes it instead as forward() over gu
// with the flipped kernel.
template <typename scalar_t, typename acc, typename gu_t>
void backward_grad_in(const DwConvGeometry& g, const gu_t* gu, const acc* wt, scalar_t* dx) {
  constexpr int64_t CB = kLanes<acc>;
  const int64_t rows = g.n * g.h;
  const int64_t fast = g.sw == 2 ? fast_channels<acc>(g) : 0;
  // Per input column iw: the kernel columns j whose output column ow = (iw + pw - j * dw) / sw is exact
  // and in range, as (j, ow) pairs; computed once (no divisions in the hot loop).
  std::vector<int> col_n(g.w, 0), col_j(g.w * g.k);
  std::vector<int64_t> col_ow(g.w * g.k);
  for (int64_t iw = 0; iw < g.w; ++iw) {
    for (int j = 0; j < g.k; ++j) {
      const int64_t num = iw + g.pw - int64_t(j) * g.dw;
      if (num < 0 || num % g.sw != 0 || num / g.sw >= g.ow) continue;
      col_j[iw * g.k + col_n[iw]] = j;
      col_ow[iw * g.k + col_n[iw]++] = num / g.sw;
    }
  }
  at::parallel_for(0, rows, row_grain(g, g.w), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / g.h, ih = q % g.h;
      // Kernel rows i with an output row oh = (ih + ph - i * dh) / sh (exact division, in range).
      int rows_i[kDwConvMaxKernel];
      int64_t rows_oh[kDwConvMaxKernel];
      int nrows = 0;
      for (int i = 0; i < g.k; ++i) {
        const int64_t num = ih + g.ph - int64_t(i) * g.dh;
        if (num < 0 || num % g.sh != 0 || num / g.sh >= g.oh) continue;
        rows_i[nrows] = i;
        rows_oh[nrows++] = num / g.sh;
      }
      const gu_t* gn = gu + n * g.oh * g.ow * g.c;
      if (fast > 0) {
        dispatch_fast(g, [&](auto K_, auto) {
          constexpr int K = decltype(K_)::value, P = transposed_block<K>(), M = (P + K - 2) / 2 + 1;
          const gu_t* gu_rows[kDwConvMaxKernel];
          for (int ri = 0; ri < nrows; ++ri) gu_rows[ri] = gn + rows_oh[ri] * g.ow * g.c;
          // Blocks start at input columns iw0 with iw0 + pw even; columns outside [0, W) are not stored.
          for (int64_t iw0 = -(g.pw % 2); iw0 < g.w; iw0 += P) {
            const int64_t ow0 = (iw0 + g.pw - (K - 1)) / 2;
            const int m_lo = static_cast<int>(std::clamp<int64_t>(-ow0, 0, M));
            const int m_hi = static_cast<int>(std::clamp<int64_t>(g.ow - ow0, m_lo, M));
            const bool edge = m_lo > 0 || m_hi < M;
            for (int64_t c0 = 0; c0 < fast; c0 += CB) {
              typename Vec<acc>::type v[P];
              if (edge) transposed_pixels_s2<K, P, true>(gu_rows, rows_i, nrows, ow0, m_lo, m_hi, wt, g.c, c0, v);
              else transposed_pixels_s2<K, P, false>(gu_rows, rows_i, nrows, ow0, m_lo, m_hi, wt, g.c, c0, v);
              for (int p = 0; p < P; ++p)
                if (iw0 + p >= 0 && iw0 + p < g.w) vstore_as<acc>(dx + (q * g.w + iw0 + p) * g.c + c0, v[p]);
            }
          }
        });
      }
      for (int64_t iw = 0; iw < g.w; ++iw) {
        for_channel_blocks<acc>(fast, g.c, [&](int64_t c0, int64_t cn, auto full) {
          constexpr bool Full = decltype(full)::value;
          const int64_t len = Full ? CB : cn;
          acc a[CB];
          for (int64_t t = 0; t < len; ++t) a[t] = acc(0);
          for (int ri = 0; ri < nrows; ++ri) {
            const int i = rows_i[ri];
            const int64_t oh = rows_oh[ri];
            for (int tj = 0; tj < col_n[iw]; ++tj) {
              const int j = col_j[iw * g.k + tj];
              const gu_t* __restrict__ gp = gn + (oh * g.ow + col_ow[iw * g.k + tj]) * g.c + c0;
              const acc* __restrict__ wp = wt + (int64_t(i) * g.k + j) * g.c + c0;
              for (int64_t t = 0; t < len; ++t) a[t] = madd(static_cast<acc>(gp[t]), wp[t], a[t]);
            }
          }
          scalar_t* __restrict__ dxs = dx + (q * g.w + iw) * g.c + c0;
          for (int64_t t = 0; t < len; ++t) dxs[t] = static_cast<scalar_t>(a[t]);
        });
      }
    }
  });
}

// ------------------------------------------------------------------------ entry points ----

void run_forward(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& wt, const Tensor& sc,
                 const Tensor& bi, const Tensor& r, const Tensor& y) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(y.scalar_type(), "dwconv_forward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    const acc* scp = sc.defined() ? sc.const_data_ptr<acc>() : nullptr;
    const acc* bip = bi.defined() ? bi.const_data_ptr<acc>() : nullptr;
    const scalar_t* rp = r.defined() ? r.const_data_ptr<scalar_t>() : nullptr;
    if constexpr (!std::is_same_v<scalar_t, acc>) {
      if (x.scalar_type() != y.scalar_type()) {  // dx from the float gradient of a half-precision step
        TORCH_INTERNAL_ASSERT(act == Act::None && scp == nullptr && rp == nullptr);
        forward<acc, scalar_t, acc, Act::None>(g, x.const_data_ptr<acc>(), wt.const_data_ptr<acc>(), nullptr,
                                               nullptr, nullptr, y.data_ptr<scalar_t>());
        return;
      }
    }
    cpu::dispatch_act(act, [&](auto A) {
      forward<scalar_t, scalar_t, acc, decltype(A)::value>(g, x.const_data_ptr<scalar_t>(), wt.const_data_ptr<acc>(),
                                                           scp, bip, rp, y.data_ptr<scalar_t>());
    });
  });
}

void run_backward(const DwConvGeometry& g, Act act, bool identity, const Tensor& x, const Tensor& dy,
                  const Tensor& r, const Tensor& wt, const Tensor& flipped, const Tensor& sc, const Tensor& bi,
                  const Tensor& dx, const Tensor& dr, const Tensor& gu, const Tensor& partials,
                  int64_t rows_per_block, int64_t blocks) {
  const int64_t rows = g.n * g.oh;
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(x.scalar_type(), "dwconv_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    auto grad_in = [&](const auto* grad_u) {
      using gu_t = std::remove_cv_t<std::remove_pointer_t<decltype(grad_u)>>;
      if (dx.numel() == 0) return;
      if (flipped.defined()) {  // stride and dilation 1: the forward over the gradient, flipped kernel
        DwConvGeometry t = g;
        std::swap(t.h, t.oh);
        std::swap(t.w, t.ow);
        t.ph = g.k - 1 - g.ph;
        t.pw = g.k - 1 - g.pw;
        forward<gu_t, scalar_t, acc, Act::None>(t, grad_u, flipped.const_data_ptr<acc>(), nullptr, nullptr, nullptr,
                                                dx.data_ptr<scalar_t>());
      } else {
        backward_grad_in<scalar_t, acc, gu_t>(g, grad_u, wt.const_data_ptr<acc>(), dx.data_ptr<scalar_t>());
      }
    };
    if (identity) {
      const scalar_t* grad_u = dy.const_data_ptr<scalar_t>();
      if (rows > 0) {
        backward_weight<scalar_t, acc, scalar_t>(g, x.const_data_ptr<scalar_t>(), grad_u, partials.data_ptr<acc>(),
                                                 true, rows_per_block, blocks);
      }
      grad_in(grad_u);
    } else {
      if (rows > 0) {
        cpu::dispatch_act(act, [&](auto A) {
          backward_epilogue<scalar_t, acc, decltype(A)::value>(
              g, x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), wt.const_data_ptr<acc>(),
              sc.const_data_ptr<acc>(), bi.const_data_ptr<acc>(), r.defined() ? r.const_data_ptr<scalar_t>() : nullptr,
              gu.data_ptr<acc>(), dr.defined() ? dr.data_ptr<scalar_t>() : nullptr, partials.data_ptr<acc>(),
              rows_per_block, blocks);
        });
        backward_weight<scalar_t, acc, acc>(g, x.const_data_ptr<scalar_t>(), gu.const_data_ptr<acc>(),
                                            partials.data_ptr<acc>(), false, rows_per_block, blocks);
      }
      grad_in(gu.const_data_ptr<acc>());
    }
  });
}

extern const DwConvKernels kernels = {&run_forward, &run_backward};
