// CPU kernels of pycnn::dwconv_* (NHWC). Not a normal header: csrc/cpu/dwconv.cpp compiles it twice
// through cpu/isa_kernels.h, in namespace pycnn::dw_base (baseline ISA) and pycnn::dw_avx2 (AVX2+FMA),
// and picks one at run time (PYCNN_CPU_KERNEL). All includes are done by dwconv.cpp before.
// PYCNN_CPU_FMA selects fused multiply-add (std::fma) over a separate multiply and add.
//
// Loops run over a block of CB channels with CB a compile-time constant (the tail block has a run-time
// length), so the compiler keeps a block's accumulators in vector registers across the k * k taps.

#ifdef PYCNN_CPU_FMA
template <typename acc> inline acc madd(acc a, acc b, acc c) { return std::fma(a, b, c); }
#else
template <typename acc> inline acc madd(acc a, acc b, acc c) { return a * b + c; }
#endif

// SiLU through the vectorizable exp (kernel_utils.h).
using cpu::cpu_act;
using cpu::cpu_act_derivative;

// Valid kernel columns [lo[ow], hi[ow]) per output column, computed once per call (no divisions in the
// hot loops).
struct ColumnTaps {
  std::vector<int> lo, hi;
};

inline ColumnTaps column_taps(const DwConvGeometry& g);

// Channels per register block: 32 floats (4 AVX registers) or 16 doubles.
template <typename acc> constexpr int64_t block_channels() { return 64 / sizeof(acc) * 4 / 2; }

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

inline ColumnTaps column_taps(const DwConvGeometry& g) {
  ColumnTaps t;
  t.lo.resize(g.ow);
  t.hi.resize(g.ow);
  for (int64_t ow = 0; ow < g.ow; ++ow) tap_range(ow, g.sw, g.pw, g.dw, g.k, g.w, t.lo[ow], t.hi[ow]);
  return t;
}

// u[t] = sum over the valid taps of x * w for channels c0 .. c0 + len of output (oh, ow) of one image.
template <bool Full, int64_t CB, typename scalar_t, typename acc>
inline void conv_point(const DwConvGeometry& g, const scalar_t* xn, const acc* wt, int64_t oh, int64_t ow, int ilo,
                       int ihi, int jlo, int jhi, int64_t c0, int64_t cn, acc* __restrict__ u) {
  const int64_t len = Full ? CB : cn;
  for (int64_t t = 0; t < len; ++t) u[t] = acc(0);
  for (int i = ilo; i < ihi; ++i) {
    const int64_t ih = oh * g.sh - g.ph + int64_t(i) * g.dh;
    for (int j = jlo; j < jhi; ++j) {
      const int64_t iw = ow * g.sw - g.pw + int64_t(j) * g.dw;
      const scalar_t* __restrict__ xp = xn + (ih * g.w + iw) * g.c + c0;
      const acc* __restrict__ wp = wt + (int64_t(i) * g.k + j) * g.c + c0;
      for (int64_t t = 0; t < len; ++t) u[t] = madd(static_cast<acc>(xp[t]), wp[t], u[t]);
    }
  }
}

// Visits (c0, cn, full) channel blocks, full ones first.
template <typename acc, typename Fn>
inline void for_channel_blocks(int64_t channels, Fn fn) {
  constexpr int64_t CB = block_channels<acc>();
  int64_t c0 = 0;
  for (; c0 + CB <= channels; c0 += CB) fn(c0, CB, std::true_type{});
  if (c0 < channels) fn(c0, channels - c0, std::false_type{});
}

// y = act(conv(x) * scale + bias [+ residual]); x, residual, y NHWC; wt [k*k][C]; scale, bias [C].
template <typename scalar_t, typename acc, Act A>
void forward(const DwConvGeometry& g, const scalar_t* x, const acc* wt, const acc* sc, const acc* bi,
             const scalar_t* r, scalar_t* y) {
  constexpr int64_t CB = block_channels<acc>();
  const int64_t rows = g.n * g.oh;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.ow * g.c * g.k * g.k, 1));
  const ColumnTaps cols = column_taps(g);
  at::parallel_for(0, rows, grain, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / g.oh, oh = q % g.oh;
      int ilo, ihi;
      tap_range(oh, g.sh, g.ph, g.dh, g.k, g.h, ilo, ihi);
      const scalar_t* xn = x + n * g.h * g.w * g.c;
      const int64_t out_row = q * g.ow * g.c;
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        for_channel_blocks<acc>(g.c, [&](int64_t c0, int64_t cn, auto full) {
          acc u[CB];
          conv_point<decltype(full)::value, CB>(g, xn, wt, oh, ow, ilo, ihi, cols.lo[ow], cols.hi[ow], c0, cn, u);
          const int64_t len = decltype(full)::value ? CB : cn;
          const int64_t off = out_row + ow * g.c + c0;
          scalar_t* __restrict__ ys = y + off;
          const acc* __restrict__ scs = sc + c0;
          const acc* __restrict__ bis = bi + c0;
          if (r != nullptr) {
            const scalar_t* __restrict__ rs = r + off;
            for (int64_t t = 0; t < len; ++t)
              ys[t] = static_cast<scalar_t>(cpu_act<A>(madd(u[t], scs[t], bis[t]) + static_cast<acc>(rs[t])));
          } else {
            for (int64_t t = 0; t < len; ++t) ys[t] = static_cast<scalar_t>(cpu_act<A>(madd(u[t], scs[t], bis[t])));
          }
        });
      }
    }
  });
}

