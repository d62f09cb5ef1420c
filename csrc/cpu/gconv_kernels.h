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
// with a register-blocked micro-kernel: P (8, 12, or 14 in avx512) pixels x T channels of accumulators held as GCC
// vectors, the B row (T channels, zero-padded in the weight copies so T needs no tail) loaded once per k and
// broadcast-multiplied by P scalars. The forward reads its input through a zero-padded stage (below); the input
// gradient at strides above 1 reads a row of zeros for pixels in the padding instead of branching.

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

// What tiles of p pixels cost on a dimension of `len`: the tiles it takes times (p + 2), a tile's fixed work
// counted as two pixels' (the B row and the broadcast).
inline int64_t tile_cost(int64_t len, int p) { return (len + p - 1) / p * (p + 2); }

// Pixels (rows of the micro-kernel) per tile: 8 or 12 (12 + 2 of the 16 AVX2 registers hold
// accumulators, the B row and the broadcast), whichever costs less on a dimension of `len`.
int tile_rows(int64_t len) { return tile_cost(len, 8) < tile_cost(len, 12) ? 8 : 12; }

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
  // Applied to channels [c0, c0 + len) of each output row (n, oh) of raw conv values in y (while they are in
  // cache: one group's, or a packed block's); null: none.
  void (*epilogue)(const GConvGeometry&, const FwdPtrs&, int64_t n, int64_t oh, int64_t c0, int64_t len);
};

