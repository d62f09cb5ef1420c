// CPU kernels of pycnn::gconv_* (NHWC, in the accumulation type). Not a normal header: cpu/isa_kernels.h
// compiles it once per variant (namespaces pycnn::gc_base, gc_avx2, gc_avx512), and gconv.cpp calls the one
// that runs through its table of entry points (`kernels` at the end, cpu/gconv_entries.h). Vector types
// come from cpu/isa_prelude.h: a tile is up to one vector register of output channels wide (8 floats,
// 16 in avx512).
//
// Per group the three convolutions are small GEMMs done directly on the NHWC tensors (no im2col buffer):
//   forward  out[pixel][co] = sum_{tap, ci} x[pixel @ tap][ci] * wk[tap][ci][co]
//   dgrad    dx[pixel][ci]  = sum_{tap, co} dconv[pixel @ tap][co] * wt[tap][co][ci]
//   wgrad    dw[tap][ci][co] = sum_{pixel} x[pixel @ tap][ci] * dconv[pixel][co]
// with a register-blocked micro-kernel: P (8 or 12) pixels x T channels of accumulators held as GCC vectors, the
// B row (T channels, zero-padded in the weight copies so T needs no tail) loaded once per k and
// broadcast-multiplied by P scalars. Pixels in the padding read a row of zeros instead of branching.

#define PYCNN_ALWAYS_INLINE inline __attribute__((always_inline))

// T columns of acc as one GCC vector (cpu/isa_prelude.h); T is at most one vector register of the variant.
template <typename acc, int T>
using vec_t = typename VecN<acc, T>::type;

template <typename acc, int T>
PYCNN_ALWAYS_INLINE vec_t<acc, T> load_vec(const acc* p) {
  return vload<acc, T>(p);
}

// out[0, n) = v[0, n), n <= T; with Add, out[0, n) += v[0, n). A whole tile (n == T) is one store of T
// lanes (a whole register, or part of one for the narrow tiles of small groups); a partial one (n < T) is
// masked in avx512 (kMaskedTails: a narrow tile widened to a register first, its lanes past T left
// undefined and never stored) and stored lane by lane in the other variants.
template <bool Add, typename acc, int T>
PYCNN_ALWAYS_INLINE void store_cols(acc* out, vec_t<acc, T> v, int64_t n) {
  if (n == T) {
    if constexpr (Add) v += load_vec<acc, T>(out);
    vstore(out, v);
  } else if constexpr (kMaskedTails) {
    const int k = static_cast<int>(n);
    typename Vec<acc>::type w = widen_to_register<acc>(v);
    if constexpr (Add) w += vload_span<true, acc>(out, k);
    vstore_span<true, acc>(out, w, k);
  } else {
    for (int64_t j = 0; j < n; ++j) out[j] = Add ? out[j] + v[j] : v[j];
  }
}

// Pixels (rows of the micro-kernel) per tile: 8 or 12 (12 + 2 of the 16 AVX2 registers hold
// accumulators, the B row and the broadcast), whichever wastes less on a dimension of `len`.
int tile_rows(int64_t len) {
  const int64_t cost8 = (len + 7) / 8 * (8 + 2), cost12 = (len + 11) / 12 * (12 + 2);
  return cost8 < cost12 ? 8 : 12;
}

// c[p] += sum_k a[p][k] * b[k][0..T)
template <typename acc, int P, int T>
PYCNN_ALWAYS_INLINE void micro_rows(vec_t<acc, T> (&c)[P], const acc* const (&a)[P], const acc* __restrict__ b,
                                    int64_t ldb, int64_t klen) {
  for (int64_t k = 0; k < klen; ++k) {
    const vec_t<acc, T> bv = load_vec<acc, T>(b + k * ldb);
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) c[p] += a[p][k] * bv;
  }
}

struct Args {
  GConvGeometry g;
  Act act;
  int64_t ldw;  // padded inner dimension of the weight copy (Cog for wk, Cg for wt, rounded up to T)
};

// ---------------------------------------------------------------------------------------- forward ----

