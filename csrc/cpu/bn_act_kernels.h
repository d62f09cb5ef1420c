// CPU kernels of pycnn::bn_act_* (both layouts). Not a normal header: cpu/isa_kernels.h compiles it once
// per variant (namespaces pycnn::bn_base, bn_avx2, bn_avx512), and bn_act.cpp calls the one that runs
// through its table of entry points (`kernels` at the end, declared in cpu/bn_act_entries.h).
//
// The tensor is visited as contiguous spans: in NCHW a span is one (n, c) plane of H*W elements of a
// single channel; in channels_last a span is one pixel's C channels. Per-channel statistics are sums
// over blocks of spans, two passes (mean, then squared deviations from it) for numerical stability.

using cpu::dispatch_act;
using cpu::dispatch_channel_stride;
using cpu::Layout;

// The tensor as contiguous spans. In NCHW a span is one (n, c) plane of H*W elements of a single channel. In
// channels_last it is a run of `pixels` whole pixels (so it starts at channel 0): a single pixel of a narrow
// layer is too short a loop for one call (C = 32 is two vectors), so narrow layers take several pixels per span,
// enough for kMinSpan elements and, where the channel count allows, a whole number of kLanes chunks (no
// masked tail). Span kernels take the channel stride S (1 or 0) as a template argument, so both layouts share
// one loop body that the compiler vectorizes; with S == 1 they index per-channel values by the span element,
// so those are repeated once per pixel of a span (PerChannel).
constexpr int kLanes = 16;
constexpr int64_t kMinSpan = 256;

struct Spans {
  int64_t count;   // spans
  int64_t len;     // elements of a whole span
  int64_t pixels;  // pixels of a channels_last span (1 in NCHW)
};

inline Spans spans_of(const Layout& l) {
  if (!l.channels_last) return {l.n * l.c, l.hw, 1};
  int64_t pixels = 1;
  if (l.c < kMinSpan && l.c > 0) {
    const int64_t step = kLanes / std::min<int64_t>(l.c & -l.c, kLanes);  // kLanes / gcd(C, kLanes)
    pixels = ((kMinSpan + l.c - 1) / l.c + step - 1) / step * step;
    pixels = std::max<int64_t>(1, std::min(pixels, l.pixels()));
  }
  return {(l.pixels() + pixels - 1) / pixels, pixels * l.c, pixels};
}

// Span q: fn(offset, channel, length); the last channels_last span may hold fewer pixels.
template <typename Fn>
inline void visit_span(const Layout& l, const Spans& sp, int64_t q, Fn& fn) {
  if (l.channels_last) {
    fn(q * sp.len, int64_t(0), std::min(sp.len, l.pixels() * l.c - q * sp.len));
  } else {
    fn(q * sp.len, q % l.c, sp.len);
  }
}

// Visits the tensor's spans in parallel.
template <typename Fn>
void parallel_spans(const Layout& l, Fn fn) {
  const Spans sp = spans_of(l);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(sp.len, 1));
  at::parallel_for(0, sp.count, grain, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) visit_span(l, sp, q, fn);
  });
}

// A per-channel array as span kernels index it: itself in NCHW (the span's channel is added to it), repeated
// once per pixel of a span in channels_last.
template <typename acc>
struct PerChannel {
  std::vector<acc> repeated;
  const acc* p;
  PerChannel(const PerChannel&) = delete;  // p may point into repeated
  PerChannel& operator=(const PerChannel&) = delete;
  PerChannel(const Layout& l, const acc* v) : p(v) {
    const int64_t pixels = spans_of(l).pixels;
    if (v == nullptr || pixels == 1) return;
    repeated.resize(static_cast<size_t>(pixels * l.c));
    for (int64_t i = 0; i < pixels; ++i) std::copy(v, v + l.c, repeated.data() + i * l.c);
    p = repeated.data();
  }
  const acc* operator+(int64_t c) const { return p + c; }
};

// Per-channel sums over spans, in chunks of kLanes elements whose terms go to a local [K][kLanes] block
// first, so that the term loop and the sums vectorize without -ffast-math (GCC vectorizes the fixed-length
// chunk loop as a whole): with S == 1 (channels_last, channel j at element j) the block is added to the
// chunk's channel slots of out; with S == 0 (one channel per span) it is the kLanes partial sums, added up at
// the end.

