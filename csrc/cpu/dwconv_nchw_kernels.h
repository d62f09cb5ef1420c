// CPU kernels of pycnn::dwconv_* for NCHW-contiguous tensors. Not a normal header: cpu/isa_kernels.h
// compiles it once per variant (namespaces pycnn::dwn_base, dwn_avx2, dwn_avx512), and dwconv.cpp calls the
// one that runs through its table of entry points (`kernels` at the end, cpu/dwconv_entries.h). madd and
// Vec come from cpu/isa_prelude.h.
//
// Every (n, c) plane is an independent 2-D convolution. A plane is first copied (converted to the
// accumulation type) into zero-padded "phase planes": for strides sh x sw, sh * sw planes, phase (rho, phi)
// holding the padded input's rows sh * r + rho and columns sw * m + phi. All planes share one row pitch P,
// and the output is computed on the flattened index q = oh * P + ow (the columns ow >= OW of a row are
// computed and discarded). In that index every tap (i, j) of the kernel is a constant offset into one
// phase plane, so the convolution is out[q] = sum over taps of w * src_tap[q]: unit-stride loads whatever
// the stride and dilation, no border tests, and one loop that vectorizes along q with a block of B
// outputs in registers across all the taps (flat_conv). Narrow planes (7x7, 14x14) waste little: the
// discarded columns are only the (k - 1) * d / s extra ones per row. The margins of the phase planes are
// the same for every plane of a call: they are zeroed once, and only the input's entries are copied per
// plane. The epilogue (scale, bias, residual, activation) runs on chunks of rows of the result (~16 KB,
// in L1) packed to the output's pitch, so that it vectorizes over the chunk as a contiguous span of y.
//
// Backward per plane: dz, the gradient of conv(x) before the scale (dz = dy * act'(z); with no activation
// dz = dy and nothing is recomputed), is written into a zero-margined plane Dp of the same pitch. Then
//   grad_weight[i][j] = scale * sum dz * x(shifted)    (flat_dots: dot products of Dp with the phase planes)
//   grad_scale        = sum dz * u  (u = conv(x), recomputed when there is an activation; without one
//                       it is sum_ij w_ij * sum dz * x(shifted), from the dot products above)
//   grad_bias         = sum dz
//   grad_input        = the transposed convolution of dz with w * scale: per phase (a, b) of the input
//                       (rows ih + ph = sh * r + a, columns iw + pw = sw * m + b), a flat_conv over Dp with
//                       the taps i, j of that phase; the phases are then interleaved into grad_input.
// Channels run in parallel (a thread owns a channel's sums: no cross-thread reduction), images inside.


using cpu::cpu_act;
using cpu::cpu_act_backward;

// Vectors per register block of flat_conv (32 floats, 16 doubles).
constexpr int kConvVectors = 4;
template <typename acc> constexpr int flat_block() { return kConvVectors * Vec<acc>::lanes; }

template <typename acc>
struct Tap {
  const acc* src;
  acc w;
};

// out[q] = sum_t taps[t].w * taps[t].src[q0 + q] for q in [0, n) rounded up to a block (out and the sources
// have the slack); blocks of NV vectors.
template <int NV, typename acc>
inline void flat_conv_blocks(const Tap<acc>* taps, int nt, int64_t q0, int64_t n, acc* __restrict__ out) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes;
  for (int64_t q = 0; q < n; q += NV * L) {
    V a[NV];
    for (int v = 0; v < NV; ++v) a[v] = V{};
    for (int t = 0; t < nt; ++t) {
      const acc* s = taps[t].src + q0 + q;
      const V w = V{} + taps[t].w;
      for (int v = 0; v < NV; ++v) a[v] += vload(s + v * L) * w;
    }
    for (int v = 0; v < NV; ++v) vstore(out + q + v * L, a[v]);
  }
}