template <typename acc>
struct FwdPtrs {
  const acc* x;       // [N, H, W, C_in]
  const acc* wk;      // [G, KK, Cg, ldw]
  const acc* scale;   // [C_out] or null
  const acc* bias;    // [C_out] or null
  const acc* res;     // [N, OH, OW, C_out] or null
  acc* y;             // [N, OH, OW, C_out]
  acc* saved;         // [N, OH, OW, C_out] or null
  const acc* zeros;   // >= max(C_in, C_out) zeros
  // Applied to each (n, oh, group) row of raw conv values in y (while it is in cache); null: none.
  void (*epilogue)(const GConvGeometry&, const FwdPtrs&, int64_t n, int64_t oh, int64_t grp);
};

// y = act(y * scale + bias [+ res]) over one output row of one group, after saving the raw y, one vector
// of channels at a time (for_vectors); scale and bias are never null here (ones / zeros stand in).
template <typename acc, Act A>
void epilogue_row(const GConvGeometry& g, const FwdPtrs<acc>& d, int64_t n, int64_t oh, int64_t grp) {
  using V = typename Vec<acc>::type;
  const acc* sc = d.scale + grp * g.cog;
  const acc* bi = d.bias + grp * g.cog;
  for (int64_t ow = 0; ow < g.ow; ++ow) {
    const int64_t base = ((n * g.oh + oh) * g.ow + ow) * g.c_out + grp * g.cog;
    acc* y = d.y + base;
    const acc* r = d.res != nullptr ? d.res + base : nullptr;
    if (d.saved) std::memcpy(d.saved + base, y, sizeof(acc) * g.cog);
    auto row = [&](auto R) {
      for_vectors<acc>(g.cog, [&](int64_t j, int k, auto tail) {
        constexpr bool T = decltype(tail)::value;
        V z = vload_span<T, acc>(y + j, k) * vload_span<T, acc>(sc + j, k) + vload_span<T, acc>(bi + j, k);
        if constexpr (decltype(R)::value) z += vload_span<T, acc>(r + j, k);
        vstore_span<T, acc>(y + j, act_lanes<A, acc>(z), k);
      });
    };
    if (r != nullptr) row(std::true_type{});
    else row(std::false_type{});
  }
}

// Work items q = (n, oh, group).
template <typename acc, int T, int P>
PYCNN_ALWAYS_INLINE void forward_items(const Args& a, const FwdPtrs<acc>& d, int64_t q0, int64_t q1) {
  const GConvGeometry& g = a.g;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t grp = q % g.groups, row = q / g.groups, oh = row % g.oh, n = row / g.oh;
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += P) {
      for (int64_t co0 = 0; co0 < g.cog; co0 += T) {
        vec_t<acc, T> c[P] = {};
        for (int64_t kh = 0; kh < g.k; ++kh) {
          const int64_t ih = oh * g.sh - g.ph + kh;
          if (ih < 0 || ih >= g.h) continue;
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const acc* rows[P];
            for (int p = 0; p < P; ++p) {
              const int64_t iw = (ow0 + p) * g.sw - g.pw + kw;
              rows[p] = (ow0 + p < g.ow && iw >= 0 && iw < g.w) ? d.x + ((n * g.h + ih) * g.w + iw) * g.c_in + grp * g.cg
                                                                 : d.zeros;
            }
            micro_rows<acc, P, T>(c, rows, d.wk + ((grp * g.taps() + kh * g.k + kw) * g.cg) * a.ldw + co0, a.ldw, g.cg);
          }
        }
        const int64_t np = std::min<int64_t>(P, g.ow - ow0), nc = std::min<int64_t>(T, g.cog - co0);
        for (int64_t p = 0; p < np; ++p) {
          store_cols<false, acc, T>(d.y + ((n * g.oh + oh) * g.ow + ow0 + p) * g.c_out + grp * g.cog + co0, c[p], nc);
        }
      }
    }
    if (d.epilogue) d.epilogue(g, d, n, oh, grp);
  }
}