template <int S, int K, typename acc, typename Term>
inline void accumulate_span(int64_t len, acc* __restrict__ out, int64_t out_stride, Term term) {
  acc lanes[K][kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    acc v[K][kLanes];
    for (int t = 0; t < kLanes; ++t) {
      acc vt[K];
      term(j + t, vt);
      for (int k = 0; k < K; ++k) v[k][t] = vt[k];
    }
    for (int k = 0; k < K; ++k) {
      if constexpr (S == 1) {
        acc* o = out + k * out_stride + j;
        if constexpr (K == 1) {
          for (int t = 0; t < kLanes; ++t) o[t] += v[k][t];
        } else {
          // Explicit vectors: GCC cannot tell that the K rows of out never overlap and scalarized this
          // read-modify-write (backward ran at half speed). With K = 1 it vectorizes the whole chunk on its
          // own, better than with the block forced through memory (the forward's moments ran at half speed).
          constexpr int L = Vec<acc>::lanes;
          for (int t = 0; t < kLanes; t += L) vstore(o + t, vload(o + t) + vload(v[k] + t));
        }
      } else {
        for (int t = 0; t < kLanes; ++t) lanes[k][t] += v[k][t];
      }
    }
  }
  for (; j < len; ++j) {
    acc v[K];
    term(j, v);
    for (int k = 0; k < K; ++k) {
      if constexpr (S == 1) {
        out[k * out_stride + j] += v[k];
      } else {
        lanes[k][0] += v[k];
      }
    }
  }
  if constexpr (S == 0) {
    for (int k = 0; k < K; ++k) {
      acc s = 0;
      for (int t = 0; t < kLanes; ++t) s += lanes[k][t];
      out[k * out_stride] += s;
    }
  }
}

// Per-channel sums of K terms over the whole tensor: out[k * C + c]. span_sums(offset, channel, length, sums,
// row) accumulates one span into sums, a [K][row] block: row = C, or in channels_last the span's length (one
// slot per element of a span, the pixels' copies of a channel added up at the end).
template <int K, typename acc, typename SpanSums>
void channel_sums(const Layout& l, acc* out, SpanSums span_sums) {
  const Spans sp = spans_of(l);
  const int64_t row = l.channels_last ? sp.len : l.c;
  // Blocks of whole spans (at least ~16K elements each, at most 64 blocks), each with its own [K][row]
  // partial sums, added up at the end row by row (vectorized over channels). The blocking depends on
  // the shape only, so the sums do not change with the thread count.
  const int64_t per_block = std::max<int64_t>({1, 16384 / std::max<int64_t>(sp.len, 1), (sp.count + 63) / 64});
  const int64_t blocks = (sp.count + per_block - 1) / per_block;
  std::vector<acc> partial(static_cast<size_t>(blocks * K * row), acc(0));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      acc* sums = partial.data() + b * K * row;
      const int64_t end = std::min(sp.count, (b + 1) * per_block);
      auto span = [&](int64_t off, int64_t c, int64_t len) { span_sums(off, c, len, sums + c, row); };
      for (int64_t q = b * per_block; q < end; ++q) visit_span(l, sp, q, span);
    }
  });
  std::vector<acc> rows(static_cast<size_t>(K * row));
  at::parallel_for(0, K * row, 256, [&](int64_t k0, int64_t k1) {
    acc* __restrict__ o = rows.data() + k0;
    for (int64_t k = 0; k < k1 - k0; ++k) o[k] = acc(0);
    for (int64_t b = 0; b < blocks; ++b) {
      const acc* __restrict__ p = partial.data() + b * K * row + k0;
      for (int64_t k = 0; k < k1 - k0; ++k) o[k] += p[k];
    }
  });
  for (int64_t k = 0; k < K; ++k) {
    acc* __restrict__ o = out + k * l.c;
    for (int64_t c = 0; c < l.c; ++c) o[c] = acc(0);
    for (int64_t i = 0; i < row; i += l.c) {
      const acc* __restrict__ p = rows.data() + k * row + i;
      for (int64_t c = 0; c < l.c; ++c) o[c] += p[c];
    }
  }
}

