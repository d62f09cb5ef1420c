// The fused inverted-residual block (pycnn::mbconv_forward, eval), NHWC, compiled once per CPU variant by
// cpu/isa_kernels.h (float32 in every variant, float64 in the baseline one).
//
// A task is one image's band of output rows. It walks the band row by row and keeps the expanded activation
// of the last k input rows in a ring of k rows (slot ih % k), so the expanded tensor (several times the
// block's width) never goes to memory: each input row is expanded once per band (the first row of a band
// recomputes the k - s rows it shares with the band above), the depthwise row is computed from the ring into
// one row buffer, and the projection writes the output row (with the residual). Ring and row buffer are
// k * W * Ep + OW * Ep values: 130 KiB for MobileNetV2's widest (112 x 112, 96 channels, float32), in L2.
// With SE, the depthwise output d is stored (the scale needs all of it) with its sums per row; the scale per
// image follows, then the projection of the scaled d in chunks of rows.
//
// The 1x1 convolutions are a register-blocked GEMM (gemm_tile): MR pixels x NV vectors of output channels
// accumulate in registers over the input channels, one broadcast of a pixel's input value per MR x NV
// multiply-adds; the weights are packed into panels of NV vectors of columns (kTile, zeros past the channel
// count; by the caller, which keeps them between an eval fold's calls: cpu/weight_forms.h) and the biases and
// the ring padded to 16 channels (kMbConvPad), so the vectors never need a tail, except in the output row of the
// projection (C_out values per pixel).

namespace detail_mb {

using cpu::Layout;

#ifdef PYCNN_CPU_AVX512
constexpr int kMR = 6, kNV = 4;  // 24 accumulators of 32 registers
#else
constexpr int kMR = 4, kNV = 3;  // 12 accumulators of 16 registers
#endif

// C[m][0:n_valid] = bias + sum_k A[m][k] * B[k][:] [+ R[m][:]] for MR rows, NV vectors (n_valid <= NV * L;
// B and bias have NV * L readable values).
template <int MR, int NV, typename T>
inline void gemm_tile(const T* __restrict__ A, int64_t lda, const T* __restrict__ B, int64_t ldb, int64_t K,
                      const T* __restrict__ bias, T* __restrict__ C, int64_t ldc, int64_t n_valid,
                      const T* __restrict__ R, int64_t ldr) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const V b = vload<T>(bias + v * L);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[m][v] = b;
  }
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = vload<T>(B + k * ldb + v * L);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const T a = A[m * lda + k];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] += a * b[v];
    }
  }
  if (n_valid == NV * L) {
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        V out = acc[m][v];
        if (R) out += vload<T>(R + m * ldr + v * L);
        vstore(C + m * ldc + v * L, out);
      }
    }
  } else {
    for (int m = 0; m < MR; ++m) {
      T tmp[NV * L];
      for (int v = 0; v < NV; ++v) vstore(tmp + v * L, acc[m][v]);
      for (int64_t j = 0; j < n_valid; ++j) C[m * ldc + j] = tmp[j] + (R ? R[m * ldr + j] : T(0));
    }
  }
}

template <int MR, typename T>
inline void gemm_rows(const T* A, int64_t lda, const T* B, int64_t ldb, int64_t K, const T* bias, T* C, int64_t ldc,
                      int64_t n_valid, const T* R, int64_t ldr, int nv) {
  switch (nv) {
    case 1: return gemm_tile<MR, 1>(A, lda, B, ldb, K, bias, C, ldc, n_valid, R, ldr);
    case 2: return gemm_tile<MR, 2>(A, lda, B, ldb, K, bias, C, ldc, n_valid, R, ldr);
    case 3: return gemm_tile<MR, 3>(A, lda, B, ldb, K, bias, C, ldc, n_valid, R, ldr);
    default:
      if constexpr (kNV >= 4) return gemm_tile<MR, kNV>(A, lda, B, ldb, K, bias, C, ldc, n_valid, R, ldr);
  }
}

// The columns of one GEMM tile: kNV vectors.
template <typename T>
constexpr int64_t kTile = kNV * Vec<T>::lanes;

