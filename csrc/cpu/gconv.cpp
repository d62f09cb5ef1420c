// CPU implementation of pycnn::gconv_forward / gconv_backward (at::parallel_for, OpenMP in torch).
//
// Everything runs NHWC in the accumulation type (float, or double for float64): half-precision inputs
// are widened once, NCHW inputs transposed once, and the result converted back. Per group the three
// convolutions are small GEMMs done directly on the NHWC tensors (no im2col buffer):
//   forward  out[pixel][co] = sum_{tap, ci} x[pixel @ tap][ci] * wk[tap][ci][co]
//   dgrad    dx[pixel][ci]  = sum_{tap, co} dconv[pixel @ tap][co] * wt[tap][co][ci]
//   wgrad    dw[tap][ci][co] = sum_{pixel} x[pixel @ tap][ci] * dconv[pixel][co]
// with a register-blocked micro-kernel: P (8 or 12) pixels x T channels of accumulators held as GCC vectors, the
// B row (T channels, zero-padded in the weight copies so T needs no tail) loaded once per k and
// broadcast-multiplied by P scalars. Pixels in the padding read a row of zeros instead of branching.
// The micro-kernels are compiled twice, for the baseline ISA and for AVX2+FMA (picked at run time).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/kernel_utils.h"
#include "gconv.h"

// The vector helpers are always inlined, so no vector value crosses a function boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pycnn {
namespace {

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PYCNN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define PYCNN_TARGET_AVX2
#endif
#define PYCNN_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename acc, int T>
struct VecType {
  typedef acc type __attribute__((vector_size(T * sizeof(acc))));
};
template <typename acc, int T>
using vec_t = typename VecType<acc, T>::type;

template <typename acc, int T>
PYCNN_ALWAYS_INLINE vec_t<acc, T> load_vec(const acc* p) {
  vec_t<acc, T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
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

// y = act(y * scale + bias [+ res]) over one output row of one group, after saving the raw y;
// scale and bias are never null here (ones / zeros stand in), so the loops vectorize.
template <typename acc, Act A>
void epilogue_row(const GConvGeometry& g, const FwdPtrs<acc>& d, int64_t n, int64_t oh, int64_t grp) {
  const acc* __restrict__ sc = d.scale + grp * g.cog;
  const acc* __restrict__ bi = d.bias + grp * g.cog;
  for (int64_t ow = 0; ow < g.ow; ++ow) {
    const int64_t base = ((n * g.oh + oh) * g.ow + ow) * g.c_out + grp * g.cog;
    acc* __restrict__ y = d.y + base;
    if (d.saved) std::memcpy(d.saved + base, y, sizeof(acc) * g.cog);
    if (d.res) {
      const acc* __restrict__ r = d.res + base;
      for (int64_t j = 0; j < g.cog; ++j) y[j] = act_forward<acc>(A, y[j] * sc[j] + bi[j] + r[j]);
    } else {
      for (int64_t j = 0; j < g.cog; ++j) y[j] = act_forward<acc>(A, y[j] * sc[j] + bi[j]);
    }
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
          acc* out = d.y + ((n * g.oh + oh) * g.ow + ow0 + p) * g.c_out + grp * g.cog + co0;
          for (int64_t j = 0; j < nc; ++j) out[j] = c[p][j];
        }
      }
    }
    if (d.epilogue) d.epilogue(g, d, n, oh, grp);
  }
}

template <typename acc, int T, int P>
void forward_items_base(const Args& a, const FwdPtrs<acc>& d, int64_t q0, int64_t q1) {
  forward_items<acc, T, P>(a, d, q0, q1);
}
template <typename acc, int T, int P>
PYCNN_TARGET_AVX2 void forward_items_avx2(const Args& a, const FwdPtrs<acc>& d, int64_t q0, int64_t q1) {
  forward_items<acc, T, P>(a, d, q0, q1);
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
          acc* out = d.dx + ((n * g.h + ih) * g.w + iw0 + p) * g.c_in + grp * g.cg + ci0;
          for (int64_t j = 0; j < nc; ++j) out[j] = c[p][j];
        }
      }
    }
  }
}