// y = act(y * scale + bias [+ res]) over channels [c0, c0 + len) of one output row, after saving the raw y,
// one vector of channels at a time (for_vectors); scale and bias are never null here (ones / zeros stand in).
template <typename acc, Act A>
void epilogue_row(const GConvGeometry& g, const FwdPtrs<acc>& d, int64_t n, int64_t oh, int64_t c0, int64_t len) {
  using V = typename Vec<acc>::type;
  const acc* sc = d.scale + c0;
  const acc* bi = d.bias + c0;
  for (int64_t ow = 0; ow < g.ow; ++ow) {
    const int64_t base = ((n * g.oh + oh) * g.ow + ow) * g.c_out + c0;
    acc* y = d.y + base;
    const acc* r = d.res != nullptr ? d.res + base : nullptr;
    if (d.saved) std::memcpy(d.saved + base, y, sizeof(acc) * len);
    auto row = [&](auto R) {
      for_vectors<acc>(len, [&](int64_t j, int k, auto tail) {
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

// The forward reads its input through a stage: per work item, the k input rows it reads, one group's channels,
// copied into [slots][ceil(Cg / B)][padded width][B] (slots: k rounded up to a power of two; zero columns for the
// padding and past the row's end, zero channels past Cg in the last block). The slots are a ring (input row ih in
// slot ih mod slots) and the work items run group by group, image by image, row by row: the next output row reuses
// the k - (row stride) rows it shares with the previous one (before, each input row was copied k times, a fifth of
// a forward's time at 16 channels a group). Every input pixel of a tile is then B values apart, a constant, and the
// padding is data: the micro-kernels address a tile's pixels as one base pointer plus constant offsets, without
// per-pixel bounds checks, and the row-taps kernel below reuses one broadcast for several taps. Strides 1 and 2
// are compiled with the stride constant, the others read it.
constexpr int kStageBlock = 16;

struct Stage {
  int64_t blocks, cols, slots;  // channel blocks of kStageBlock, padded width, rows (a power of two >= k)
  int64_t size() const { return slots * blocks * cols * kStageBlock; }
};

// Columns a forward's stage holds: every input column a tile's pixels read (the last tile's pixels past OW too).
inline Stage forward_stage(const GConvGeometry& g, int P) {
  const int64_t last = (g.ow + P - 1) / P * P - 1;
  int64_t slots = 1;
  while (slots < g.k) slots *= 2;  // a row's slot is ih & (slots - 1): no division per work item
  return {(g.cg + kStageBlock - 1) / kStageBlock, std::max(g.w + 2 * g.pw, last * g.sw + g.k), slots};
}

// c[p] += sum_{k < K} a[p * step + k] * b[k][0..T) (K <= kStageBlock); Kn, when positive, is K as a constant
// (a whole block), else K is read from kn (the last block of a group whose width is no multiple of it).
template <typename acc, int P, int T, int Kn>
PYCNN_ALWAYS_INLINE void micro_staged(vec_t<acc, T> (&c)[P], const acc* __restrict__ a, int64_t step,
                                      const acc* __restrict__ b, int64_t ldb, int kn) {
  const int K = Kn > 0 ? Kn : kn;
#pragma GCC unroll 16
  for (int k = 0; k < K; ++k) {
    const vec_t<acc, T> bv = load_vec<acc, T>(b + k * ldb);
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) c[p] += a[p * step + k] * bv;
  }
}

// The K taps of one kernel row together, at stride S: input pixel j of the tile (stage column ow0 * S + j) is
// read once per channel, broadcast, and multiplied by the weight vector of each tap kw that reaches an output
// pixel p of the tile from it (j = p * S + kw), so a broadcast feeds up to ceil(K / S) multiply-adds instead of one:
// with one vector of output channels (16 a group) the tap-by-tap kernel above loads once per multiply-add,
// and loads bound it. The K weight vectors of a channel are loaded once for the tile's P pixels. Only where
// vectors are registers with FMA (the avx2 and avx512 variants; in the baseline's pairs of SSE registers the
// unrolled body gains little and costs most of the file's compile time).
#ifdef PYCNN_CPU_FMA
constexpr bool kRowTaps = true;
#else
constexpr bool kRowTaps = false;
#endif

template <typename acc, int P, int T, int K, int S, int Kn>
PYCNN_ALWAYS_INLINE void micro_row_taps(vec_t<acc, T> (&c)[P], const acc* __restrict__ a, const acc* __restrict__ b,
                                        int64_t ldb, int64_t tap_stride, int kn) {
  const int KC = Kn > 0 ? Kn : kn;
#pragma GCC unroll 16
  for (int k = 0; k < KC; ++k) {
    vec_t<acc, T> wv[K];
#pragma GCC unroll 8
    for (int kw = 0; kw < K; ++kw) wv[kw] = load_vec<acc, T>(b + kw * tap_stride + k * ldb);
#pragma GCC unroll 32
    for (int j = 0; j < (P - 1) * S + K; ++j) {
      vec_t<acc, T> xb = a[j * kStageBlock + k] - vec_t<acc, T>{};  // a broadcast (x - 0 is x, -0 too)
      if constexpr (sizeof(xb) >= 16 && sizeof(xb) <= kVectorBytes) in_register(xb);
#pragma GCC unroll 8
      for (int kw = 0; kw < K; ++kw) {
        if ((j - kw) % S == 0 && j - kw >= 0 && (j - kw) / S < P) c[(j - kw) / S] += xb * wv[kw];
      }
    }
  }
}

// Work items q = (group, n, oh), through `stage` (forward_stage's size, zero-filled by the caller; its slots
// hold the input rows of `staged`, one (group, n, ih) key a slot, -1: none).
template <typename acc, int T, int P, int S>
PYCNN_ALWAYS_INLINE void forward_items(const Args& a, const FwdPtrs<acc>& d, int64_t q0, int64_t q1, acc* stage,
                                       const Stage& st, int64_t* staged) {
  constexpr int B = kStageBlock;
  const GConvGeometry& g = a.g;
  const int64_t sw = S > 0 ? S : g.sw, row_size = st.blocks * st.cols * B;
  // q's (group, n, oh), advanced by one per item (divisions cost a tenth of a small item's time)
  int64_t oh = q0 % g.oh, n = q0 / g.oh % g.n, grp = q0 / (g.oh * g.n);
  for (int64_t q = q0; q < q1; ++q, ++oh) {
    if (oh == g.oh) oh = 0, ++n;
    if (n == g.n) n = 0, ++grp;
    const int64_t ih0 = oh * g.sh - g.ph;
    auto inside = [&](int64_t kh) { return ih0 + kh >= 0 && ih0 + kh < g.h; };  // rows in the padding add nothing
    auto slot = [&](int64_t kh) { return (ih0 + kh) & (st.slots - 1); };  // an input row's (rows inside: ih >= 0)
    for (int64_t kh = 0; kh < g.k; ++kh) {
      if (!inside(kh)) continue;
      const int64_t ih = ih0 + kh, key = (grp * g.n + n) * g.h + ih;
      if (staged[slot(kh)] == key) continue;
      staged[slot(kh)] = key;
      const acc* src = d.x + (n * g.h + ih) * g.w * g.c_in + grp * g.cg;
      acc* dst = stage + slot(kh) * row_size + g.pw * B;
      for (int64_t cb = 0; cb < st.blocks; ++cb) {
        const int64_t len = std::min<int64_t>(B, g.cg - cb * B);
        acc* to = dst + cb * st.cols * B;
        const acc* from = src + cb * B;
        if (len == B) {
          for (int64_t iw = 0; iw < g.w; ++iw) vstore(to + iw * B, load_vec<acc, B>(from + iw * g.c_in));
        } else {
          for (int64_t iw = 0; iw < g.w; ++iw) std::copy_n(from + iw * g.c_in, len, to + iw * B);
        }
      }
    }
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += P) {
      for (int64_t co0 = 0; co0 < g.cog; co0 += T) {
        vec_t<acc, T> c[P] = {};
        for (int64_t kh = 0; kh < g.k; ++kh) {
          if (!inside(kh)) continue;
          for (int64_t cb = 0; cb < st.blocks; ++cb) {
            const int kn = static_cast<int>(std::min<int64_t>(B, g.cg - cb * B));
            const acc* in = stage + slot(kh) * row_size + (cb * st.cols + ow0 * sw) * B;
            const acc* w = d.wk + ((grp * g.taps() + kh * g.k) * g.cg + cb * B) * a.ldw + co0;
            if constexpr (kRowTaps && S > 0) {
              if (g.k == 3) {
                if (kn == B) micro_row_taps<acc, P, T, 3, S, B>(c, in, w, a.ldw, g.cg * a.ldw, kn);
                else micro_row_taps<acc, P, T, 3, S, 0>(c, in, w, a.ldw, g.cg * a.ldw, kn);
                continue;
              }
            }
            for (int64_t kw = 0; kw < g.k; ++kw, in += B, w += g.cg * a.ldw) {
              if (kn == B) micro_staged<acc, P, T, B>(c, in, sw * B, w, a.ldw, kn);
              else micro_staged<acc, P, T, 0>(c, in, sw * B, w, a.ldw, kn);
            }
          }
        }
        const int64_t np = std::min<int64_t>(P, g.ow - ow0), nc = std::min<int64_t>(T, g.cog - co0);
        acc* out = d.y + ((n * g.oh + oh) * g.ow + ow0) * g.c_out + grp * g.cog + co0;
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {  // constant indices: c stays in registers (a loop to np spilled it)
          if (p < np) store_cols<false, acc, T>(out + p * g.c_out, c[p], nc);
        }
      }
    }
    if (d.epilogue) d.epilogue(g, d, n, oh, grp * g.cog, g.cog);
  }
}

// ---------------------------------------------------------------------------- narrow groups, packed ----
//
// Groups of C input and C output channels with C smaller than a register (ResNeXt's 4 and 8 channels a group):
// a tile of one group's C columns would leave most lanes idle. Here one register of L lanes holds L / C whole
// groups (lane m: channel m of the block, input or output), and the products are formed lane by lane, C of
// them per input pixel, each accumulated apart and moved to its output lane once per tile:
//   out = sum_{r < C} rot_r(a_r),  a_r = sum_tap x[pixel @ tap] * wr[tap][r]  (lane-wise)
//   rot_r(v)[l] = v[(l / C) * C + (l % C + r) % C],  wr[tap][r][m] = w[(m / C) * C + (m % C - r) mod C][m % C][tap]
// (channel indices within the block of L, whose first channel b * L is left out; lane m of a_r holds input
// channel m % C's share of the output channel r places before it in the group). The forward's and the input
// gradient's inner loop is one load of the input pixel and C multiply-adds with the tap's C weight vectors, no
// shuffle; C * P accumulators fill the register file. Only where the variant shuffles registers
// (kVectorShuffles) and in float32.

// Whether the packed kernel runs this geometry (C = g.cg).
template <typename acc>
bool packed_groups_apply(const GConvGeometry& g) {
  constexpr int L = Vec<acc>::lanes;
  return kVectorShuffles && std::is_same_v<acc, float> && g.cg == g.cog && g.cg > 1 && g.cg < L &&
         L % g.cg == 0 && g.c_out % L == 0;
}

template <int C, int R, typename V, std::size_t... I>
PYCNN_ALWAYS_INLINE V rotated_in_groups(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, ((I / C) * C + (I % C + R) % C)...);
}

// sum_r rot_r(a[r][p]) for r < C.
template <typename acc, int C, int P, std::size_t... R>
PYCNN_ALWAYS_INLINE typename Vec<acc>::type gathered_groups(typename Vec<acc>::type (&a)[C][P], int p,
                                                           std::index_sequence<R...>) {
  return (rotated_in_groups<C, int(R)>(a[R][p], std::make_index_sequence<Vec<acc>::lanes>{}) + ...);
}

// The packed weight layout [C_out / L, KK, C, L], the one fact the forward, the input gradient and the weight
// gradient share: f(packed, kernel) for each weight, `packed` its index there and `kernel` its index in
// gconv_kernel_weight's [G, KK, C, C] ([in][out]): lane m of [b][tap][r] is the weight from input channel i = m % C
// to output channel (i - r) mod C of group b * L / C + m / C.
template <typename acc, int C, typename F>
void for_packed_weights(const GConvGeometry& g, F f) {
  constexpr int L = Vec<acc>::lanes;
  const int64_t blocks = g.c_out / L, kk = g.taps();
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t tap = 0; tap < kk; ++tap)
      for (int r = 0; r < C; ++r)
        for (int m = 0; m < L; ++m) {
          const int64_t grp = b * (L / C) + m / C, i = m % C;
          f(((b * kk + tap) * C + r) * L + m, ((grp * kk + tap) * C + i) * C + (i - r + C) % C);
        }
}

// wk [G, KK, C, C] (gconv_kernel_weight) -> wr [C_out / L, KK, C, L].
template <typename acc, int C>
Tensor packed_group_weight(const Tensor& wk, const GConvGeometry& g) {
  Tensor out = at::zeros({g.c_out / Vec<acc>::lanes, g.taps(), C, Vec<acc>::lanes}, wk.options());
  const acc* w = wk.const_data_ptr<acc>();
  acc* o = out.data_ptr<acc>();
  for_packed_weights<acc, C>(g, [&](int64_t packed, int64_t kernel) { o[packed] = w[kernel]; });
  return out;
}

// Pixels a tile: C * P accumulators, the tap's C weight vectors (GCC keeps them in registers for the tile's
// pixels) and the input pixel in avx512's 32 registers or avx2's 16. (C = 8 in two passes of 4 rotations and
// 6 pixels each was slower than one of 2 pixels.)
template <int C>
constexpr int packed_tile_rows() { return ((kVectorBytes == 64 ? 32 : 16) - C - 1) / C; }

// One row of `len` output pixels of a block of L channels (out: its first pixel, `step` apart) from the block's
// taps wr [KK, C, L]: `row(kh)` is the input row that kernel row kh reads (null: in the padding) and
// `col(row, kw, x)` the input pixel tap kw of output pixel x reads in it (null: in the padding). The forward and
// the input gradient (the transposed convolution) differ only in these two.
template <typename acc, int C, typename Row, typename Col>
PYCNN_ALWAYS_INLINE void packed_row(const GConvGeometry& g, const acc* wr, const acc* zeros, int64_t len, acc* out,
                                    int64_t step, Row row, Col col) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes, P = packed_tile_rows<C>();
  for (int64_t x0 = 0; x0 < len; x0 += P) {
    V a[C][P] = {};
    for (int64_t kh = 0; kh < g.k; ++kh) {
      const acc* in = row(kh);
      if (in == nullptr) continue;
      for (int64_t kw = 0; kw < g.k; ++kw) {
        const acc* w = wr + (kh * g.k + kw) * C * L;
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {
          const acc* px = x0 + p < len ? col(in, kw, x0 + p) : nullptr;
          V xv = vload<acc>(px != nullptr ? px : zeros);  // pixels in the padding read zeros, no branch
          in_register(xv);
#pragma GCC unroll 8
          for (int r = 0; r < C; ++r) a[r][p] += xv * vload<acc>(w + r * L);
        }
      }
    }
    const int64_t np = std::min<int64_t>(P, len - x0);
    for (int64_t p = 0; p < np; ++p) {
      vstore(out + (x0 + p) * step, gathered_groups<acc, C, P>(a, int(p), std::make_index_sequence<C>{}));
    }
  }
}

