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

// Visits the tensor as contiguous spans, in parallel: fn(offset, channel, length). In channels_last a
// span is one pixel's C channels (channel 0 at its start, advancing by one per element); in NCHW it is
// one (n, c) plane of H*W elements of that single channel. Span kernels take the channel stride S
// (1 or 0) as a template argument, so both layouts share one loop body that the compiler vectorizes.
template <typename Fn>
void parallel_spans(const Layout& l, Fn fn) {
  if (l.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.c, 1));
    at::parallel_for(0, l.pixels(), grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) fn(p * l.c, int64_t(0), l.c);
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) fn(q * l.hw, q % l.c, l.hw);
    });
  }
}

// Per-channel sums over spans, in chunks of kLanes elements whose terms go to a local [K][kLanes] block
// first, so that the term loop and the sums vectorize without -ffast-math: with S == 1 (channels_last,
// channel j at element j) the block is added to the chunk's channel slots of out; with S == 0 (one
// channel per span) it is the kLanes partial sums, added up at the end.
constexpr int kLanes = 16;

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
    for (int k = 0; k < K; ++k)
      for (int t = 0; t < kLanes; ++t) {
        if constexpr (S == 1) {
          out[k * out_stride + j + t] += v[k][t];
        } else {
          lanes[k][t] += v[k][t];
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

// Per-channel sums of K terms over the whole tensor: out[k * C + c]. term(offset, channel, length, sums)
// accumulates one span into sums (a [K][C] block whose row stride is C).
template <int K, typename acc, typename SpanSums>
void channel_sums(const Layout& l, acc* out, SpanSums span_sums) {
  const int64_t span_len = l.channels_last ? l.c : l.hw;
  const int64_t spans = l.channels_last ? l.pixels() : l.n * l.c;
  // Blocks of whole spans (at least ~16K elements each, at most 64 blocks), each with its own [K][C]
  // partial sums, added up at the end row by row (vectorized over channels). The blocking depends on
  // the shape only, so the sums do not change with the thread count.
  const int64_t per_block = std::max<int64_t>({1, 16384 / std::max<int64_t>(span_len, 1), (spans + 63) / 64});
  const int64_t blocks = (spans + per_block - 1) / per_block;
  std::vector<acc> partial(static_cast<size_t>(blocks * K * l.c), acc(0));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      acc* sums = partial.data() + b * K * l.c;
      const int64_t end = std::min(spans, (b + 1) * per_block);
      for (int64_t q = b * per_block; q < end; ++q) {
        const int64_t channel = l.channels_last ? 0 : q % l.c;
        span_sums(q * span_len, channel, span_len, sums + channel);
      }
    }
  });
  at::parallel_for(0, K * l.c, 256, [&](int64_t k0, int64_t k1) {
    acc* __restrict__ o = out + k0;
    for (int64_t k = 0; k < k1 - k0; ++k) o[k] = acc(0);
    for (int64_t b = 0; b < blocks; ++b) {
      const acc* __restrict__ p = partial.data() + b * K * l.c + k0;
      for (int64_t k = 0; k < k1 - k0; ++k) o[k] += p[k];
    }
  });
}

// Batch mean and biased variance per channel, numerically stable: a first pass gives per-channel
// means (sums are taken around a per-channel shift, the channel's first value, so float32 sums of
// large-mean data keep their digits); the second sums squared deviations from that mean.
template <typename scalar_t, typename acc>
void batch_moments(const Layout& l, const scalar_t* x, acc* mean, acc* var) {
  std::vector<acc> shift(l.c), sums(l.c);
  for (int64_t c = 0; c < l.c; ++c) shift[c] = static_cast<acc>(x[l.channels_last ? c : c * l.hw]);
  const acc* k = shift.data();
  dispatch_channel_stride(l, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    channel_sums<1, acc>(l, sums.data(), [&](int64_t off, int64_t c, int64_t len, acc* out) {
      const scalar_t* __restrict__ xs = x + off;
      const acc* __restrict__ ks = k + c;
      accumulate_span<S, 1, acc>(len, out, l.c, [&](int64_t j, acc* v) { v[0] = static_cast<acc>(xs[j]) - ks[j * S]; });
    });
    const acc inv_count = acc(1) / static_cast<acc>(l.pixels());
    for (int64_t c = 0; c < l.c; ++c) mean[c] = shift[c] + sums[c] * inv_count;
    const acc* mu = mean;
    channel_sums<1, acc>(l, sums.data(), [&](int64_t off, int64_t c, int64_t len, acc* out) {
      const scalar_t* __restrict__ xs = x + off;
      const acc* __restrict__ ms = mu + c;
      accumulate_span<S, 1, acc>(len, out, l.c, [&](int64_t j, acc* v) {
        const acc d = static_cast<acc>(xs[j]) - ms[j * S];
        v[0] = d * d;
      });
    });
    for (int64_t c = 0; c < l.c; ++c) var[c] = sums[c] * inv_count;
  });
}