// The loops below work on acc values (float, double): the span functions are templates of the activation,
// the channel stride and acc only, compiled once for float and shared by the half dtypes, whose spans are
// widened into per-thread float buffers first (exact) and whose results are narrowed on the way out (the
// one rounding they always had). A copy of every loop per half dtype was two thirds of this file's build;
// the span functions are not inlined (one call per span), so that each is compiled once, not into every caller,
// and flattened: exp_approx (SiLU) must be inlined into their loops for them to vectorize (GCC left it a call).
template <typename acc>
acc* scratch(int slot, int64_t len) {
  thread_local std::vector<acc> buffers[5];
  std::vector<acc>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < len) b.resize(static_cast<size_t>(len));
  return b.data();
}

// The span of v at offset off as acc values: v itself when scalar_t is acc, else widened into scratch slot.
template <typename acc, typename scalar_t>
const acc* acc_span(int slot, const scalar_t* v, int64_t off, int64_t len) {
  if constexpr (std::is_same_v<scalar_t, acc>) {
    return v + off;
  } else {
    acc* b = scratch<acc>(slot, len);
    const scalar_t* __restrict__ src = v + off;
    for (int64_t j = 0; j < len; ++j) b[j] = static_cast<acc>(src[j]);
    return b;
  }
}

// Where a span's acc results go: v + off itself, or scratch slot, narrowed into v by store_span.
template <typename acc, typename scalar_t>
acc* acc_out(int slot, scalar_t* v, int64_t off, int64_t len) {
  if constexpr (std::is_same_v<scalar_t, acc>) {
    return v + off;
  } else {
    return scratch<acc>(slot, len);
  }
}

template <typename acc, typename scalar_t>
void store_span(scalar_t* v, int64_t off, int64_t len, const acc* r) {
  if constexpr (!std::is_same_v<scalar_t, acc>) {
    scalar_t* __restrict__ dst = v + off;
    for (int64_t j = 0; j < len; ++j) dst[j] = static_cast<scalar_t>(r[j]);
  }
}

// Channels_last spans in the avx512 variant (kMaskedTails, cpu/isa_prelude.h) end with a masked tail instead of
// a scalar remainder loop: the span functions below run their last len % kLanes channels as one whole chunk
// on kLanes-element copies of their streams, loaded with masked loads (zeros after the tail), and store the
// results back with masked stores. Per-channel streams are indexed by the channel there (S == 1) like the others.
template <typename acc>
inline void load_tail(acc* dst, const acc* src, int n) {
  constexpr int L = Vec<acc>::lanes;
  for (int i = 0; i < kLanes; i += L) vstore(dst + i, n > i ? vload_n(src + i, std::min(n - i, L)) : typename Vec<acc>::type{});
}

template <typename acc>
inline void store_tail(acc* dst, const acc* src, int n) {
  constexpr int L = Vec<acc>::lanes;
  for (int i = 0; i < n; i += L) vstore_n(dst + i, vload(src + i), std::min(n - i, L));
}

template <typename acc>
struct Tail {
  static constexpr int kStreams = 11;  // the most a span function copies: grad_input_span's 9 inputs and 2 outputs
  const int64_t at;  // where the tail starts in the span
  const int n;       // its length, 0 < n < kLanes
  alignas(64) acc buf[kStreams][kLanes];
  acc* dst[kStreams] = {};
  int used = 0;

  explicit Tail(int64_t len) : at(len - len % kLanes), n(static_cast<int>(len % kLanes)) {}
  // A copy of the stream's tail (null for null).
  const acc* in(const acc* p) {
    if (!p) return nullptr;
    load_tail(buf[used], p + at, n);
    return buf[used++];
  }
  // A buffer whose first n values store() writes to the stream's tail; with load, it starts as the tail's copy.
  acc* out(acc* p, bool load = false) {
    if (!p) return nullptr;
    if (load) load_tail(buf[used], p + at, n);
    dst[used] = p + at;
    return buf[used++];
  }
  void store() const {
    for (int i = 0; i < used; ++i)
      if (dst[i]) store_tail(dst[i], buf[i], n);
  }
};

// Whether channels_last spans (S == 1) end with a masked tail (see Tail) where len % kLanes != 0.
template <int S>
constexpr bool kMaskedTail = kMaskedTails && S == 1;