// B = W^T for a weight W [N][K] (a 1x1 conv's [out][in]) as panels of kTile columns of B, each [K][kTile]
// contiguous, so a tile's loads walk memory in order: enough panels for a GEMM over `cols` >= N columns (zeros
// past N; the expand GEMM writes all Ep columns of the ring). Read in place: one pass, no transposed copy (a
// panel's kTile rows of W stay in L1 while k advances).
template <typename T>
Tensor pack_panels(const Tensor& w, int64_t cols) {
  const int64_t N = w.size(0), K = w.size(1);
  const T* W = w.const_data_ptr<T>();
  const int64_t panels = (std::max(N, cols) + kTile<T> - 1) / kTile<T>;
  Tensor out = at::zeros({panels * K * kTile<T>}, w.options());
  for (int64_t p = 0; p * kTile<T> < N; ++p) {
    const int64_t width = std::min(kTile<T>, N - p * kTile<T>);
    T* panel = out.mutable_data_ptr<T>() + p * K * kTile<T>;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < width; ++j) panel[k * kTile<T> + j] = W[(p * kTile<T> + j) * K + k];
  }
  return out;
}

// C[M][N] = A[M][K] B[K][N] + bias [+ R] (row strides lda, ldc, ldr; B as pack_panels gives it, bias padded
// to a multiple of the vector length). Column tiles outer, so a panel of B stays in cache across the M rows.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp, const T* bias, T* C,
          int64_t ldc, const T* R, int64_t ldr) {
  constexpr int L = Vec<T>::lanes;
  constexpr int64_t ldb = kTile<T>;
  for (int64_t j = 0; j < N; j += kTile<T>) {
    const int64_t n_valid = std::min<int64_t>(kTile<T>, N - j);
    const int nv = static_cast<int>((n_valid + L - 1) / L);
    const T* B = Bp + (j / kTile<T>) * K * kTile<T>;  // the panel of columns j..
    auto rows = [&](auto MR_, int64_t m) {
      constexpr int MR = decltype(MR_)::value;
      gemm_rows<MR>(A + m * lda, lda, B, ldb, K, bias + j, C + m * ldc + j, ldc, n_valid,
                    R ? R + m * ldr + j : nullptr, ldr, nv);
    };
    int64_t m = 0;
    for (; m + kMR <= M; m += kMR) rows(std::integral_constant<int, kMR>{}, m);
    if constexpr (kMR > 4) {
      if (M - m >= 4) {
        rows(std::integral_constant<int, 4>{}, m);
        m += 4;
      }
    }
    switch (M - m) {
      case 1: rows(std::integral_constant<int, 1>{}, m); break;
      case 2: rows(std::integral_constant<int, 2>{}, m); break;
      case 3: rows(std::integral_constant<int, 3>{}, m); break;
      default: break;
    }
  }
}

template <Act A, typename T>
inline void act_inplace(T* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = cpu::cpu_act<A, T>(p[i]);
}

// One output row of the depthwise conv from the ring (input row ih in slot ih % k, W x Ep each), bias, act,
// into out [OW][Ep]. Channel blocks of 64 outer so the block's k * k weight vectors stay in L1 over the row.
template <Act A, typename T>
void dw_row(const MbConvGeometry& g, int64_t oh, const T* ring, int64_t Ep, const T* wd, const T* bd, T* out) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  const int k = g.k;
  const int64_t ih0 = oh * g.s - g.p;
  const int ky0 = static_cast<int>(std::max<int64_t>(0, -ih0));
  const int ky1 = static_cast<int>(std::min<int64_t>(k, g.h - ih0));
  const int64_t row = g.w * Ep;
  constexpr int64_t kBlock = 64;
  for (int64_t c0 = 0; c0 < Ep; c0 += kBlock) {
    const int64_t c1 = std::min(Ep, c0 + kBlock);
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      const int64_t iw0 = ow * g.s - g.p;
      const int kx0 = static_cast<int>(std::max<int64_t>(0, -iw0));
      const int kx1 = static_cast<int>(std::min<int64_t>(k, g.w - iw0));
      for (int64_t c = c0; c < c1; c += L) {
        V acc = vload<T>(bd + c);
        for (int ky = ky0; ky < ky1; ++ky) {
          const T* in = ring + ((ih0 + ky) % k) * row + iw0 * Ep + c;
          const T* w = wd + int64_t(ky) * k * Ep + c;
          for (int kx = kx0; kx < kx1; ++kx) acc += vload<T>(in + kx * Ep) * vload<T>(w + kx * Ep);
        }
        vstore(out + ow * Ep + c, acc);
      }
    }
  }
  act_inplace<A>(out, g.ow * Ep);
}