// ---------------------------------------------------------------------------------- input gradient ----

template <typename acc>
struct DgradPtrs {
  const acc* dc;     // [N, OH, OW, C_out]
  const acc* wt;     // [G, KK, Cog, ldw]
  acc* dx;           // [N, H, W, C_in]
  const acc* zeros;
};

// Work items q = (n, ih, group).
template <typename acc, int T, int P>
PYCNN_ALWAYS_INLINE void dgrad_items(const Args& a, const DgradPtrs<acc>& d, int64_t q0, int64_t q1) {
  const GConvGeometry& g = a.g;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t grp = q % g.groups, row = q / g.groups, ih = row % g.h, n = row / g.h;
    for (int64_t iw0 = 0; iw0 < g.w; iw0 += P) {
      for (int64_t ci0 = 0; ci0 < g.cg; ci0 += T) {
        vec_t<acc, T> c[P] = {};
        for (int64_t kh = 0; kh < g.k; ++kh) {
          const int64_t t = ih + g.ph - kh;
          if (t < 0 || t % g.sh != 0 || t / g.sh >= g.oh) continue;
          const int64_t oh = t / g.sh;
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const acc* rows[P];
            for (int p = 0; p < P; ++p) {
              const int64_t u = iw0 + p + g.pw - kw;
              const bool ok = iw0 + p < g.w && u >= 0 && u % g.sw == 0 && u / g.sw < g.ow;
              rows[p] = ok ? d.dc + ((n * g.oh + oh) * g.ow + u / g.sw) * g.c_out + grp * g.cog : d.zeros;
            }
            micro_rows<acc, P, T>(c, rows, d.wt + ((grp * g.taps() + kh * g.k + kw) * g.cog) * a.ldw + ci0, a.ldw, g.cog);
          }
        }
        const int64_t np = std::min<int64_t>(P, g.w - iw0), nc = std::min<int64_t>(T, g.cg - ci0);
        for (int64_t p = 0; p < np; ++p) {
          store_cols<false, acc, T>(d.dx + ((n * g.h + ih) * g.w + iw0 + p) * g.c_in + grp * g.cg + ci0, c[p], nc);
        }
      }
    }
  }
}

// --------------------------------------------------------------------------------- weight gradient ----

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

template <typename acc>
struct WgradPtrs {
  const acc* x;   // [N, H, W, C_in]
  const acc* dc;  // [N, OH, OW, C_out] followed by >= 16 readable elements
  acc* dw;        // [G, KK, Cg, Cog]: this chunk's partial sums (added to)
};