// Sums of (x - k) (kSquare false) or of (x - k)^2 (true) over one span, k per channel.
template <int S, bool kSquare, typename acc>
[[gnu::noinline, gnu::flatten]] void moment_span(int64_t len, int64_t c_count, const acc* __restrict__ xs, const acc* __restrict__ ks, acc* out) {
  if constexpr (kMaskedTail<S>) {
    if (len % kLanes != 0) {
      Tail<acc> t(len);
      moment_span<S, kSquare, acc>(kLanes, kLanes, t.in(xs), t.in(ks), t.out(out, true));
      t.store();
      len = t.at;
    }
  }
  accumulate_span<S, 1, acc>(len, out, c_count, [&](int64_t j, acc* v) {
    const acc d = xs[j] - ks[j * S];
    v[0] = kSquare ? d * d : d;
  });
}

// Batch mean and biased variance per channel, numerically stable: a first pass gives per-channel
// means (sums are taken around a per-channel shift, the channel's first value, so float32 sums of
// large-mean data keep their digits); the second sums squared deviations from that mean.
template <typename scalar_t, typename acc>
void batch_moments(const Layout& l, const scalar_t* x, acc* mean, acc* var) {
  std::vector<acc> shift(l.c), sums(l.c);
  for (int64_t c = 0; c < l.c; ++c) shift[c] = static_cast<acc>(x[l.channels_last ? c : c * l.hw]);
  const PerChannel<acc> k(l, shift.data());
  dispatch_channel_stride(l, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    channel_sums<1, acc>(l, sums.data(), [&](int64_t off, int64_t c, int64_t len, acc* out, int64_t row) {
      moment_span<S, false, acc>(len, row, acc_span<acc>(0, x, off, len), k + c, out);
    });
    const acc inv_count = acc(1) / static_cast<acc>(l.pixels());
    for (int64_t c = 0; c < l.c; ++c) mean[c] = shift[c] + sums[c] * inv_count;
    const PerChannel<acc> mu(l, mean);
    channel_sums<1, acc>(l, sums.data(), [&](int64_t off, int64_t c, int64_t len, acc* out, int64_t row) {
      moment_span<S, true, acc>(len, row, acc_span<acc>(0, x, off, len), mu + c, out);
    });
    for (int64_t c = 0; c < l.c; ++c) var[c] = sums[c] * inv_count;
  });
}

// One span of y = act((x - mean) * scale + bias [+ r]).
template <Act A, int S, typename acc>
[[gnu::noinline, gnu::flatten]] void forward_span(int64_t len, const acc* __restrict__ xs, const acc* __restrict__ rs, const acc* __restrict__ scs,
                  const acc* __restrict__ mus, const acc* __restrict__ bbs, acc* __restrict__ ys) {
  if constexpr (kMaskedTail<S>) {
    if (len % kLanes != 0) {
      Tail<acc> t(len);
      forward_span<A, S, acc>(kLanes, t.in(xs), t.in(rs), t.in(scs), t.in(mus), t.in(bbs), t.out(ys));
      t.store();
      len = t.at;
    }
  }
  if (rs) {
    for (int64_t j = 0; j < len; ++j)
      ys[j] = cpu::cpu_act<A, acc>((xs[j] - mus[j * S]) * scs[j * S] + bbs[j * S] + rs[j]);
  } else {
    for (int64_t j = 0; j < len; ++j) ys[j] = cpu::cpu_act<A, acc>((xs[j] - mus[j * S]) * scs[j * S] + bbs[j * S]);
  }
}

// y = act((x - mean) * scale + bias [+ residual]) per channel. Subtracting the mean first keeps digits that
// x * scale + (bias - mean * scale) would cancel when |mean| >> std.
template <typename scalar_t, typename acc>
void forward(const Layout& l, Act act, const scalar_t* x, const scalar_t* r, const acc* scale, const acc* mean,
             const acc* bias, scalar_t* y) {
  const PerChannel<acc> sc(l, scale), mu(l, mean), bb(l, bias);
  dispatch_act(act, [&](auto A) {
    dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
        acc* ys = acc_out<acc>(2, y, off, len);
        forward_span<decltype(A)::value, S, acc>(len, acc_span<acc>(0, x, off, len),
                                                 r ? acc_span<acc>(1, r, off, len) : nullptr, sc + c, mu + c, bb + c, ys);
        store_span(y, off, len, ys);
      });
    });
  });
}