// Work items q = (n, oh, block of L output channels).
template <typename acc, int C>
PYCNN_ALWAYS_INLINE void forward_packed_items(const GConvGeometry& g, const FwdPtrs<acc>& d, int64_t q0, int64_t q1) {
  constexpr int L = Vec<acc>::lanes;
  const int64_t blocks = g.c_out / L;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t b = q % blocks, r = q / blocks, oh = r % g.oh, n = r / g.oh;
    auto row = [&](int64_t kh) -> const acc* {
      const int64_t ih = oh * g.sh - g.ph + kh;
      return ih >= 0 && ih < g.h ? d.x + (n * g.h + ih) * g.w * g.c_in + b * L : nullptr;
    };
    auto col = [&](const acc* in, int64_t kw, int64_t ow) -> const acc* {
      const int64_t iw = ow * g.sw - g.pw + kw;
      return iw >= 0 && iw < g.w ? in + iw * g.c_in : nullptr;
    };
    packed_row<acc, C>(g, d.wk + b * g.taps() * C * L, d.zeros, g.ow,
                       d.y + (n * g.oh + oh) * g.ow * g.c_out + b * L, g.c_out, row, col);
    if (d.epilogue) d.epilogue(g, d, n, oh, b * L, L);
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

// The packed kernel's input gradient: work items q = (n, ih, block of L input channels); wr: the transposed
// taps [G, KK, Cog, Cg] packed as the forward's (packed_group_weight).
template <typename acc, int C>
PYCNN_ALWAYS_INLINE void dgrad_packed_items(const GConvGeometry& g, const DgradPtrs<acc>& d, int64_t q0, int64_t q1) {
  constexpr int L = Vec<acc>::lanes;
  const int64_t blocks = g.c_in / L, sh = g.sh, sw = g.sw;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t b = q % blocks, r = q / blocks, ih = r % g.h, n = r / g.h;
    auto row = [&](int64_t kh) -> const acc* {
      const int64_t t = ih + g.ph - kh;
      return t >= 0 && t % sh == 0 && t / sh < g.oh ? d.dc + (n * g.oh + t / sh) * g.ow * g.c_out + b * L : nullptr;
    };
    auto col = [&](const acc* in, int64_t kw, int64_t iw) -> const acc* {
      const int64_t u = iw + g.pw - kw;
      return u >= 0 && u % sw == 0 && u / sw < g.ow ? in + u / sw * g.c_out : nullptr;
    };
    packed_row<acc, C>(g, d.wt + b * g.taps() * C * L, d.zeros, g.w, d.dx + (n * g.h + ih) * g.w * g.c_in + b * L,
                       g.c_in, row, col);
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

// The weight gradients sweep output rows in sub-blocks small enough to stay in the L1 cache while every (group,
// tap, tile) sweeps them: about 4096 values of x and dc of a pixel's group channels (16 KB in float32, counted at
// the output's width: at stride 2 the x rows are twice as wide; at 16384, sized for L2, the sweeps ran 1.06-1.26x
// slower, 8x64x56x56 the most).
inline int64_t wgrad_sub_rows(const GConvGeometry& g) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.ow * (g.cg + g.cog)));
}