template <typename acc, int T, int P>
void dgrad_items_base(const Args& a, const DgradPtrs<acc>& d, int64_t q0, int64_t q1) {
  dgrad_items<acc, T, P>(a, d, q0, q1);
}
template <typename acc, int T, int P>
PYCNN_TARGET_AVX2 void dgrad_items_avx2(const Args& a, const DgradPtrs<acc>& d, int64_t q0, int64_t q1) {
  dgrad_items<acc, T, P>(a, d, q0, q1);
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
                acc* out = d.dw + ((grp * g.taps() + kh * g.k + kw) * g.cg + ci0 + i) * g.cog + co0;
                for (int64_t j = 0; j < nc; ++j) out[j] += c[i][j];
              }
            }
          }
        }
      }
    }
  }
}

template <typename acc, int T, int P>
void wgrad_rows_base(const Args& a, const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
  wgrad_rows<acc, T, P>(a, d, r0, r1);
}
template <typename acc, int T, int P>
PYCNN_TARGET_AVX2 void wgrad_rows_avx2(const Args& a, const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
  wgrad_rows<acc, T, P>(a, d, r0, r1);
}

// ------------------------------------------------------------------------------------------ driver ----

// T for a GEMM with n output columns: the smallest power of two >= n, at most one 32-byte (AVX2) vector
// of acc (wider GCC vectors are split into pieces badly); the columns are zero-padded to a multiple.
template <typename acc>
int tile_cols(int64_t n) {
  constexpr int max_t = 32 / static_cast<int>(sizeof(acc));
  int t = 1;
  while (t < n && t < max_t) t *= 2;
  return t;
}


template <typename Body>
void dispatch_cols(int t, Body body) {
  switch (t) {
    case 1: return body(std::integral_constant<int, 1>{});
    case 2: return body(std::integral_constant<int, 2>{});
    case 4: return body(std::integral_constant<int, 4>{});
    default: return body(std::integral_constant<int, 8>{});
  }
}

// Calls body(std::integral_constant<int, T>{}, std::integral_constant<int, P>{}) for T = t, P = p.
template <typename Body>
void dispatch_tile(int t, int p, Body body) {
  if (p == 8) {
    return dispatch_cols(t, [&](auto T_) { body(T_, std::integral_constant<int, 8>{}); });
  }
  return dispatch_cols(t, [&](auto T_) { body(T_, std::integral_constant<int, 12>{}); });
}

// [G, KK, R, C] -> [G, KK, R, round_up(C, T)] with zero columns.
Tensor pad_columns(const Tensor& w, int64_t t) {
  const int64_t cols = w.size(-1), padded = round_up(cols, t);
  if (padded == cols) return w.contiguous();
  return at::constant_pad_nd(w, {0, padded - cols}, 0).contiguous();
}

// The NHWC tensor in the accumulation type (a view when it already is one).
Tensor nhwc_acc(const Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous(at::MemoryFormat::ChannelsLast);
}

int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

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
  const bool avx2 = cpu::use_avx2();
  dispatch_tile(t, tile_rows(g.ow), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, g.n * g.oh * g.groups, grain_for(g.ow * g.cog * g.cg * g.taps()), [&](int64_t q0, int64_t q1) {
      if (avx2) forward_items_avx2<acc, T, P>(a, d, q0, q1);
      else forward_items_base<acc, T, P>(a, d, q0, q1);
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
  const bool avx2 = cpu::use_avx2();
  dispatch_tile(t, tile_rows(g.w), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, g.n * g.h * g.groups, grain_for(g.w * g.cog * g.cg * g.taps()), [&](int64_t q0, int64_t q1) {
      if (avx2) dgrad_items_avx2<acc, T, P>(a, d, q0, q1);
      else dgrad_items_base<acc, T, P>(a, d, q0, q1);
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
  const bool avx2 = cpu::use_avx2();
  dispatch_tile(tile_cols<acc>(g.cog), tile_rows(g.cg), [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks;
        WgradPtrs<acc> d{x.const_data_ptr<acc>(), dc, partial.data_ptr<acc>() + c * per};
        if (avx2) wgrad_rows_avx2<acc, T, P>(a, d, r0, r1);
        else wgrad_rows_base<acc, T, P>(a, d, r0, r1);
      }
    });
  });
  return partial.sum(0);
}