// Narrow planes (n a few blocks) take half blocks: less computed past the end.
template <typename acc>
inline void flat_conv(const Tap<acc>* taps, int nt, int64_t q0, int64_t n, acc* __restrict__ out) {
  if (n <= 4 * flat_block<acc>()) {
    flat_conv_blocks<kConvVectors / 2>(taps, nt, q0, n, out);
  } else {
    flat_conv_blocks<kConvVectors>(taps, nt, q0, n, out);
  }
}

// out[t] += sum_q d[q] * src[t][q] for G sources, q in [0, n) rounded up to the lanes.
template <int G, typename acc>
inline void flat_dots(const acc* d, const acc* const* src, int64_t n, double* out) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes;
  V s0[G], s1[G];
  const acc* p[G];
  for (int t = 0; t < G; ++t) {
    s0[t] = V{};
    s1[t] = V{};
    p[t] = src[t];
  }
  for (int64_t q = 0; q < n; q += 2 * L) {
    const V d0 = vload(d + q), d1 = vload(d + q + L);
    for (int t = 0; t < G; ++t) {
      s0[t] += d0 * vload(p[t] + q);
      s1[t] += d1 * vload(p[t] + q + L);
    }
  }
  for (int t = 0; t < G; ++t) {
    const V v = s0[t] + s1[t];
    double sum = 0;
    for (int l = 0; l < L; ++l) sum += double(v[l]);
    out[t] += sum;
  }
}

// Whether n values from p are all finite: a sum of v * 0 is 0 for finite v and NaN for NaN or Inf. Four
// vector accumulators, so it runs at the speed of the loads.
template <typename acc>
inline bool all_finite(const acc* p, int64_t n) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes;
  V s[4] = {};
  int64_t q = 0;
  for (; q + 4 * L <= n; q += 4 * L)
    for (int u = 0; u < 4; ++u) s[u] += vload(p + q + u * L) * acc(0);
  for_vectors<acc>(n - q, [&](int64_t j, int k, auto tail) {  // lanes past k load as zero
    s[0] += vload_span<decltype(tail)::value, acc>(p + q + j, k) * acc(0);
  });
  acc tail = 0;
  const V v = s[0] + s[1] + s[2] + s[3];
  for (int l = 0; l < L; ++l) tail += v[l];
  return tail == acc(0);
}

// The buffer layout of one call (see the top of the file).
struct NchwPlan {
  int K, sh, sw, dh, dw, ph, pw;
  int64_t H, W, OH, OW;
  int64_t L, T;   // largest tap shift along a row / a column, in phase units: (k - 1) * d / s
  int64_t P;      // row pitch of every plane
  int64_t RX;     // rows of a phase plane the valid outputs read
  int64_t RT;     // rows r of the input phases (ih + ph = sh * r + a, ih < H)
  int64_t x_size, dp_size, t_size, u_rows;
  // Forward tap (i, j) = t reads phase plane tap_plane[t] at offset tap_off[t] (computed once: no
  // divisions per plane).
  int64_t tap_off[kDwConvMaxKernel * kDwConvMaxKernel];
  int tap_plane[kDwConvMaxKernel * kDwConvMaxKernel];

  // backward: the pitch also fits Dp (a left margin of L for the transposed convolution); the forward
  // takes the narrowest pitch, max(m_in, OW + L), which computes fewer discarded columns.
  NchwPlan(const DwConvGeometry& g, bool backward) {
    K = g.k;
    sh = g.sh, sw = g.sw, dh = g.dh, dw = g.dw, ph = g.ph, pw = g.pw;
    H = g.h, W = g.w, OH = g.oh, OW = g.ow;
    L = int64_t(K - 1) * dw / sw;
    T = int64_t(K - 1) * dh / sh;
    const int64_t m_in = (W + 2 * pw + sw - 1) / sw;  // phase columns of the padded input
    P = backward ? L + std::max(m_in, OW) : std::max(m_in, OW + L);
    RX = OH + T;
    RT = (H - 1 + ph) / sh + 1;
    constexpr int64_t slack = 2 * 128;  // >= 2 blocks of any acc type
    x_size = (RX + 2) * P + slack;
    dp_size = (T + std::max(OH, RT) + 2) * P + slack;
    t_size = RT * P + slack;
    u_rows = std::max<int64_t>(1, std::min<int64_t>(OH, 4096 / P));  // rows of u per chunk (~16 KB of floats)
    for (int i = 0; i < K; ++i) {
      for (int j = 0; j < K; ++j) {
        const int64_t ri = int64_t(i) * dh, cj = int64_t(j) * dw;
        tap_plane[i * K + j] = static_cast<int>((ri % sh) * sw + cj % sw);
        tap_off[i * K + j] = (ri / sh) * P + cj / sw;
      }
    }
  }
  int phases() const { return sh * sw; }
};