// Backward, first pass over output rows (blocks of rows in parallel, each with its own partial sums):
// u recomputed, dz = dy * act'(u * scale + bias [+ r]), g = dz * scale (the gradient of u) written to gu,
// dz to dr; partial sums of dz * u (dscale), dz (dbias) and g * x per tap (dweight) into partials,
// laid out per block as [k*k + 2][C].
template <typename scalar_t, typename acc, Act A>
void backward_grad_out(const DwConvGeometry& g, const scalar_t* x, const scalar_t* dy, const acc* wt, const acc* sc,
                       const acc* bi, const scalar_t* r, acc* gu, scalar_t* dr, acc* partials, int64_t rows_per_block,
                       int64_t blocks) {
  constexpr int64_t CB = block_channels<acc>();
  const int64_t rows = g.n * g.oh, kk = int64_t(g.k) * g.k, stride = (kk + 2) * g.c;
  const ColumnTaps cols = column_taps(g);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      acc* dw = partials + b * stride;
      acc* dsc = dw + kk * g.c;
      acc* dbi = dsc + g.c;
      std::fill(dw, dw + stride, acc(0));
      const int64_t q_end = std::min(rows, (b + 1) * rows_per_block);
      for (int64_t q = b * rows_per_block; q < q_end; ++q) {
        const int64_t n = q / g.oh, oh = q % g.oh;
        int ilo, ihi;
        tap_range(oh, g.sh, g.ph, g.dh, g.k, g.h, ilo, ihi);
        const scalar_t* xn = x + n * g.h * g.w * g.c;
        const int64_t out_row = q * g.ow * g.c;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          for_channel_blocks<acc>(g.c, [&](int64_t c0, int64_t cn, auto full) {
            constexpr bool Full = decltype(full)::value;
            const int64_t len = Full ? CB : cn;
            acc u[CB], gv[CB];
            const int jlo = cols.lo[ow], jhi = cols.hi[ow];
            conv_point<Full, CB>(g, xn, wt, oh, ow, ilo, ihi, jlo, jhi, c0, cn, u);
            const int64_t off = out_row + ow * g.c + c0;
            const scalar_t* __restrict__ dys = dy + off;
            const scalar_t* __restrict__ rs = r != nullptr ? r + off : nullptr;
            const acc* __restrict__ scs = sc + c0;
            const acc* __restrict__ bis = bi + c0;
            acc* __restrict__ dscs = dsc + c0;
            acc* __restrict__ dbis = dbi + c0;
            acc* __restrict__ gus = gu + off;
            if (rs != nullptr) {
              scalar_t* __restrict__ drs = dr + off;
              for (int64_t t = 0; t < len; ++t) {
                const acc z = madd(u[t], scs[t], bis[t]) + static_cast<acc>(rs[t]);
                const acc dz = static_cast<acc>(dys[t]) * cpu_act_derivative<A>(z);
                drs[t] = static_cast<scalar_t>(dz);
                dscs[t] = madd(dz, u[t], dscs[t]);
                dbis[t] += dz;
                gv[t] = dz * scs[t];
                gus[t] = gv[t];
              }
            } else {
              for (int64_t t = 0; t < len; ++t) {
                const acc dz = static_cast<acc>(dys[t]) * cpu_act_derivative<A>(madd(u[t], scs[t], bis[t]));
                dscs[t] = madd(dz, u[t], dscs[t]);
                dbis[t] += dz;
                gv[t] = dz * scs[t];
                gus[t] = gv[t];
              }
            }
            for (int i = ilo; i < ihi; ++i) {
              const int64_t ih = oh * g.sh - g.ph + int64_t(i) * g.dh;
              for (int j = jlo; j < jhi; ++j) {
                const int64_t iw = ow * g.sw - g.pw + int64_t(j) * g.dw;
                const scalar_t* __restrict__ xp = xn + (ih * g.w + iw) * g.c + c0;
                acc* __restrict__ dwp = dw + (int64_t(i) * g.k + j) * g.c + c0;
                for (int64_t t = 0; t < len; ++t) dwp[t] = madd(gv[t], static_cast<acc>(xp[t]), dwp[t]);
              }
            }
          });
        }
      }
    }
  });
}

// Backward, second pass over input rows: dx = the transposed depthwise convolution of gu with w.
template <typename scalar_t, typename acc>
void backward_grad_in(const DwConvGeometry& g, const acc* gu, const acc* wt, scalar_t* dx) {
  constexpr int64_t CB = block_channels<acc>();
  const int64_t rows = g.n * g.h;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.w * g.c * g.k * g.k, 1));
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
  at::parallel_for(0, rows, grain, [&](int64_t q0, int64_t q1) {
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
      const acc* gn = gu + n * g.oh * g.ow * g.c;
      for (int64_t iw = 0; iw < g.w; ++iw) {
        for_channel_blocks<acc>(g.c, [&](int64_t c0, int64_t cn, auto full) {
          constexpr bool Full = decltype(full)::value;
          const int64_t len = Full ? CB : cn;
          acc a[CB];
          for (int64_t t = 0; t < len; ++t) a[t] = acc(0);
          for (int ri = 0; ri < nrows; ++ri) {
            const int i = rows_i[ri];
            const int64_t oh = rows_oh[ri];
            for (int tj = 0; tj < col_n[iw]; ++tj) {
              const int j = col_j[iw * g.k + tj];
              const acc* __restrict__ gp = gn + (oh * g.ow + col_ow[iw * g.k + tj]) * g.c + c0;
              const acc* __restrict__ wp = wt + (int64_t(i) * g.k + j) * g.c + c0;
              for (int64_t t = 0; t < len; ++t) a[t] = madd(gp[t], wp[t], a[t]);
            }
          }
          scalar_t* __restrict__ dxs = dx + (q * g.w + iw) * g.c + c0;
          for (int64_t t = 0; t < len; ++t) dxs[t] = static_cast<scalar_t>(a[t]);
        });
      }
    }
  });
}