// dw += the contributions of output rows [r0, r1) (a row is one (n, oh)), in sub-blocks (wgrad_sub_rows).
template <typename acc, int T, int P>
PYCNN_ALWAYS_INLINE void wgrad_rows(const Args& a, const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
  const GConvGeometry& g = a.g;
  const int64_t sub = wgrad_sub_rows(g);
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

// The weight gradient of 3x3 convs with the three taps of a kernel row together: per output pixel, its dc vector
// (T output channels) is loaded once and multiplied into 3 x 8 accumulators (8 input channels of each of the three
// input pixels it reads in that row; taps in the padding skipped, not multiplied by zero, so that an infinite dc
// gives no NaN the reference lacks), where wgrad_rows loads it once per tap, sweeping the rows three times as often.
// 24 accumulators, dc and a broadcast: only with 32 vector registers
// (avx512), and for groups of a multiple of 8 input channels (RegNet's, ResNeXt's 16 and 32 in float32: its 8 run the
// packed kernel; wgrad_rows does the rest).
constexpr int kWgradTapChannels = 8;
constexpr bool kWgradRowTaps = kVectorBytes == 64;

template <typename acc, int T>
PYCNN_ALWAYS_INLINE void wgrad_row_taps(const Args& a, const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
  constexpr int P = kWgradTapChannels, K = 3;
  const GConvGeometry& g = a.g;
  const int64_t sub = wgrad_sub_rows(g);
  // output columns [ow_in, ow_out) read all three taps inside the image; the others check each tap
  const int64_t ow_in = std::max<int64_t>(0, floor_div(g.pw + g.sw - 1, g.sw));
  const int64_t ow_out = std::max(ow_in, std::min<int64_t>(g.ow, floor_div(g.w - 1 + g.pw - (K - 1), g.sw) + 1));
  for (int64_t s0 = r0; s0 < r1; s0 += sub) {
    const int64_t s1 = std::min(r1, s0 + sub);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      for (int64_t kh = 0; kh < K; ++kh) {
        for (int64_t ci0 = 0; ci0 < g.cg; ci0 += P) {
          for (int64_t co0 = 0; co0 < g.cog; co0 += T) {
            vec_t<acc, T> c[K][P] = {};
            for (int64_t r = s0; r < s1; ++r) {
              const int64_t oh = r % g.oh, n = r / g.oh, ih = oh * g.sh - g.ph + kh;
              if (ih < 0 || ih >= g.h) continue;
              const acc* xrow = d.x + (n * g.h + ih) * g.w * g.c_in + grp * g.cg + ci0;
              const acc* dcrow = d.dc + r * g.ow * g.c_out + grp * g.cog + co0;
              auto pixel = [&](int64_t ow, auto checked) {
                const vec_t<acc, T> dv = load_vec<acc, T>(dcrow + ow * g.c_out);
#pragma GCC unroll 4
                for (int kw = 0; kw < K; ++kw) {
                  const int64_t iw = ow * g.sw - g.pw + kw;
                  if (decltype(checked)::value && (iw < 0 || iw >= g.w)) continue;
                  const acc* __restrict__ xp = xrow + iw * g.c_in;
#pragma GCC unroll 8
                  for (int i = 0; i < P; ++i) c[kw][i] += xp[i] * dv;
                }
              };
              for (int64_t ow = 0; ow < std::min(ow_in, g.ow); ++ow) pixel(ow, std::true_type{});
              for (int64_t ow = ow_in; ow < ow_out; ++ow) pixel(ow, std::false_type{});
              for (int64_t ow = ow_out; ow < g.ow; ++ow) pixel(ow, std::true_type{});
            }
            const int64_t nc = std::min<int64_t>(T, g.cog - co0);
#pragma GCC unroll 4
            for (int kw = 0; kw < K; ++kw) {
#pragma GCC unroll 8
              for (int i = 0; i < P; ++i) {
                store_cols<true, acc, T>(d.dw + ((grp * g.taps() + kh * K + kw) * g.cg + ci0 + i) * g.cog + co0, c[kw][i],
                                         nc);
              }
            }
          }
        }
      }
    }
  }
}