// out[t] += sum over the valid outputs (columns ow < OW of rows oh < OH) of dz * src[t]: what flat_dots sums
// without the discarded columns. For planes holding NaN or Inf, where flat_dots's 0 * Inf in the discarded
// columns would be NaN; PyTorch sums the valid products only.
template <typename acc>
inline void valid_dots(const NchwPlan& pl, const acc* dz, const acc* const* src, int nt, double* out) {
  for (int t = 0; t < nt; ++t) {
    double sum = 0;
    for (int64_t oh = 0; oh < pl.OH; ++oh)
      for (int64_t ow = 0; ow < pl.OW; ++ow) sum += double(dz[oh * pl.P + ow]) * double(src[t][oh * pl.P + ow]);
    out[t] += sum;
  }
}

// The phase planes of one input plane xp [H][W]. Only the entries that hold input are written: the rest
// (margins, rows outside the input) is the same for every plane of a call and stays as allocated, zero.
template <typename scalar_t, typename acc>
inline void fill_phases(const NchwPlan& pl, const scalar_t* __restrict__ xp, acc* xb) {
  for (int rho = 0; rho < pl.sh; ++rho) {
    for (int phi = 0; phi < pl.sw; ++phi) {
      acc* plane = xb + int64_t(rho * pl.sw + phi) * pl.x_size;
      // Phase columns m with input column sw * m + phi - pw in [0, W).
      const int64_t m_lo = std::max<int64_t>(0, (pl.pw - phi + pl.sw - 1) / pl.sw);
      const int64_t last = pl.W - 1 + pl.pw - phi;  // the last input column's padded index, minus phi
      const int64_t m_hi = std::min<int64_t>(pl.P, last < 0 ? 0 : last / pl.sw + 1);
      if (m_lo >= m_hi) continue;
      const int64_t len = m_hi - m_lo;
      // Phase rows r with input row sh * r + rho - ph in [0, H).
      const int64_t r_lo = std::max<int64_t>(0, (pl.ph - rho + pl.sh - 1) / pl.sh);
      const int64_t last_r = pl.H - 1 + pl.ph - rho;
      const int64_t r_hi = std::min<int64_t>(pl.RX, last_r < 0 ? 0 : last_r / pl.sh + 1);
      for (int64_t r = r_lo; r < r_hi; ++r) {
        acc* __restrict__ dst = plane + r * pl.P + m_lo;
        const scalar_t* __restrict__ src = xp + (pl.sh * r + rho - pl.ph) * pl.W + (pl.sw * m_lo + phi - pl.pw);
        if (pl.sw == 1) {
          for_vectors<acc>(len, [&](int64_t m, int k, auto tail) {
            constexpr bool T = decltype(tail)::value;
            vstore_span<T, acc>(dst + m, vload_span<T, acc>(src + m, k), k);
          });
        } else {  // GCC vectorizes this stride-2 copy itself (vpermt2ps in avx512, vpermps in avx2)
          for (int64_t m = 0; m < len; ++m) dst[m] = static_cast<acc>(src[2 * m]);
        }
      }
    }
  }
}