// y = act((x - mean) * scale + bias [+ residual]) per channel. Subtracting the mean first keeps digits that
// x * scale + (bias - mean * scale) would cancel when |mean| >> std.
template <typename scalar_t, typename acc>
void forward(const Layout& l, Act act, const scalar_t* x, const scalar_t* r, const acc* sc, const acc* mu,
             const acc* bb, scalar_t* y) {
  dispatch_act(act, [&](auto A) {
    dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
        const scalar_t* __restrict__ xs = x + off;
        const scalar_t* __restrict__ rs = r ? r + off : nullptr;
        scalar_t* __restrict__ ys = y + off;
        const acc* __restrict__ scs = sc + c;
        const acc* __restrict__ mus = mu + c;
        const acc* __restrict__ bbs = bb + c;
        if (rs) {
          for (int64_t j = 0; j < len; ++j)
            ys[j] = static_cast<scalar_t>(cpu::cpu_act<decltype(A)::value, acc>(
                (static_cast<acc>(xs[j]) - mus[j * S]) * scs[j * S] + bbs[j * S] + static_cast<acc>(rs[j])));
        } else {
          for (int64_t j = 0; j < len; ++j)
            ys[j] = static_cast<scalar_t>(
                cpu::cpu_act<decltype(A)::value, acc>((static_cast<acc>(xs[j]) - mus[j * S]) * scs[j * S] + bbs[j * S]));
        }
      });
    });
  });
}