// The packed kernel's weight gradient, as [blocks, KK, C, L]: lane m of [b][tap][r] is the gradient of the weight
// from input channel m % C to output channel (m % C - r) mod C of group m / C of block b, so
//   dw[b][tap][r] += x[pixel @ tap] * rot_{C - r}(dc[pixel])  (lane-wise)
// with each output pixel's C rotations of dc made once for the taps of a kernel row (KC at a time: KC * C
// accumulators, C rotations and the input pixel in the registers).
template <int C>
constexpr int packed_wgrad_taps() { return std::min(3, ((kVectorBytes == 64 ? 32 : 16) - C - 1) / C); }

template <typename acc, int C, std::size_t... R>
PYCNN_ALWAYS_INLINE void rotations_back(typename Vec<acc>::type v, typename Vec<acc>::type (&out)[C],
                                        std::index_sequence<R...>) {
  ((out[R] = rotated_in_groups<C, (C - int(R)) % C>(v, std::make_index_sequence<Vec<acc>::lanes>{})), ...);
}

// dw (packed, above) += the contributions of output rows [r0, r1), in sub-blocks of rows small enough to stay
// in cache while every (block, kernel row) sweeps them.
template <typename acc, int C>
void wgrad_packed_rows(const GConvGeometry& g, const acc* x, const acc* dc, acc* dw, int64_t r0, int64_t r1) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes, KC = packed_wgrad_taps<C>();
  static_assert(KC >= 1);
  const int64_t blocks = g.c_out / L;
  const int64_t sub = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, g.ow * (g.c_in + g.c_out)));
  for (int64_t s0 = r0; s0 < r1; s0 += sub) {
    const int64_t s1 = std::min(r1, s0 + sub);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t kh = 0; kh < g.k; ++kh) {
        for (int64_t kw0 = 0; kw0 < g.k; kw0 += KC) {
          const int64_t taps = std::min<int64_t>(KC, g.k - kw0);
          V a[KC][C] = {};
          for (int64_t r = s0; r < s1; ++r) {
            const int64_t oh = r % g.oh, n = r / g.oh, ih = oh * g.sh - g.ph + kh;
            if (ih < 0 || ih >= g.h) continue;
            const acc* xr = x + (n * g.h + ih) * g.w * g.c_in + b * L;
            const acc* dr = dc + r * g.ow * g.c_out + b * L;
            for (int64_t ow = 0; ow < g.ow; ++ow) {
              V rot[C];
              rotations_back<acc, C>(vload<acc>(dr + ow * g.c_out), rot, std::make_index_sequence<C>{});
#pragma GCC unroll 4
              for (int t = 0; t < KC; ++t) {
                const int64_t iw = ow * g.sw - g.pw + kw0 + t;
                // taps in the padding add nothing (not zero times dconv: a NaN there stays out of the weight
                // gradient, as in the per-group kernel and PyTorch's)
                if (t >= taps || iw < 0 || iw >= g.w) continue;
                V xv = vload<acc>(xr + iw * g.c_in);
                in_register(xv);
#pragma GCC unroll 8
                for (int q = 0; q < C; ++q) a[t][q] += xv * rot[q];
              }
            }
          }
          for (int64_t t = 0; t < taps; ++t) {
            acc* out = dw + ((b * g.taps() + kh * g.k + kw0 + t) * C) * L;
            for (int q = 0; q < C; ++q) vstore(out + q * L, a[t][q] + vload<acc>(out + q * L));
          }
        }
      }
    }
  }
}