// Packs rows [0, rows) of u (pitch P, in place) to pitch OW: the chunk of the output plane, contiguous
// (dst <= src). avx512, rows of 8 values or more: a row in vectors, the last one masked (each vector is
// loaded before it is stored, and the stores so far end at or before the next load), 2.2-2.6x faster than
// GCC's vectorized plain loop on rows of 14 and 28 floats; shorter rows and the other variants: the plain loop
// (a tail copied lane by lane into a vector was slower than it; tools/cpu_copies_bench.cpp).
template <typename acc>
inline void pack_rows(const NchwPlan& pl, acc* u, int64_t rows) {
  if (pl.P == pl.OW) return;
  for (int64_t i = 1; i < rows; ++i) {
    const acc* src = u + i * pl.P;
    acc* dst = u + i * pl.OW;
    if (kMaskedTails && pl.OW >= 8) {
      for_vectors<acc>(pl.OW, [&](int64_t t, int k, auto tail) {
        constexpr bool T = decltype(tail)::value;
        vstore_span<T, acc>(dst + t, vload_span<T, acc>(src + t, k), k);
      });
    } else {
      for (int64_t t = 0; t < pl.OW; ++t) dst[t] = src[t];
    }
  }
}

// The k * k taps of the forward convolution of a plane: tap (i, j) reads phase plane
// ((i dh) % sh, (j dw) % sw) at offset ((i dh) / sh) * P + (j dw) / sw; weights wc [k * k].
template <typename acc>
inline int forward_taps(const NchwPlan& pl, const acc* xb, const acc* wc, Tap<acc>* taps) {
  const int nt = pl.K * pl.K;
  for (int t = 0; t < nt; ++t) taps[t] = {xb + pl.tap_plane[t] * pl.x_size + pl.tap_off[t], wc[t]};
  return nt;
}

// y = act(conv(x) * scale + bias [+ residual]); x [N][C][H][W], y and residual [N][C][OH][OW];
// wt [C][k * k]; scale, bias [C].
template <typename scalar_t, typename acc, Act A>
void forward(const DwConvGeometry& g, const scalar_t* x, const acc* wt, const acc* sc, const acc* bi,
             const scalar_t* r, scalar_t* y) {
  using V = typename Vec<acc>::type;
  const NchwPlan pl(g, false);
  const int64_t planes = g.n * g.c, kk = int64_t(g.k) * g.k;
  const int64_t work = std::max<int64_t>(1, pl.OH * pl.P * kk);
  at::parallel_for(0, planes, std::max<int64_t>(1, 65536 / work), [&](int64_t p0, int64_t p1) {
    std::vector<acc> xb(pl.phases() * pl.x_size, acc(0));
    std::vector<acc> ub(pl.u_rows * pl.P + 256, acc(0));
    Tap<acc> taps[kDwConvMaxKernel * kDwConvMaxKernel];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % g.c;
      fill_phases(pl, x + p * pl.H * pl.W, xb.data());
      const int nt = forward_taps(pl, xb.data(), wt + c * kk, taps);
      const acc s = sc[c], b = bi[c];
      for (int64_t oh0 = 0; oh0 < pl.OH; oh0 += pl.u_rows) {
        const int64_t oh1 = std::min(pl.OH, oh0 + pl.u_rows);
        flat_conv(taps, nt, oh0 * pl.P, (oh1 - oh0) * pl.P, ub.data());
        pack_rows(pl, ub.data(), oh1 - oh0);
        const acc* u = ub.data();
        const int64_t off = (p * pl.OH + oh0) * pl.OW, cnt = (oh1 - oh0) * pl.OW;
        scalar_t* yr = y + off;
        const scalar_t* rr = r != nullptr ? r + off : nullptr;
        // y = act(u * s + b [+ r]) one vector at a time (a * b + c is madd: an FMA in avx2 and avx512).
        auto epilogue = [&](auto R) {
          for_vectors<acc>(cnt, [&](int64_t t, int k, auto tail) {
            constexpr bool T = decltype(tail)::value;
            V z = vload_span<T, acc>(u + t, k) * s + b;
            if constexpr (decltype(R)::value) z += vload_span<T, acc>(rr + t, k);
            vstore_span<T, acc>(yr + t, act_lanes<A, acc>(z), k);
          });
        };
        if (rr != nullptr) epilogue(std::true_type{});
        else epilogue(std::false_type{});
      }
    }
  });
}