// dconv = dy * act'(z) * scale with z = conv * scale + bias + residual recomputed from the saved conv;
// also grad_scale = sum dz * conv, grad_bias = sum dz, grad_residual = dz. The returned buffer has 16
// zero elements past the [rows, C_out] tensor (read, never used, by the wgrad micro-kernel).
template <typename acc>
Tensor make_grad_conv(const GConvGeometry& g, Act act, const Tensor& dy, const Tensor& conv, const Tensor& scale,
                      const Tensor& bias, const Tensor& res, const Tensor& dres, const Tensor& sums) {
  const int64_t rows = g.out_rows(), c = g.c_out;
  Tensor buf = at::empty({rows * c + 16}, dy.options());
  buf.narrow(0, rows * c, 16).zero_();
  const acc* dyp = dy.const_data_ptr<acc>();
  const acc* cp = conv.defined() ? conv.const_data_ptr<acc>() : nullptr;
  const acc* sp = scale.defined() ? scale.const_data_ptr<acc>() : nullptr;
  const acc* bp = bias.defined() ? bias.const_data_ptr<acc>() : nullptr;
  const acc* rp = res.defined() ? res.const_data_ptr<acc>() : nullptr;
  acc* drp = dres.defined() ? dres.data_ptr<acc>() : nullptr;
  acc* dcp = buf.data_ptr<acc>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * at::get_num_threads()));
  std::vector<acc> part(static_cast<size_t>(chunks * 2 * c), acc(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      acc* ds = part.data() + ch * 2 * c;  // [sum dz * conv | sum dz]
      acc* db = ds + c;
      for (int64_t r = rows * ch / chunks; r < rows * (ch + 1) / chunks; ++r) {
        const int64_t off = r * c;
        for (int64_t o = 0; o < c; ++o) {
          const acc d = static_cast<acc>(dyp[off + o]);
          acc dz = d;
          if (cp) {
            const acc v = cp[off + o];
            acc z = sp ? v * sp[o] : v;
            if (bp) z += bp[o];
            if (rp) z += rp[off + o];
            dz = act_backward<acc>(act, d, z);
            ds[o] += dz * v;
          }
          db[o] += dz;
          if (drp) drp[off + o] = dz;
          dcp[off + o] = sp ? dz * sp[o] : dz;
        }
      }
    }
  });
  acc* out = sums.data_ptr<acc>();
  for (int64_t k = 0; k < 2 * c; ++k) {
    acc s = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) s += part[ch * 2 * c + k];
    out[k] = s;
  }
  return buf;
}

std::tuple<Tensor, Tensor> gconv_forward_cpu(const Tensor& input, const Tensor& weight, const OptTensor& scale,
                                             const OptTensor& bias, const OptTensor& residual, c10::IntArrayRef stride,
                                             c10::IntArrayRef padding, int64_t groups, c10::string_view act_name,
                                             bool save) {
  constexpr std::string_view op = "pycnn.gconv";
  const GConvGeometry g = check_gconv_args(op, input, weight, scale, bias, residual, stride, padding, groups);
  const Act act = parse_act(op, std::string_view(act_name.data(), act_name.size()));
  const auto format = kernel_memory_format(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  const auto acc_opts = input.options().dtype(acc_type);
  const bool keep = save && gconv_needs_saved(scale, act);
  const Tensor x = nhwc_acc(input, acc_type);
  const Tensor r = residual ? nhwc_acc(*residual, acc_type) : Tensor();
  const Tensor s = scale ? scale->to(acc_type).contiguous() : Tensor();
  const Tensor b = bias ? bias->to(acc_type).contiguous() : Tensor();
  const auto nhwc = at::MemoryFormat::ChannelsLast;
  Tensor y = at::empty({g.n, g.c_out, g.oh, g.ow}, acc_opts.memory_format(nhwc));
  Tensor saved = keep ? at::empty({g.n, g.c_out, g.oh, g.ow}, acc_opts.memory_format(nhwc)) : Tensor();
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc_type, "gconv_forward_cpu", [&] {
      run_forward<scalar_t>(g, act, x, weight, s, b, r, y, saved);
    });
  }
  auto back = [&](const Tensor& t) { return t.to(input.scalar_type()).contiguous(format); };
  return {back(y), keep ? back(saved) : at::empty({0}, input.options())};
}