// The per-channel values of one span the backward pass reads.
template <typename acc>
struct GradSpan {
  const acc* __restrict__ x;
  const acc* __restrict__ dy;
  const acc* __restrict__ r;  // null without a residual
  const acc* __restrict__ sc;
  const acc* __restrict__ mu;
  const acc* __restrict__ bb;
};

template <Act A, typename acc>
inline acc grad_z(acc x, acc dy, acc r, acc scale, acc mean, acc bias) {
  return cpu::cpu_act_backward<A, acc>(dy, (x - mean) * scale + bias + r);
}

// One span of the first backward pass: out += [dz, dz * (x - mean)], dz also stored in dzs when kKeep.
// The residual and store tests stay out of the loop: `rs ? rs[j] : 0` inside it becomes a masked load
// (vmaskmovps) of a null pointer, which takes a microcode assist per vector on x86 (~10x slower).
template <Act A, int S, bool kR, bool kKeep, typename acc>
[[gnu::noinline, gnu::flatten]] void grad_sums_span(int64_t len, int64_t c_count, const GradSpan<acc>& g, acc* __restrict__ dzs, acc* out) {
  if constexpr (kMaskedTail<S>) {
    if (len % kLanes != 0) {
      Tail<acc> t(len);
      const GradSpan<acc> gt{t.in(g.x), t.in(g.dy), t.in(g.r), t.in(g.sc), t.in(g.mu), t.in(g.bb)};
      acc* dzt = kKeep ? t.out(dzs) : nullptr;
      acc* sums = t.out(out, true);  // the two rows of out, kLanes apart in the buffers
      t.out(out + c_count, true);
      grad_sums_span<A, S, kR, kKeep, acc>(kLanes, kLanes, gt, dzt, sums);
      t.store();
      len = t.at;
    }
  }
  const acc* __restrict__ xs = g.x;
  const acc* __restrict__ dys = g.dy;
  const acc* __restrict__ rs = g.r;
  const acc* __restrict__ scs = g.sc;
  const acc* __restrict__ mus = g.mu;
  const acc* __restrict__ bbs = g.bb;
  accumulate_span<S, 2, acc>(len, out, c_count, [&](int64_t j, acc* v) {
    const acc xj = xs[j];
    acc rj = acc(0);
    if constexpr (kR) rj = rs[j];
    const acc dz = grad_z<A, acc>(xj, dys[j], rj, scs[j * S], mus[j * S], bbs[j * S]);
    if constexpr (kKeep) dzs[j] = dz;
    v[0] = dz;
    v[1] = dz * (xj - mus[j * S]);
  });
}

// dx = k_dz * dz + k_x * (x - mean) + k_0 per channel (training couples x through the batch stats). In
// eval the coupling is not computed at all: 0 * (x - mean) would turn a NaN or Inf of x into NaN.
// (Summed in the order dz term + x term + constant, as before the eval branch existed: the same rounding.)
template <typename acc>
inline acc dx_of(bool training, acc kdz, acc dz, acc kx, acc xj, acc mean, acc k0) {
  return training ? kdz * dz + kx * (xj - mean) + k0 : kdz * dz;
}

// The dx coefficients of one span.
template <typename acc>
struct DxCoef {
  const acc* __restrict__ kdz;
  const acc* __restrict__ kx;
  const acc* __restrict__ k0;
};

// One span of the second backward pass with dz recomputed: dx, and dr = dz with a residual.
template <Act A, int S, typename acc>
[[gnu::noinline, gnu::flatten]] void grad_input_span(int64_t len, bool training, const GradSpan<acc>& g, const DxCoef<acc>& k, acc* __restrict__ dxs,
                     acc* __restrict__ drs) {
  if constexpr (kMaskedTail<S>) {
    if (len % kLanes != 0) {
      Tail<acc> t(len);
      const GradSpan<acc> gt{t.in(g.x), t.in(g.dy), t.in(g.r), t.in(g.sc), t.in(g.mu), t.in(g.bb)};
      const DxCoef<acc> kt{t.in(k.kdz), t.in(k.kx), t.in(k.k0)};
      grad_input_span<A, S, acc>(kLanes, training, gt, kt, t.out(dxs), t.out(drs));
      t.store();
      len = t.at;
    }
  }
  const acc* __restrict__ xs = g.x;
  const acc* __restrict__ dys = g.dy;
  const acc* __restrict__ rs = g.r;
  const acc* __restrict__ scs = g.sc;
  const acc* __restrict__ mus = g.mu;
  const acc* __restrict__ bbs = g.bb;
  const acc* __restrict__ kdz = k.kdz;
  const acc* __restrict__ kx = k.kx;
  const acc* __restrict__ k0 = k.k0;
  if (rs) {
    for (int64_t j = 0; j < len; ++j) {
      const acc dz = grad_z<A, acc>(xs[j], dys[j], rs[j], scs[j * S], mus[j * S], bbs[j * S]);
      dxs[j] = dx_of(training, kdz[j * S], dz, kx[j * S], xs[j], mus[j * S], k0[j * S]);
      drs[j] = dz;
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      const acc dz = grad_z<A, acc>(xs[j], dys[j], acc(0), scs[j * S], mus[j * S], bbs[j * S]);
      dxs[j] = dx_of(training, kdz[j * S], dz, kx[j * S], xs[j], mus[j * S], k0[j * S]);
    }
  }
}