// Backward: dx [N][C][H][W]; dr (when r is given) [N][C][OH][OW]; gw [C][k * k], gs, gb [C] (acc).
template <typename scalar_t, typename acc, Act A>
void backward(const DwConvGeometry& g, const scalar_t* x, const scalar_t* dy, const acc* wt, const acc* sc,
              const acc* bi, const scalar_t* r, scalar_t* dx, scalar_t* dr, acc* gw, acc* gs, acc* gb) {
  using Vacc = typename Vec<acc>::type;
  const NchwPlan pl(g, true);
  const int64_t kk = int64_t(g.k) * g.k;
  const int64_t in_plane = pl.H * pl.W, out_plane = pl.OH * pl.OW;
  at::parallel_for(0, g.c, 1, [&](int64_t c0, int64_t c1) {
    std::vector<acc> xb(pl.phases() * pl.x_size, acc(0));
    std::vector<acc> dp(pl.dp_size, acc(0));
    std::vector<acc> tb(pl.phases() * pl.t_size, acc(0));
    std::vector<acc> ub(A == Act::None ? 0 : pl.u_rows * pl.P + 256, acc(0));
    std::vector<acc> zb(pl.u_rows * pl.OW, acc(0));
    Tap<acc> taps[kDwConvMaxKernel * kDwConvMaxKernel];
    const acc* dsrc[kDwConvMaxKernel * kDwConvMaxKernel];
    acc* const dz0 = dp.data() + pl.T * pl.P + pl.L;  // dz[oh][ow] = dz0[oh * P + ow]
    for (int64_t c = c0; c < c1; ++c) {
      const acc* wc = wt + c * kk;
      const acc s = sc[c], b = bi[c];
      double dw_raw[kDwConvMaxKernel * kDwConvMaxKernel] = {};
      double sum_s = 0, sum_b = 0;
      // Transposed-convolution taps per input phase (a, b): weights w * scale, sources in Dp.
      Tap<acc> ttaps[4][kDwConvMaxKernel * kDwConvMaxKernel];
      int tn[4] = {0, 0, 0, 0};
      for (int a = 0; a < pl.sh; ++a) {
        for (int bb = 0; bb < pl.sw; ++bb) {
          const int phase = a * pl.sw + bb;
          for (int i = 0; i < pl.K; ++i) {
            if ((i * pl.dh) % pl.sh != a) continue;
            const int64_t e = (int64_t(i) * pl.dh - a) / pl.sh;
            for (int j = 0; j < pl.K; ++j) {
              if ((j * pl.dw) % pl.sw != bb) continue;
              const int64_t f = (int64_t(j) * pl.dw - bb) / pl.sw;
              ttaps[phase][tn[phase]++] = {dp.data() + (pl.T - e) * pl.P + (pl.L - f), wc[i * pl.K + j] * s};
            }
          }
        }
      }
      for (int64_t n = 0; n < g.n; ++n) {
        const int64_t p = n * g.c + c;
        fill_phases(pl, x + p * in_plane, xb.data());
        const int nt = forward_taps(pl, xb.data(), wc, taps);
        // dz into Dp (its margins stay zero), dr, and the sums of dz (and dz * u), over contiguous chunks
        // of the plane.
        // Vector sums of dz and dz * u (lanes past a partial vector's k are zero in both).
        Vacc lb{}, ls{};
        for (int64_t oh0 = 0; oh0 < pl.OH; oh0 += pl.u_rows) {
          const int64_t oh1 = std::min(pl.OH, oh0 + pl.u_rows);
          const int64_t off = p * out_plane + oh0 * pl.OW, cnt = (oh1 - oh0) * pl.OW;
          const scalar_t* dyr = dy + off;
          acc* z = zb.data();
          if constexpr (A == Act::None) {
            for_vectors<acc>(cnt, [&](int64_t t, int k, auto tail) {
              constexpr bool T = decltype(tail)::value;
              const Vacc dz = vload_span<T, acc>(dyr + t, k);
              vstore_span<T, acc>(z + t, dz, k);
              lb += dz;
            });
            if (dr != nullptr) std::copy(dyr, dyr + cnt, dr + off);
          } else {
            flat_conv(taps, nt, oh0 * pl.P, (oh1 - oh0) * pl.P, ub.data());
            pack_rows(pl, ub.data(), oh1 - oh0);
            const acc* u = ub.data();
            const scalar_t* rr = r != nullptr ? r + off : nullptr;
            scalar_t* drr = dr != nullptr ? dr + off : nullptr;
            auto grads = [&](auto R) {
              for_vectors<acc>(cnt, [&](int64_t t, int k, auto tail) {
                constexpr bool T = decltype(tail)::value;
                const Vacc uv = vload_span<T, acc>(u + t, k);
                Vacc zv = uv * s + b;
                if constexpr (decltype(R)::value) zv += vload_span<T, acc>(rr + t, k);
                const Vacc dz = act_backward_lanes<A, acc>(vload_span<T, acc>(dyr + t, k), zv);
                vstore_span<T, acc>(z + t, dz, k);
                if constexpr (decltype(R)::value) vstore_span<T, acc>(drr + t, dz, k);
                lb += dz;
                ls += dz * uv;
              });
            };
            if (rr != nullptr) grads(std::true_type{});
            else grads(std::false_type{});
          }
          for (int64_t oh = oh0; oh < oh1; ++oh)
            std::copy(z + (oh - oh0) * pl.OW, z + (oh - oh0 + 1) * pl.OW, dz0 + oh * pl.P);
        }
        for (int l = 0; l < Vec<acc>::lanes; ++l) {
          sum_b += double(lb[l]);
          sum_s += double(ls[l]);
        }
        // Weight gradient (before the scale): dot products of dz with the shifted inputs.
        for (int t = 0; t < nt; ++t) dsrc[t] = taps[t].src;
        const int64_t q = pl.OH * pl.P;
        if (all_finite(xb.data(), pl.phases() * pl.x_size)) {
          int t = 0;
          for (; t + 4 <= nt; t += 4) flat_dots<4>(dz0, dsrc + t, q, dw_raw + t);
          for (; t + 2 <= nt; t += 2) flat_dots<2>(dz0, dsrc + t, q, dw_raw + t);
          for (; t < nt; ++t) flat_dots<1>(dz0, dsrc + t, q, dw_raw + t);
        } else {
          valid_dots(pl, dz0, dsrc, nt, dw_raw);
        }
        // Input gradient: per input phase, the transposed convolution, then interleaved into dx.
        for (int a = 0; a < pl.sh; ++a) {
          const int64_t r_lo = pl.ph > a ? (pl.ph - a + pl.sh - 1) / pl.sh : 0;
          const int64_t r_hi = a <= pl.H - 1 + pl.ph ? (pl.H - 1 + pl.ph - a) / pl.sh + 1 : 0;
          if (r_hi <= r_lo) continue;
          for (int bb = 0; bb < pl.sw; ++bb) {
            const int phase = a * pl.sw + bb;
            acc* out = tb.data() + phase * pl.t_size;
            if (tn[phase] == 0) {
              std::fill(out + r_lo * pl.P, out + r_hi * pl.P, acc(0));
            } else {
              flat_conv(ttaps[phase], tn[phase], r_lo * pl.P, (r_hi - r_lo) * pl.P, out + r_lo * pl.P);
            }
          }
        }
        scalar_t* dxp = dx + p * in_plane;
        for (int64_t ih = 0; ih < pl.H; ++ih) {
          const int64_t rr = (ih + pl.ph) / pl.sh, a = (ih + pl.ph) % pl.sh;
          scalar_t* __restrict__ dxr = dxp + ih * pl.W;
          if (pl.sw == 1) {
            const acc* src = tb.data() + a * pl.t_size + rr * pl.P + pl.pw;
            for_vectors<acc>(pl.W, [&](int64_t iw, int k, auto tail) {
              constexpr bool T = decltype(tail)::value;
              vstore_span<T, acc>(dxr + iw, vload_span<T, acc>(src + iw, k), k);
            });
          } else {
            // Columns iw with (iw + pw) % 2 == bb come from phase bb: dxr[2m] from phase pw % 2, dxr[2m + 1]
            // from the other, interleaved a span of 2 vectors at a time (whole vectors read from the phase
            // planes: their slack covers a span past the row).
            const int be = pl.pw % 2;
            const acc* even = tb.data() + (a * 2 + be) * pl.t_size + rr * pl.P + pl.pw / 2;
            const acc* odd = tb.data() + (a * 2 + 1 - be) * pl.t_size + rr * pl.P + (1 + pl.pw) / 2;
            for_spans<2 * Vec<acc>::lanes>(pl.W, [&](int64_t iw, int k, auto tail) {
              copy_interleaved_span<decltype(tail)::value, acc>(dxr + iw, even + iw / 2, odd + iw / 2, k);
            });
          }
        }
      }
      double ssum = 0;
      for (int64_t t = 0; t < kk; ++t) {
        gw[c * kk + t] = static_cast<acc>(dw_raw[t] * double(s));
        ssum += dw_raw[t] * double(wc[t]);
      }
      gs[c] = static_cast<acc>(A == Act::None ? ssum : sum_s);
      gb[c] = static_cast<acc>(sum_b);
    }
  });
}