// dw += the contributions of output rows [r0, r1) (a row is one (n, oh)), in sub-blocks of rows small
// enough to stay in cache while every (group, tap, tile) sweeps them.
template <typename acc, int T, int P>
PYCNN_ALWAYS_INLINE void wgrad_rows(const Args& a, const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
  const GConvGeometry& g = a.g;
  const int64_t sub = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.ow * (g.cg + g.cog)));
  for (int64_t s0 = r0; s0 < r1; s0 += sub) {
    const int64_t s1 = std::min(r1, s0 + sub);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      for (int64_t kh = 0; kh < g.k; ++kh) {
        for (int64_t kw = 0; kw < g.k; ++kw) {
          // Output columns whose input column is inside the image for this tap.
          const int64_t ow_lo = std::max<int64_t>(0, floor_div(g.pw - kw + g.sw - 1, g.sw));
          const int64_t ow_hi = std::min<int64_t>(g.ow, floor_div(g.w - 1 + g.pw - kw, g.sw) + 1);
          for (int64_t ci0 = 0; ci0 < g.cg; ci0 += P) {
            int64_t cidx[P];
            for (int i = 0; i < P; ++i) cidx[i] = std::min<int64_t>(ci0 + i, g.cg - 1);
            for (int64_t co0 = 0; co0 < g.cog; co0 += T) {
              vec_t<acc, T> c[P] = {};
              for (int64_t r = s0; r < s1; ++r) {
                const int64_t oh = r % g.oh, n = r / g.oh;
                const int64_t ih = oh * g.sh - g.ph + kh;
                if (ih < 0 || ih >= g.h) continue;
                for (int64_t ow = ow_lo; ow < ow_hi; ++ow) {
                  const acc* __restrict__ xr = d.x + ((n * g.h + ih) * g.w + ow * g.sw - g.pw + kw) * g.c_in + grp * g.cg;
                  const vec_t<acc, T> dv = load_vec<acc, T>(d.dc + (r * g.ow + ow) * g.c_out + grp * g.cog + co0);
#pragma GCC unroll 16
                  for (int i = 0; i < P; ++i) c[i] += xr[cidx[i]] * dv;
                }
              }
              const int64_t ni = std::min<int64_t>(P, g.cg - ci0), nc = std::min<int64_t>(T, g.cog - co0);
              for (int64_t i = 0; i < ni; ++i) {
                store_cols<true, acc, T>(d.dw + ((grp * g.taps() + kh * g.k + kw) * g.cg + ci0 + i) * g.cog + co0, c[i], nc);
              }
            }
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------ driver ----

// T for a GEMM with n output columns: the smallest power of two >= n, at most one vector register of acc
// (wider GCC vectors are split into pieces badly); the columns are zero-padded to a multiple.
template <typename acc> constexpr int kMaxCols = kVectorBytes / int(sizeof(acc));

template <typename acc>
int tile_cols(int64_t n) {
  int t = 1;
  while (t < n && t < kMaxCols<acc>) t *= 2;
  return t;
}

// Calls body(std::integral_constant<int, T>{}) for T = t (a power of two up to kMaxCols<acc>): only the
// widths the variant's tile_cols can pick are compiled.
template <typename acc, int T = 1, typename Body>
void dispatch_cols(int t, Body body) {
  if constexpr (T >= kMaxCols<acc>) {
    return body(std::integral_constant<int, T>{});
  } else {
    if (t <= T) return body(std::integral_constant<int, T>{});
    return dispatch_cols<acc, 2 * T>(t, body);
  }
}

// Calls body(std::integral_constant<int, T>{}, std::integral_constant<int, P>{}) for T = t, P = p.
template <typename acc, typename Body>
void dispatch_tile(int t, int p, Body body) {
  if (p == 8) {
    return dispatch_cols<acc>(t, [&](auto T_) { body(T_, std::integral_constant<int, 8>{}); });
  }
  return dispatch_cols<acc>(t, [&](auto T_) { body(T_, std::integral_constant<int, 12>{}); });
}

// [G, KK, R, C] -> [G, KK, R, round_up(C, T)] with zero columns.
inline Tensor pad_columns(const Tensor& w, int64_t t) {
  const int64_t cols = w.size(-1), padded = round_up(cols, t);
  if (padded == cols) return w.contiguous();
  return at::constant_pad_nd(w, {0, padded - cols}, 0).contiguous();
}

inline int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

// The raw convolution (and, with an epilogue, the output) in NHWC and the accumulation type.
template <typename acc>
void run_forward(const GConvGeometry& g, Act act, const Tensor& x, const Tensor& weight, const Tensor& scale,
                 const Tensor& bias, const Tensor& res, const Tensor& y, const Tensor& saved) {
  const int t = tile_cols<acc>(g.cog);
  const Tensor wk = pad_columns(gconv_kernel_weight(weight, g, false, x.scalar_type()), t);
  std::vector<acc> zeros(std::max(g.c_in, g.c_out) + 16, acc(0)), ones(g.c_out, acc(1));
  FwdPtrs<acc> d{x.const_data_ptr<acc>(),
                 wk.const_data_ptr<acc>(),
                 scale.defined() ? scale.const_data_ptr<acc>() : ones.data(),
                 bias.defined() ? bias.const_data_ptr<acc>() : zeros.data(),
                 res.defined() ? res.const_data_ptr<acc>() : nullptr,
                 y.data_ptr<acc>(),
                 saved.defined() ? saved.data_ptr<acc>() : nullptr,
                 zeros.data(),
                 nullptr};
  if (scale.defined() || bias.defined() || res.defined() || saved.defined() || act != Act::None) {
    switch (act) {
      case Act::ReLU: d.epilogue = &epilogue_row<acc, Act::ReLU>; break;
      case Act::ReLU6: d.epilogue = &epilogue_row<acc, Act::ReLU6>; break;
      case Act::SiLU: d.epilogue = &epilogue_row<acc, Act::SiLU>; break;
      case Act::HardSwish: d.epilogue = &epilogue_row<acc, Act::HardSwish>; break;
      default: d.epilogue = &epilogue_row<acc, Act::None>; break;
    }
  }
  const Args a{g, act, wk.size(-1)};
  dispatch_tile<acc>(t, tile_rows(g.ow), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, g.n * g.oh * g.groups, grain_for(g.ow * g.cog * g.cg * g.taps()), [&](int64_t q0, int64_t q1) {
      forward_items<acc, T, P>(a, d, q0, q1);
    });
  });
}

template <typename acc>
void run_dgrad(const GConvGeometry& g, const Tensor& dc, const Tensor& weight, const Tensor& dx) {
  const int t = tile_cols<acc>(g.cg);
  const Tensor wt = pad_columns(gconv_kernel_weight(weight, g, true, dc.scalar_type()), t);
  std::vector<acc> zeros(std::max(g.c_in, g.c_out) + 16, acc(0));
  DgradPtrs<acc> d{dc.const_data_ptr<acc>(), wt.const_data_ptr<acc>(), dx.data_ptr<acc>(), zeros.data()};
  const Args a{g, Act::None, wt.size(-1)};
  dispatch_tile<acc>(t, tile_rows(g.w), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, g.n * g.h * g.groups, grain_for(g.w * g.cog * g.cg * g.taps()), [&](int64_t q0, int64_t q1) {
      dgrad_items<acc, T, P>(a, d, q0, q1);
    });
  });
}