// The squeeze-and-excitation's scale per channel from the channel sums of d (count pixels): s = sigmoid(
// w2 se_act(w1 mean + b1) + b2), w1 [R][E], w2 [E][R] as the convs' weights are; padded channels get s = 0.
template <typename T>
void se_scale(int64_t R, int64_t E, int64_t Ep, Act se_act, const double* sums, int64_t count, const T* w1,
              const T* b1, const T* w2, const T* b2, T* s) {
  std::vector<T> mean(static_cast<size_t>(E)), h(static_cast<size_t>(R));
  for (int64_t c = 0; c < E; ++c) mean[c] = static_cast<T>(sums[c] / static_cast<double>(count));
  for (int64_t r = 0; r < R; ++r) {
    T z = b1 ? b1[r] : T(0);
    for (int64_t c = 0; c < E; ++c) z += w1[r * E + c] * mean[c];
    h[r] = act_forward<T>(se_act, z);
  }
  for (int64_t c = 0; c < E; ++c) {
    T z = b2 ? b2[c] : T(0);
    for (int64_t r = 0; r < R; ++r) z += w2[c * R + r] * h[r];
    s[c] = T(1) / (T(1) + std::exp(-z));
  }
  std::fill(s + E, s + Ep, T(0));
}

// we_panels, wp_panels: the 1x1 weights as panels() gives them.
template <Act A, typename T>
void forward_typed(const MbConvGeometry& g, const T* x, const T* we_panels, const T* be, const T* wd, const T* bd,
                   const T* wp_panels, const T* bp, T* y, const MbConvSe<T>& se) {
  constexpr int L = Vec<T>::lanes;
  const int64_t Ep = mbconv_padded(g.e);
  const int k = g.k;
  const bool with_se = g.r > 0;
  // With SE: d [N][OH][OW][Ep] (uninitialized: every value is written before it is read) and its sums per row.
  std::unique_ptr<T[]> d_all(with_se ? new T[static_cast<size_t>(g.n * g.oh * g.ow * Ep)] : nullptr);
  std::vector<T> row_sums(with_se ? static_cast<size_t>(g.n * g.oh * Ep) : 0, T(0));
  // Bands of output rows per image: enough for every thread at small batches, but at least k - s + 1 rows
  // each, so the rows a band recomputes (k - s) stay a minority.
  const int64_t threads = at::get_num_threads();
  const int64_t bands = std::max<int64_t>(
      1, std::min<int64_t>((threads + g.n - 1) / g.n, g.oh / std::max<int64_t>(1, k - g.s + 1)));
  const int64_t band_rows = (g.oh + bands - 1) / bands;
  at::parallel_for(0, g.n * bands, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> ring(static_cast<size_t>(k * g.w * Ep));
    std::vector<T> drow(with_se ? 0 : static_cast<size_t>(g.ow * Ep));
    std::vector<int64_t> slot_row(static_cast<size_t>(k));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / bands, oh0 = (t % bands) * band_rows, oh1 = std::min(g.oh, oh0 + band_rows);
      std::fill(slot_row.begin(), slot_row.end(), int64_t(-1));
      const T* xn = x + n * g.h * g.w * g.c;
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        const int64_t ih0 = oh * g.s - g.p;
        for (int ky = 0; ky < k; ++ky) {
          const int64_t ih = ih0 + ky;
          if (ih < 0 || ih >= g.h || slot_row[ih % k] == ih) continue;
          slot_row[ih % k] = ih;
          T* dst = ring.data() + (ih % k) * g.w * Ep;
          const T* src = xn + ih * g.w * g.c;
          if (g.expand) {
            gemm<T>(g.w, Ep, g.c, src, g.c, we_panels, be, dst, Ep, nullptr, 0);
            act_inplace<A>(dst, g.w * Ep);
          } else {  // the input row itself, its channels padded with zeros
            for (int64_t iw = 0; iw < g.w; ++iw) {
              std::copy(src + iw * g.c, src + (iw + 1) * g.c, dst + iw * Ep);
              std::fill(dst + iw * Ep + g.c, dst + (iw + 1) * Ep, T(0));
            }
          }
        }
        if (with_se) {  // d's row to the buffer, its sums beside it: projected once the scale is known
          T* d = d_all.get() + (n * g.oh + oh) * g.ow * Ep;
          dw_row<A>(g, oh, ring.data(), Ep, wd, bd, d);
          T* acc = row_sums.data() + (n * g.oh + oh) * Ep;
          for (int64_t ow = 0; ow < g.ow; ++ow)
            for (int64_t c = 0; c < Ep; c += L) vstore(acc + c, vload<T>(acc + c) + vload<T>(d + ow * Ep + c));
          continue;
        }
        dw_row<A>(g, oh, ring.data(), Ep, wd, bd, drow.data());
        const T* r = g.residual ? xn + oh * g.w * g.c : nullptr;
        gemm<T>(g.ow, g.co, g.e, drow.data(), Ep, wp_panels, bp, y + (n * g.oh + oh) * g.ow * g.co, g.co, r,
                g.c);
      }
    }
  });
  if (!with_se) return;
  std::vector<T> scale(static_cast<size_t>(g.n * Ep));
  for (int64_t n = 0; n < g.n; ++n) {
    std::vector<double> sums(static_cast<size_t>(Ep), 0.0);  // double: up to 112 x 112 pixels summed
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t c = 0; c < Ep; ++c) sums[c] += row_sums[(n * g.oh + oh) * Ep + c];
    se_scale<T>(g.r, g.e, Ep, se.act, sums.data(), g.oh * g.ow, se.w1, se.b1, se.w2, se.b2, scale.data() + n * Ep);
  }
  // The projection of the scaled d in chunks of whole rows: tall enough for the GEMM's register tiles and the
  // reuse of its weight panels, enough chunks for every thread.
  const int64_t chunk_rows = std::max<int64_t>(
      1, std::min<int64_t>((96 + g.ow - 1) / g.ow, (g.oh * g.n + threads - 1) / threads));
  const int64_t chunks = (g.oh + chunk_rows - 1) / chunk_rows;
  at::parallel_for(0, g.n * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / chunks, oh0 = (t % chunks) * chunk_rows, oh1 = std::min(g.oh, oh0 + chunk_rows);
      const int64_t pixels = (oh1 - oh0) * g.ow;
      T* d = d_all.get() + (n * g.oh + oh0) * g.ow * Ep;
      const T* s = scale.data() + n * Ep;
      for (int64_t m = 0; m < pixels; ++m)
        for (int64_t c = 0; c < Ep; c += L) vstore(d + m * Ep + c, vload<T>(d + m * Ep + c) * vload<T>(s + c));
      const T* r = g.residual ? x + (n * g.h + oh0) * g.w * g.c : nullptr;
      gemm<T>(pixels, g.co, g.e, d, Ep, wp_panels, bp, y + (n * g.oh + oh0) * g.ow * g.co, g.co, r, g.c);
    }
  });
}