// s = [sum dz, sum dz * (x - mean)] per channel ([2][C]), then dx (and dresidual = dz), with
// dz = dy * act'(z) and z recomputed from x (and the residual); sc = weight * invstd.
// Where dz is costly to recompute (SiLU: an exp and a division) or has to be written anyway (dresidual),
// the first pass stores it (in dresidual, else in dx) and the second reads it back, when the tensor's dtype
// is the accumulation dtype (no rounding of dz in between).
// Only the loops a call can reach are instantiated (a third of the code, and of its build time): with the
// exact dtypes (float, double) a residual always stores dz and SiLU always does; the half dtypes never store;
// the second pass that reads dz back does not depend on the activation, so it is compiled once, not per act.
template <typename scalar_t, typename acc>
void backward(const Layout& l, Act act, bool training, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
              const acc* sc, const acc* invstd, const acc* mu, const acc* bb, acc* s, scalar_t* dx, scalar_t* dr) {
  auto grad_z = [](auto A, acc x, acc dy, acc r, acc scale, acc mean, acc bias) {
    return cpu::cpu_act_backward<decltype(A)::value, acc>(dy, (x - mean) * scale + bias + r);
  };
  constexpr bool kExact = std::is_same_v<scalar_t, acc>;
  const bool store = kExact && (act == Act::SiLU || r != nullptr);
  scalar_t* const dz_buf = r != nullptr ? dr : dx;  // where a stored dz goes
  dispatch_channel_stride(l, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    dispatch_act(act, [&](auto A) {
      constexpr bool kSiLU = decltype(A)::value == Act::SiLU;
      channel_sums<2, acc>(l, s, [&](int64_t off, int64_t c, int64_t len, acc* out) {
        const scalar_t* __restrict__ xs = x + off;
        const scalar_t* __restrict__ dys = dy + off;
        const scalar_t* __restrict__ rs = r ? r + off : nullptr;
        scalar_t* __restrict__ dzs = dz_buf + off;
        const acc* __restrict__ scs = sc + c;
        const acc* __restrict__ bbs = bb + c;
        const acc* __restrict__ mus = mu + c;
        // The residual and store tests stay out of the loop: `rs ? rs[j] : 0` inside it becomes a masked load
        // (vmaskmovps) of a null pointer, which takes a microcode assist per vector on x86 (~10x slower).
        auto term = [&](auto has_r, auto keep) {
          return [&, has_r, keep](int64_t j, acc* v) {
            const acc xj = static_cast<acc>(xs[j]);
            acc rj = acc(0);
            if constexpr (decltype(has_r)::value) rj = static_cast<acc>(rs[j]);
            const acc dz = grad_z(A, xj, static_cast<acc>(dys[j]), rj, scs[j * S], mus[j * S], bbs[j * S]);
            if constexpr (decltype(keep)::value) dzs[j] = static_cast<scalar_t>(dz);
            v[0] = dz;
            v[1] = dz * (xj - mus[j * S]);
          };
        };
        // store == kExact && (kSiLU || rs): each branch below is the one combination of it that can occur.
        if (rs) {
          accumulate_span<S, 2, acc>(len, out, l.c, term(std::true_type{}, std::bool_constant<kExact>{}));
        } else {
          accumulate_span<S, 2, acc>(len, out, l.c, term(std::false_type{}, std::bool_constant<kExact && kSiLU>{}));
        }
      });
    });
    // dx = k_dz * dz + k_x * (x - mean) + k_0 per channel (training couples x through the batch stats). In
    // eval the coupling is not computed at all: 0 * (x - mean) would turn a NaN or Inf of x into NaN.
    // (Summed in the order dz term + x term + constant, as before the eval branch existed: the same rounding.)
    auto dx_of = [training](acc kdz, acc dz, acc kx, acc xj, acc mean, acc k0) {
      return training ? kdz * dz + kx * (xj - mean) + k0 : kdz * dz;
    };
    std::vector<acc> k_dz(l.c), k_x(l.c), k_0(l.c);
    const acc inv_count = acc(1) / static_cast<acc>(l.pixels());
    for (int64_t c = 0; c < l.c; ++c) {
      k_dz[c] = sc[c];
      k_x[c] = training ? -sc[c] * invstd[c] * invstd[c] * s[l.c + c] * inv_count : acc(0);
      k_0[c] = training ? -sc[c] * s[c] * inv_count : acc(0);
    }
    if constexpr (kExact) {
      if (store) {  // dz is in dresidual, or in dx (updated in place): the activation is done with
        parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
          const scalar_t* __restrict__ xs = x + off;
          scalar_t* d = dx + off;
          const acc* __restrict__ mus = mu + c;
          const acc* __restrict__ kdz = k_dz.data() + c;
          const acc* __restrict__ kx = k_x.data() + c;
          const acc* __restrict__ k0 = k_0.data() + c;
          if (r) {
            const scalar_t* __restrict__ dzs = dr + off;
            scalar_t* __restrict__ dxs = d;
            for (int64_t j = 0; j < len; ++j) {
              const acc xj = static_cast<acc>(xs[j]);
              dxs[j] = static_cast<scalar_t>(dx_of(kdz[j * S], static_cast<acc>(dzs[j]), kx[j * S], xj, mus[j * S], k0[j * S]));
            }
          } else {
            for (int64_t j = 0; j < len; ++j) {
              const acc xj = static_cast<acc>(xs[j]);
              d[j] = static_cast<scalar_t>(dx_of(kdz[j * S], static_cast<acc>(d[j]), kx[j * S], xj, mus[j * S], k0[j * S]));
            }
          }
        });
        return;
      }
    }
    dispatch_act(act, [&](auto A) {
      // Not stored: a half dtype, or an exact one with neither SiLU nor a residual.
      if constexpr (!(kExact && decltype(A)::value == Act::SiLU)) parallel_spans(l, [&](int64_t off, int64_t c, int64_t len) {
        const scalar_t* __restrict__ xs = x + off;
        const scalar_t* __restrict__ dys = dy + off;
        const scalar_t* __restrict__ rs = r ? r + off : nullptr;
        scalar_t* __restrict__ dxs = dx + off;
        scalar_t* __restrict__ drs = dr ? dr + off : nullptr;
        const acc* __restrict__ scs = sc + c;
        const acc* __restrict__ bbs = bb + c;
        const acc* __restrict__ mus = mu + c;
        const acc* __restrict__ kdz = k_dz.data() + c;
        const acc* __restrict__ kx = k_x.data() + c;
        const acc* __restrict__ k0 = k_0.data() + c;
        if constexpr (!kExact) {
          if (rs) {
            for (int64_t j = 0; j < len; ++j) {
              const acc xj = static_cast<acc>(xs[j]);
              const acc dz = grad_z(A, xj, static_cast<acc>(dys[j]), static_cast<acc>(rs[j]), scs[j * S], mus[j * S], bbs[j * S]);
              dxs[j] = static_cast<scalar_t>(dx_of(kdz[j * S], dz, kx[j * S], xj, mus[j * S], k0[j * S]));
              drs[j] = static_cast<scalar_t>(dz);
            }
            return;
          }
        }
        for (int64_t j = 0; j < len; ++j) {
          const acc xj = static_cast<acc>(xs[j]);
          const acc dz = grad_z(A, xj, static_cast<acc>(dys[j]), acc(0), scs[j * S], mus[j * S], bbs[j * S]);
          dxs[j] = static_cast<scalar_t>(dx_of(kdz[j * S], dz, kx[j * S], xj, mus[j * S], k0[j * S]));
        }
      });
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