// dc holds >= 16 readable elements past its end (see make_grad_conv).
template <typename acc>
Tensor run_wgrad(const GConvGeometry& g, const Tensor& x, const acc* dc) {
  const int64_t rows = g.n * g.oh;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, at::get_num_threads()));
  const int64_t per = g.groups * g.taps() * g.cg * g.cog;
  Tensor partial = at::zeros({chunks, per}, x.options());
  const Args a{g, Act::None, g.cog};
  dispatch_tile<acc>(tile_cols<acc>(g.cog), tile_rows(g.cg), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks;
        WgradPtrs<acc> d{x.const_data_ptr<acc>(), dc, partial.data_ptr<acc>() + c * per};
        wgrad_rows<acc, T, P>(a, d, r0, r1);
      }
    });
  });
  return partial.sum(0);
}

// ------------------------------------------------------------------------ entry points ----

void forward_entry(const GConvGeometry& g, Act act, const Tensor& x, const Tensor& weight, const Tensor& scale,
                   const Tensor& bias, const Tensor& res, const Tensor& y, const Tensor& saved) {
  PYCNN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gconv_forward_cpu", [&] {
    run_forward<scalar_t>(g, act, x, weight, scale, bias, res, y, saved);
  });
}

void dgrad_entry(const GConvGeometry& g, const Tensor& dc, const Tensor& weight, const Tensor& dx) {
  PYCNN_DISPATCH_FLOATING_TYPES(dx.scalar_type(), "gconv_backward_cpu", [&] { run_dgrad<scalar_t>(g, dc, weight, dx); });
}

Tensor wgrad_entry(const GConvGeometry& g, const Tensor& x, const Tensor& dc) {
  Tensor out;
  PYCNN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gconv_backward_cpu", [&] {
    out = run_wgrad<scalar_t>(g, x, dc.const_data_ptr<scalar_t>());
  });
  return out;
}

extern const GConvKernels kernels = {&forward_entry, &dgrad_entry, &wgrad_entry};