// One span of the second backward pass with dz stored by the first (exact dtypes): in dzs (the residual's
// gradient), or in d itself (dzs null: d holds dz and is updated in place).
template <int S, typename acc>
[[gnu::noinline, gnu::flatten]] void grad_input_stored_span(int64_t len, bool training, const acc* __restrict__ xs, const acc* __restrict__ mus,
                            const DxCoef<acc>& k, const acc* __restrict__ dzs, acc* d) {
  if constexpr (kMaskedTail<S>) {
    if (len % kLanes != 0) {
      Tail<acc> t(len);
      const DxCoef<acc> kt{t.in(k.kdz), t.in(k.kx), t.in(k.k0)};
      const acc* xt = t.in(xs);
      const acc* mt = t.in(mus);
      const acc* dzt = t.in(dzs);
      grad_input_stored_span<S, acc>(kLanes, training, xt, mt, kt, dzt, t.out(d, dzs == nullptr));
      t.store();
      len = t.at;
    }
  }
  const acc* __restrict__ kdz = k.kdz;
  const acc* __restrict__ kx = k.kx;
  const acc* __restrict__ k0 = k.k0;
  if (dzs) {
    acc* __restrict__ dxs = d;
    for (int64_t j = 0; j < len; ++j) dxs[j] = dx_of(training, kdz[j * S], dzs[j], kx[j * S], xs[j], mus[j * S], k0[j * S]);
  } else {
    for (int64_t j = 0; j < len; ++j) d[j] = dx_of(training, kdz[j * S], d[j], kx[j * S], xs[j], mus[j * S], k0[j * S]);
  }
}