// packed [C_out / L, KK, C, L] (wgrad_packed_rows) -> [G, KK, Cg, Cog]: packed_group_weight's inverse.
template <typename acc, int C>
Tensor unpacked_group_weight(const Tensor& packed, const GConvGeometry& g) {
  Tensor out = at::zeros({g.groups, g.taps(), C, C}, packed.options());
  const acc* w = packed.const_data_ptr<acc>();
  acc* o = out.data_ptr<acc>();
  for_packed_weights<acc, C>(g, [&](int64_t packed_index, int64_t kernel) { o[kernel] = w[packed_index]; });
  return out;
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

// Calls body(std::integral_constant<int, C>{}) for C = g.cg, where packed_groups_apply.
template <typename acc, typename Body>
void with_packed_groups(const GConvGeometry& g, Body body) {
  if (g.cg == 2) return body(std::integral_constant<int, 2>{});
  if (g.cg == 4) return body(std::integral_constant<int, 4>{});
  if constexpr (Vec<acc>::lanes > 8) {
    if (g.cg == 8) return body(std::integral_constant<int, 8>{});
  }
  TORCH_INTERNAL_ASSERT(false, "pycnn.gconv: no packed kernel for ", g.cg, " channels a group");
}

// gconv_kernel_weight's layout (padded) -> the packed kernel's, where packed_groups_apply.
template <typename acc>
Tensor packed_taps(const GConvGeometry& g, const Tensor& taps) {
  Tensor wr;
  with_packed_groups<acc>(g, [&](auto C_) { wr = packed_group_weight<acc, decltype(C_)::value>(taps, g); });
  return wr;
}

// The packed kernel's forward or input gradient: body(C constant, the packed taps wr, q0, q1) over the work
// items [q0, q1) of `rows` rows of `row_len` pixels, a block of L channels each.
template <typename acc, typename Body>
void run_packed(const GConvGeometry& g, const Tensor& wr, int64_t rows, int64_t row_len, Body body) {
  with_packed_groups<acc>(g, [&](auto C_) {
    constexpr int C = decltype(C_)::value, L = Vec<acc>::lanes;
    at::parallel_for(0, rows * (g.c_out / L), grain_for(row_len * L * C * g.taps()),
                     [&](int64_t q0, int64_t q1) { body(C_, wr.const_data_ptr<acc>(), q0, q1); });
  });
}

// The forward's pixels per tile: tile_rows' 8 or 12, or, with 32 vector registers (avx512), 14 where that costs
// less by tile_cost (rows of 13, 14, 25-28, 37-42, 49-56, ...; 14 and 28 got tiles of 8 before, 56 of 8 or 12).
// 14 accumulators, three weight vectors and a broadcast are 18 registers.
constexpr bool kTile14 = kVectorBytes == 64;

inline int forward_tile_rows(int64_t len) {
  const int p = tile_rows(len);
  return kTile14 && tile_cost(len, 14) < tile_cost(len, p) ? 14 : p;
}

// forward_items over all work items of g; d.wk has ldw columns (cog padded to tile_cols).
template <typename acc>
void run_staged(const GConvGeometry& g, Act act, const FwdPtrs<acc>& d, int64_t ldw) {
  const Args a{g, act, ldw};
  auto run = [&](auto T_, auto P_) {
    constexpr int T = decltype(T_)::value, P = decltype(P_)::value;
    const Stage st = forward_stage(g, P);
    at::parallel_for(0, g.n * g.oh * g.groups, grain_for(g.ow * g.cog * g.cg * g.taps()), [&](int64_t q0, int64_t q1) {
      std::vector<acc> stage(st.size(), acc(0));
      std::vector<int64_t> staged(st.slots, -1);
      if (g.sw == 1) forward_items<acc, T, P, 1>(a, d, q0, q1, stage.data(), st, staged.data());
      else if (kRowTaps && g.sw == 2) forward_items<acc, T, P, 2>(a, d, q0, q1, stage.data(), st, staged.data());
      else forward_items<acc, T, P, 0>(a, d, q0, q1, stage.data(), st, staged.data());
    });
  };
  const int t = tile_cols<acc>(g.cog), p = forward_tile_rows(g.ow);
  if constexpr (kTile14) {
    if (p == 14) return dispatch_cols<acc>(t, [&](auto T_) { run(T_, std::integral_constant<int, 14>{}); });
  }
  dispatch_tile<acc>(t, p, run);
}

// The forward's weight: the taps [G, k*k, Cg, Cog] with Cog padded to the tile's columns, or packed
// (packed_groups_apply).
template <typename acc>
Tensor forward_weight(const GConvGeometry& g, const Tensor& weight) {
  const Tensor wk =
      pad_columns(gconv_kernel_weight(weight, g, false, c10::CppTypeToScalarType<acc>::value), tile_cols<acc>(g.cog));
  return packed_groups_apply<acc>(g) ? packed_taps<acc>(g, wk) : wk;
}

// The raw convolution (and, with an epilogue, the output) in NHWC and the accumulation type; wk: forward_weight's.
template <typename acc>
void run_forward(const GConvGeometry& g, Act act, const Tensor& x, const Tensor& wk, const Tensor& scale,
                 const Tensor& bias, const Tensor& res, const Tensor& y, const Tensor& saved) {
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
  if (packed_groups_apply<acc>(g)) {
    return run_packed<acc>(g, wk, g.n * g.oh, g.ow, [&](auto C_, const acc* wr, int64_t q0, int64_t q1) {
      FwdPtrs<acc> dp = d;
      dp.wk = wr;
      forward_packed_items<acc, decltype(C_)::value>(g, dp, q0, q1);
    });
  }
  run_staged<acc>(g, act, d, wk.size(-1));
}

// The input gradient of a stride-1 conv is the forward conv of dconv with the taps flipped (weights transposed
// per group) and the padding k - 1 - p: the geometry of that conv.
inline GConvGeometry stride1_dgrad_as_forward(const GConvGeometry& g) {
  return {g.n, g.c_out, g.oh, g.ow, g.c_in, g.h, g.w, g.groups, g.cog, g.cg, g.k, 1, 1, g.k - 1 - g.ph, g.k - 1 - g.pw};
}

template <typename acc>
void run_dgrad(const GConvGeometry& g, const Tensor& dc, const Tensor& weight, const Tensor& dx) {
  const int t = tile_cols<acc>(g.cg);
  const Tensor wt = pad_columns(gconv_kernel_weight(weight, g, true, dc.scalar_type()), t);
  std::vector<acc> zeros(std::max(g.c_in, g.c_out) + 16, acc(0));
  DgradPtrs<acc> d{dc.const_data_ptr<acc>(), wt.const_data_ptr<acc>(), dx.data_ptr<acc>(), zeros.data()};
  if (packed_groups_apply<acc>(g)) {
    return run_packed<acc>(g, packed_taps<acc>(g, wt), g.n * g.h, g.w, [&](auto C_, const acc* wr, int64_t q0, int64_t q1) {
      DgradPtrs<acc> dp = d;
      dp.wt = wr;
      dgrad_packed_items<acc, decltype(C_)::value>(g, dp, q0, q1);
    });
  }
  if (g.sh == 1 && g.sw == 1 && g.ph < g.k && g.pw < g.k) {
    const Tensor flipped = wt.flip({1}).contiguous();  // tap (kh, kw) -> (k-1-kh, k-1-kw)
    FwdPtrs<acc> f{d.dc, flipped.const_data_ptr<acc>(), nullptr, nullptr, nullptr, d.dx, nullptr, d.zeros, nullptr};
    return run_staged<acc>(stride1_dgrad_as_forward(g), Act::None, f, flipped.size(-1));
  }
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
  if (packed_groups_apply<acc>(g)) {  // (C_out = C_in: per is the packed size too)
    Tensor out;
    with_packed_groups<acc>(g, [&](auto C_) {
      constexpr int C = decltype(C_)::value;
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          wgrad_packed_rows<acc, C>(g, x.const_data_ptr<acc>(), dc, partial.data_ptr<acc>() + c * per,
                                    rows * c / chunks, rows * (c + 1) / chunks);
        }
      });
      out = unpacked_group_weight<acc, C>(partial.sum(0), g);
    });
    return out;
  }
  const Args a{g, Act::None, g.cog};
  auto over_chunks = [&](auto rows_kernel) {
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        WgradPtrs<acc> d{x.const_data_ptr<acc>(), dc, partial.data_ptr<acc>() + c * per};
        rows_kernel(d, rows * c / chunks, rows * (c + 1) / chunks);
      }
    });
  };
  if constexpr (kWgradRowTaps) {
    if (g.k == 3 && g.cg % kWgradTapChannels == 0) {
      dispatch_cols<acc>(tile_cols<acc>(g.cog), [&](auto T_) {
        over_chunks([&](const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
          wgrad_row_taps<acc, decltype(T_)::value>(a, d, r0, r1);
        });
      });
      return partial.sum(0);
    }
  }
  dispatch_tile<acc>(tile_cols<acc>(g.cog), tile_rows(g.cg), [&](auto T_, auto P_) {
    over_chunks([&](const WgradPtrs<acc>& d, int64_t r0, int64_t r1) {
      wgrad_rows<acc, decltype(T_)::value, decltype(P_)::value>(a, d, r0, r1);
    });
  });
  return partial.sum(0);
}

// ------------------------------------------------------------------------ entry points ----

Tensor forward_weight_entry(const GConvGeometry& g, const Tensor& weight, at::ScalarType dtype) {
  Tensor out;
  PYCNN_DISPATCH_FLOATING_TYPES(dtype, "gconv_forward_cpu", [&] { out = forward_weight<scalar_t>(g, weight); });
  return out;
}

void forward_entry(const GConvGeometry& g, Act act, const Tensor& x, const Tensor& wk, const Tensor& scale,
                   const Tensor& bias, const Tensor& res, const Tensor& y, const Tensor& saved) {
  PYCNN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gconv_forward_cpu", [&] {
    run_forward<scalar_t>(g, act, x, wk, scale, bias, res, y, saved);
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

extern const GConvKernels kernels = {&forward_weight_entry, &forward_entry, &dgrad_entry, &wgrad_entry};