// ------------------------------------------------------------------------ entry points ----

void run_forward(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& wt, const Tensor& sc,
                 const Tensor& bi, const Tensor& r, const Tensor& y) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(x.scalar_type(), "dwconv_forward_nchw", [&] {
    using acc = at::opmath_type<scalar_t>;
    cpu::dispatch_act(act, [&](auto A) {
      forward<scalar_t, acc, decltype(A)::value>(g, x.const_data_ptr<scalar_t>(), wt.const_data_ptr<acc>(),
                                                 sc.const_data_ptr<acc>(), bi.const_data_ptr<acc>(),
                                                 r.defined() ? r.const_data_ptr<scalar_t>() : nullptr,
                                                 y.data_ptr<scalar_t>());
    });
  });
}

void run_backward(const DwConvGeometry& g, Act act, const Tensor& x, const Tensor& dy, const Tensor& wt,
                  const Tensor& sc, const Tensor& bi, const Tensor& r, const Tensor& dx, const Tensor& dr,
                  const Tensor& gw, const Tensor& gs, const Tensor& gb) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(x.scalar_type(), "dwconv_backward_nchw", [&] {
    using acc = at::opmath_type<scalar_t>;
    cpu::dispatch_act(act, [&](auto A) {
      backward<scalar_t, acc, decltype(A)::value>(
          g, x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(), wt.const_data_ptr<acc>(),
          sc.const_data_ptr<acc>(), bi.const_data_ptr<acc>(), r.defined() ? r.const_data_ptr<scalar_t>() : nullptr,
          dx.data_ptr<scalar_t>(), dr.defined() ? dr.data_ptr<scalar_t>() : nullptr, gw.data_ptr<acc>(),
          gs.data_ptr<acc>(), gb.data_ptr<acc>());
    });
  });
}

extern const DwConvNchwKernels kernels = {&run_forward, &run_backward};