// s = [sum dz, sum dz * (x - mean)] per channel ([2][C]), then dx (and dresidual = dz), with
// dz = dy * act'(z) and z recomputed from x (and the residual); sc = weight * invstd.
// Where dz is costly to recompute (SiLU: an exp and a division) or has to be written anyway (dresidual),
// the first pass stores it (in dresidual, else in dx) and the second reads it back, when the tensor's dtype
// is the accumulation dtype (no rounding of dz in between).
// Only the loops a call can reach are instantiated: with the exact dtypes (float, double) a residual always
// stores dz and SiLU always does; the half dtypes never store; the second pass that reads dz back does not
// depend on the activation, so it is compiled once, not per activation.
template <typename scalar_t, typename acc>
void backward(const Layout& l, Act act, bool training, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
              const acc* scale, const acc* invstd, const acc* mean, const acc* bias, acc* s, scalar_t* dx, scalar_t* dr) {
  constexpr bool kExact = std::is_same_v<scalar_t, acc>;
  const bool store = kExact && (act == Act::SiLU || r != nullptr);
  const PerChannel<acc> sc(l, scale), mu(l, mean), bb(l, bias);
  auto grad_span = [&](int64_t off, int64_t c, int64_t len) {
    return GradSpan<acc>{acc_span<acc>(0, x, off, len), acc_span<acc>(1, dy, off, len),
                         r ? acc_span<acc>(2, r, off, len) : nullptr, sc + c, mu + c, bb + c};
  };
  dispatch_channel_stride(l, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    dispatch_act(act, [&](auto A) {
      constexpr Act kA = decltype(A)::value;
      channel_sums<2, acc>(l, s, [&](int64_t off, int64_t c, int64_t len, acc* out, int64_t row) {
        const GradSpan<acc> g = grad_span(off, c, len);
        // store == kExact && (SiLU || r): each branch is the one combination of it that can occur.
        if constexpr (kExact) {
          if (r) {
            grad_sums_span<kA, S, true, true, acc>(len, row, g, dr + off, out);
          } else {
            grad_sums_span<kA, S, false, kA == Act::SiLU, acc>(len, row, g, dx + off, out);
          }
        } else if (r) {
          grad_sums_span<kA, S, true, false, acc>(len, row, g, nullptr, out);
        } else {
          grad_sums_span<kA, S, false, false, acc>(len, row, g, nullptr, out);
        }
      });
    });
    std::vector<acc> k_dz(l.c), k_x(l.c), k_0(l.c);
    const acc inv_count = acc(1) / static_cast<acc>(l.pixels());
    for (int64_t c = 0; c < l.c; ++c) {
      k_dz[c] = scale[c];
      k_x[c] = training ? -scale[c] * invstd[c] * invstd[c] * s[l.c + c] * inv_count : acc(0);
      k_0[c] = training ? -scale[c] * s[c] * inv_count : acc(0);
    }
    const PerChannel<acc> kdz(l, k_dz.data()), kx(l, k_x.data()), k0(l, k_0.data());
    auto coef = [&](int64_t c) { return DxCoef<acc>{kdz + c, kx + c, k0 + c}; };
    if constexpr (kExact) {
      if (store) {  // dz is in dresidual, or in dx: the activation is done with
        parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
          grad_input_stored_span<S, acc>(len, training, x + off, mu + c, coef(c), r ? dr + off : nullptr, dx + off);
        });
        return;
      }
    }
    dispatch_act(act, [&](auto A) {
      constexpr Act kA = decltype(A)::value;
      // Not stored: a half dtype, or an exact one with neither SiLU nor a residual.
      if constexpr (!(kExact && kA == Act::SiLU)) {
        parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
          acc* dxs = acc_out<acc>(3, dx, off, len);
          acc* drs = r ? acc_out<acc>(4, dr, off, len) : nullptr;
          grad_input_span<kA, S, acc>(len, training, grad_span(off, c, len), coef(c), dxs, drs);
          store_span(dx, off, len, dxs);
          if (r) store_span(dr, off, len, drs);
        });
      }
    });
  });
}

// ------------------------------------------------------------------------ entry points ----

void run_forward(const Layout& l, Act act, bool training, double eps, const Tensor& input, const Tensor& residual,
                 const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var, const Tensor& output) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "bn_act_forward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    if (training) batch_moments<scalar_t, acc>(l, x, mean.data_ptr<acc>(), var.data_ptr<acc>());
    std::vector<acc> scale(l.c);
    for (int64_t c = 0; c < l.c; ++c) {
      const acc invstd = acc(1) / std::sqrt(var.const_data_ptr<acc>()[c] + static_cast<acc>(eps));
      scale[c] = w.const_data_ptr<acc>()[c] * invstd;
    }
    forward<scalar_t, acc>(l, act, x, residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
                           scale.data(), mean.const_data_ptr<acc>(), b.const_data_ptr<acc>(),
                           output.data_ptr<scalar_t>());
  });
}

void run_backward(const Layout& l, Act act, bool training, double eps, const Tensor& input, const Tensor& grad_output,
                  const Tensor& residual, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var,
                  const Tensor& sums, const Tensor& grad_input, const Tensor& grad_residual) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "bn_act_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    std::vector<acc> invstd(l.c), scale(l.c);
    const acc* mu = mean.const_data_ptr<acc>();
    const acc* bb = b.const_data_ptr<acc>();
    for (int64_t c = 0; c < l.c; ++c) {
      invstd[c] = acc(1) / std::sqrt(var.const_data_ptr<acc>()[c] + static_cast<acc>(eps));
      scale[c] = w.const_data_ptr<acc>()[c] * invstd[c];
    }
    acc* s = sums.data_ptr<acc>();
    backward<scalar_t, acc>(
        l, act, training, input.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
        residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr, scale.data(), invstd.data(), mu, bb, s,
        grad_input.data_ptr<scalar_t>(), grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr);
    for (int64_t c = 0; c < l.c; ++c) s[l.c + c] *= invstd[c];  // sum dz * xhat
  });
}

extern const BnActKernels kernels = {&run_forward, &run_backward};