void forward(const MbConvGeometry& g, Act act, const Tensor& x, const Tensor& we, const Tensor& be, const Tensor& wd,
             const Tensor& bd, const Tensor& wp, const Tensor& bp, const Tensor& y, const MbConvSeTensors& se) {
  PYCNN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mbconv_forward", [&] {
    using T = scalar_t;
    MbConvSe<T> se_ptrs{};
    if (g.r > 0) {
      se_ptrs = {se.w1.const_data_ptr<T>(), se.b1.defined() ? se.b1.const_data_ptr<T>() : nullptr,
                 se.w2.const_data_ptr<T>(), se.b2.defined() ? se.b2.const_data_ptr<T>() : nullptr, se.act};
    }
    cpu::dispatch_act(act, [&](auto A_) {
      constexpr Act A = decltype(A_)::value;
      forward_typed<A, T>(g, x.const_data_ptr<T>(), we.defined() ? we.const_data_ptr<T>() : nullptr,
                          be.defined() ? be.const_data_ptr<T>() : nullptr, wd.const_data_ptr<T>(),
                          bd.const_data_ptr<T>(), wp.const_data_ptr<T>(), bp.const_data_ptr<T>(),
                          y.mutable_data_ptr<T>(), se_ptrs);
    });
  });
}

Tensor panels(const Tensor& w, int64_t cols) {
  Tensor out;
  PYCNN_DISPATCH_FLOATING_TYPES(w.scalar_type(), "mbconv_forward", [&] { out = pack_panels<scalar_t>(w, cols); });
  return out;
}

}  // namespace detail_mb

extern const MbConvKernels kernels = {detail_mb::panels, detail_mb::forward};