std::tuple<Tensor, Tensor, OptTensor, OptTensor, OptTensor> gconv_backward_cpu(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, const Tensor& saved_, c10::IntArrayRef stride,
    c10::IntArrayRef padding, int64_t groups, c10::string_view act_name) {
  constexpr std::string_view op = "pycnn.gconv_backward";
  const GConvGeometry g =
      check_gconv_backward_args(op, grad_output, input, weight, scale, bias, residual, saved_, stride, padding, groups);
  const Act act = parse_act(op, std::string_view(act_name.data(), act_name.size()));
  const auto format = kernel_memory_format(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  const auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = nhwc_acc(input, acc_type);
  const Tensor dy = nhwc_acc(grad_output, acc_type);
  const Tensor r = residual ? nhwc_acc(*residual, acc_type) : Tensor();
  const Tensor s = scale ? scale->to(acc_type).contiguous() : Tensor();
  const Tensor b = bias ? bias->to(acc_type).contiguous() : Tensor();
  Tensor conv;
  if (gconv_needs_saved(scale, act)) {
    if (saved_.numel() > 0) {
      conv = nhwc_acc(saved_, acc_type);
    } else {  // not saved by forward: recompute the convolution
      conv = at::empty({g.n, g.c_out, g.oh, g.ow}, x.options().memory_format(nhwc));
      AT_DISPATCH_FLOATING_TYPES(acc_type, "gconv_backward_cpu", [&] {
        run_forward<scalar_t>(g, Act::None, x, weight, Tensor(), Tensor(), Tensor(), conv, Tensor());
      });
    }
  }
  Tensor dres = residual ? at::empty({g.n, g.c_out, g.oh, g.ow}, x.options().memory_format(nhwc)) : Tensor();
  Tensor sums = at::zeros({2, g.c_out}, x.options());
  // (at::zeros would ignore the memory format)
  Tensor dx = at::empty({g.n, g.c_in, g.h, g.w}, x.options().memory_format(nhwc)).zero_();
  Tensor dwk;
  AT_DISPATCH_FLOATING_TYPES(acc_type, "gconv_backward_cpu", [&] {
    if (g.out_rows() == 0) {
      dwk = at::zeros({g.groups, g.taps(), g.cg, g.cog}, x.options());
      return;
    }
    const Tensor dc = make_grad_conv<scalar_t>(g, act, dy, conv, s, b, r, dres, sums);
    const Tensor dc_view = dc.narrow(0, 0, g.out_rows() * g.c_out)
                               .view({g.n, g.oh, g.ow, g.c_out})
                               .permute({0, 3, 1, 2});
    if (dx.numel() > 0) run_dgrad<scalar_t>(g, dc_view, weight, dx);
    dwk = run_wgrad<scalar_t>(g, x, dc.const_data_ptr<scalar_t>());
  });
  const auto dt = input.scalar_type();
  Tensor grad_input = dx.to(dt).contiguous(format);
  Tensor grad_weight = gconv_weight_from_kernel(dwk, g).to(dt).contiguous();
  OptTensor grad_scale, grad_bias, grad_res;
  if (scale) grad_scale = sums[0].to(scale->scalar_type(), false, /*copy=*/true);  // no aliasing outputs
  if (bias) grad_bias = sums[1].to(bias->scalar_type(), false, /*copy=*/true);
  if (residual) grad_res = dres.to(dt).contiguous(format);
  return {grad_input, grad_weight, grad_scale, grad_bias, grad_res};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("gconv_forward", &gconv_forward_cpu);
  m.impl("gconv_backward", &gconv_backward_cpu);
}

}  // namespace pycnn
