// CPU kernels of pycnn::se_forward / se_backward (both layouts). Not a normal header: cpu/isa_kernels.h compiles it once
// per variant (namespaces pycnn::se_base, se_avx2, se_avx512), and se.cpp calls the one that runs through
// its table of entry points (`kernels` at the end, declared in cpu/se_entries.h).
//
// The forward is memory-bound: one read of x for the pool, one read of x (and the residual) and one write
// of y for the scale, as in eager PyTorch; each pass is a branch-free loop over contiguous memory with
// per-span constants hoisted, so it runs near copy speed. The excitation between them works on [N, C]
// vectors only and, for the usual SE widths, is done here in plain loops: the dozen ATen calls it would
// otherwise take cost more than the arithmetic.

using cpu::Layout;

// Sum over [0, len) of the vectors vterm(j, n, tail) (for_vectors in cpu/isa_prelude.h: lanes j .. j + n,
// a partial last vector's lanes past n load as zero, and its terms there must be zero), in two vector
// accumulators so that consecutive adds do not wait on each other.
template <typename acc, typename VTerm>
inline acc vector_sum(int64_t len, VTerm vterm) {
  using V = typename Vec<acc>::type;
  constexpr int L = Vec<acc>::lanes;
  V s0{}, s1{};
  int64_t j = 0;
  for (; j + 2 * L <= len; j += 2 * L) {
    s0 += vterm(j, L, std::false_type{});
    s1 += vterm(j + L, L, std::false_type{});
  }
  if (j + L <= len) {
    s0 += vterm(j, L, std::false_type{});
    j += L;
  }
  if (j < len) s1 += vterm(j, static_cast<int>(len - j), std::true_type{});
  s0 += s1;
  acc s = 0;
  for (int t = 0; t < L; ++t) s += s0[t];
  return s;
}

// pooled[n * C + c] = mean over H*W of x[n, c].
template <typename scalar_t, typename acc>
void pool(const Layout& l, const scalar_t* x, acc* pooled) {
  using V = typename Vec<acc>::type;
  const acc inv_hw = acc(1) / static_cast<acc>(l.hw);
  if (!l.channels_last) {  // one plane per (n, c)
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const scalar_t* xs = x + q * l.hw;
        pooled[q] = vector_sum<acc>(l.hw, [&](int64_t j, int n, auto tail) {
                      return vload_span<decltype(tail)::value, acc>(xs + j, n);
                    }) * inv_hw;
      }
    });
    return;
  }
  // channels_last: a task sums one block of channels of one image over all its pixels, in registers / L1,
  // four pixels per step (one load-add-store of the sums per four elements); no partials to merge.
  constexpr int64_t kMaxBlock = 256;
  int64_t block = std::min<int64_t>(l.c, kMaxBlock);
  const int64_t want = 2 * static_cast<int64_t>(at::get_num_threads());
  while (block > 32 && l.n * ((l.c + block - 1) / block) < want) block = (block / 2 + 15) / 16 * 16;
  const int64_t blocks_per_image = (l.c + block - 1) / block;
  at::parallel_for(0, l.n * blocks_per_image, 1, [&](int64_t b0, int64_t b1) {
    acc sums[kMaxBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / blocks_per_image, c0 = (b % blocks_per_image) * block;
      const int64_t len = std::min(block, l.c - c0);
      for (int64_t j = 0; j < len; ++j) sums[j] = acc(0);
      const scalar_t* xs = x + n * l.hw * l.c + c0;
      const int64_t C = l.c;
      int64_t p = 0;
      for (; p + 4 <= l.hw; p += 4, xs += 4 * C) {
        for_vectors<acc>(len, [&](int64_t j, int k, auto tail) {
          constexpr bool T = decltype(tail)::value;
          const V x01 = vload_span<T, acc>(xs + j, k) + vload_span<T, acc>(xs + C + j, k);
          const V x23 = vload_span<T, acc>(xs + 2 * C + j, k) + vload_span<T, acc>(xs + 3 * C + j, k);
          vstore_span<T, acc>(sums + j, vload_span<T, acc>(sums + j, k) + (x01 + x23), k);
        });
      }
      for (; p < l.hw; ++p, xs += C) {
        for_vectors<acc>(len, [&](int64_t j, int k, auto tail) {
          constexpr bool T = decltype(tail)::value;
          vstore_span<T, acc>(sums + j, vload_span<T, acc>(sums + j, k) + vload_span<T, acc>(xs + j, k), k);
        });
      }
      acc* __restrict__ out = pooled + n * l.c + c0;
      for (int64_t j = 0; j < len; ++j) out[j] = sums[j] * inv_hw;
    }
  });
}

// The passes over the activation (scale, backward) visit the tensor as contiguous spans in parallel: fn(offset, image, channel, length);
// in NCHW a span is one (n, c) plane of H*W elements of a single channel, in channels_last one pixel's C
// channels. Span loops take the channel stride S (0 or 1) as a template argument, so one body serves both
// layouts and vectorizes.
template <typename Fn>
void parallel_spans(const Layout& l, Fn fn) {
  if (l.channels_last) {
    const int64_t pixels = l.n * l.hw;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.c, 1));
    at::parallel_for(0, pixels, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) fn(p * l.c, p / l.hw, int64_t(0), l.c);
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) fn(q * l.hw, q / l.c, q % l.c, l.hw);
    });
  }
}

// The gate of lanes j .. j + n of a span (for_vectors): its one channel's, broadcast (S 0: NCHW), or one
// per lane (S 1: channels_last).
template <int S, bool Tail, typename acc>
inline typename Vec<acc>::type gate_vec(const acc* ss, int64_t j, int n) {
  if constexpr (S == 1) return vload_span<Tail, acc>(ss + j, n);
  else return typename Vec<acc>::type{} + ss[0];
}

// y = post(x * gate [+ residual]), gate [N, C].
template <typename scalar_t, typename acc, Act P, bool R>
void scale(const Layout& l, const scalar_t* x, const scalar_t* r, const acc* gate, scalar_t* y) {
  using V = typename Vec<acc>::type;
  cpu::dispatch_channel_stride(l, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    parallel_spans(l, [&](int64_t off, int64_t n, int64_t c, int64_t len) {
      const scalar_t* xs = x + off;
      const scalar_t* rs = r != nullptr ? r + off : nullptr;
      scalar_t* ys = y + off;
      const acc* ss = gate + n * l.c + c;
      for_vectors<acc>(len, [&](int64_t j, int k, auto tail) {
        constexpr bool T = decltype(tail)::value;
        V z = vload_span<T, acc>(xs + j, k) * gate_vec<S, T>(ss, j, k);
        if constexpr (R) z += vload_span<T, acc>(rs + j, k);
        vstore_span<T, acc>(ys + j, act_lanes<P, acc>(z), k);
      });
    });
  });
}

template <typename scalar_t, typename acc>
void scale_any(const Layout& l, Act post, const scalar_t* x, const scalar_t* r, const acc* gate, scalar_t* y) {
  cpu::dispatch_act(post, [&](auto P) {
    if (r != nullptr) {
      scale<scalar_t, acc, decltype(P)::value, true>(l, x, r, gate, y);
    } else {
      scale<scalar_t, acc, decltype(P)::value, false>(l, x, r, gate, y);
    }
  });
}

// The excitation on [N, C] in plain loops: hidden = pooled @ w1^T + b1 ([N, C_r], before the activation),
// gate = sigmoid(act(hidden) @ w2^T + b2) ([N, C]). w1 [C_r, C], w2 [C, C_r] row-major; biases may be null.
// scratch holds C_r * C + C_r values (w2 transposed, one activated hidden row).
template <typename acc>
void excite(int64_t n, int64_t c, int64_t cr, Act act, const acc* pooled, const acc* w1, const acc* b1,
            const acc* w2, const acc* b2, acc* hidden, acc* gate, acc* scratch) {
  auto dot = [](int64_t len, const acc* u, const acc* v) {
    return vector_sum<acc>(len, [&](int64_t j, int k, auto tail) {
      constexpr bool T = decltype(tail)::value;
      return vload_span<T, acc>(u + j, k) * vload_span<T, acc>(v + j, k);
    });
  };
  for (int64_t k = 0; k < cr; ++k) {  // each row of w1 once, against every image's pooled vector (in L1)
    const acc* __restrict__ w = w1 + k * c;
    for (int64_t i = 0; i < n; ++i) {
      const acc* __restrict__ p = pooled + i * c;
      hidden[i * cr + k] = dot(c, w, p) + (b1 ? b1[k] : acc(0));
    }
  }
  // fc2: with C_r >= 32, one contiguous dot product of w2's row per gate; narrower, w2 is transposed once so
  // that each activated hidden value scales a contiguous row added to the gates.
  const bool dots = cr >= 32;
  acc* __restrict__ w2t = scratch;  // [C_r, C]
  if (!dots)
    for (int64_t j = 0; j < c; ++j)
      for (int64_t k = 0; k < cr; ++k) w2t[k * c + j] = w2[j * cr + k];
  acc* __restrict__ a = scratch + cr * c;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < cr; ++k) a[k] = act_forward<acc>(act, hidden[i * cr + k]);
    acc* __restrict__ g = gate + i * c;
    if (dots) {
      for (int64_t j = 0; j < c; ++j) {
        const acc* __restrict__ w = w2 + j * cr;
        g[j] = dot(cr, w, a) + (b2 ? b2[j] : acc(0));
      }
    } else if (b2) {
      for (int64_t j = 0; j < c; ++j) g[j] = b2[j];
    } else {
      for (int64_t j = 0; j < c; ++j) g[j] = acc(0);
    }
    for (int64_t k = 0; k < (dots ? 0 : cr); ++k) {
      const acc ak = a[k];
      const acc* __restrict__ wk = w2t + k * c;
      for (int64_t j = 0; j < c; ++j) g[j] += ak * wk[j];
    }
    for (int64_t j = 0; j < c; ++j) {
      if constexpr (std::is_same_v<acc, float>) {
        g[j] = cpu::sigmoid_approx(g[j]);
      } else {
        g[j] = acc(1) / (acc(1) + std::exp(-g[j]));
      }
    }
  }
}

// Adds a span's vector terms vterm(j, n, tail) (for_vectors) into out: with S == 1 (one pixel's channels)
// lane by lane into the channels' slots out[j ..]; with S == 0 (one channel per span) their sum into out[0].
template <int S, typename acc, typename VTerm>
inline void accumulate_span(int64_t len, acc* out, VTerm vterm) {
  if constexpr (S == 1) {
    for_vectors<acc>(len, [&](int64_t j, int n, auto tail) {
      constexpr bool T = decltype(tail)::value;
      vstore_span<T, acc>(out + j, vload_span<T, acc>(out + j, n) + vterm(j, n, tail), n);
    });
  } else {
    out[0] += vector_sum<acc>(len, vterm);
  }
}

// Per-(image, channel) sums over H*W: out[n * C + c] = sum_hw term. span_sums(offset, n, c, len, out)
// accumulates one span into out (out points at the span's first channel slot).
template <typename acc, typename SpanSums>
void image_channel_sums(const Layout& l, acc* out, SpanSums span_sums) {
  if (!l.channels_last) {  // one plane per (n, c): its sum is final
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        out[q] = acc(0);
        span_sums(q * l.hw, q / l.c, q % l.c, l.hw, out + q);
      }
    });
    return;
  }
  // channels_last: blocks of pixels of one image, each with its own [C] partial sums, merged at the end.
  const int64_t per_block = std::max<int64_t>(1, 16384 / std::max<int64_t>(l.c, 1));
  const int64_t blocks_per_image = (l.hw + per_block - 1) / per_block;
  const int64_t blocks = l.n * blocks_per_image;
  std::vector<acc> partial(static_cast<size_t>(blocks * l.c), acc(0));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / blocks_per_image, first = (b % blocks_per_image) * per_block;
      const int64_t last = std::min(l.hw, first + per_block);
      acc* sums = partial.data() + b * l.c;
      for (int64_t p = first; p < last; ++p) span_sums((n * l.hw + p) * l.c, n, int64_t(0), l.c, sums);
    }
  });
  at::parallel_for(0, l.n * l.c, 256, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t n = k / l.c, c = k % l.c;
      acc s = 0;
      for (int64_t b = 0; b < blocks_per_image; ++b) s += partial[(n * blocks_per_image + b) * l.c + c];
      out[k] = s;
    }
  });
}


// grad_gate[n, c] = sum over H*W of g * x, g = dy * post'(x * s [+ r]) recomputed. Every operand is loaded as
// a whole vector (vload_span) and post' selects lane by lane: written as scalar loops, GCC 12 sank the load
// of dy into the select's branch and, in the avx2 variant, if-converted it into masked loads (vmaskmovps)
// that gave the second vector of each 16-lane group the first one's mask (NCHW sums with a ReLU post were
// wrong wherever lanes t and t + 8 of a group differed in sign).
template <typename scalar_t, typename acc>
void backward_gate_sums(const Layout& l, Act post, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
                        const acc* s, acc* grad_gate) {
  using V = typename Vec<acc>::type;
  cpu::dispatch_act(post, [&](auto P_) {
    constexpr Act P = decltype(P_)::value;
    cpu::dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      image_channel_sums<acc>(l, grad_gate, [&](int64_t off, int64_t n, int64_t c, int64_t len, acc* out) {
        const scalar_t* xs = x + off;
        const scalar_t* dys = dy + off;
        const scalar_t* rs = r != nullptr ? r + off : nullptr;
        const acc* ss = s + n * l.c + c;
        auto sums = [&](auto R) {
          accumulate_span<S, acc>(len, out, [&](int64_t j, int k, auto tail) {
            constexpr bool T = decltype(tail)::value;
            const V xv = vload_span<T, acc>(xs + j, k);
            V z = xv * gate_vec<S, T>(ss, j, k);
            if constexpr (decltype(R)::value) z += vload_span<T, acc>(rs + j, k);
            return act_backward_lanes<P, acc>(vload_span<T, acc>(dys + j, k), z) * xv;
          });
        };
        if (r != nullptr) sums(std::true_type{});
        else sums(std::false_type{});
      });
    });
  });
}

// dx = g * s + dp (dp: the gradient through the pool, [N, C]), dr = g.
template <typename scalar_t, typename acc>
void backward_input(const Layout& l, Act post, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
                    const acc* s, const acc* dpp, scalar_t* dx, scalar_t* dr) {
  using V = typename Vec<acc>::type;
  cpu::dispatch_act(post, [&](auto P_) {
    constexpr Act P = decltype(P_)::value;
    cpu::dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      parallel_spans(l, [&](int64_t off, int64_t n, int64_t c, int64_t len) {
        const scalar_t* xs = x + off;
        const scalar_t* dys = dy + off;
        const scalar_t* rs = r != nullptr ? r + off : nullptr;
        scalar_t* dxs = dx + off;
        scalar_t* drs = dr != nullptr ? dr + off : nullptr;
        const acc* ss = s + n * l.c + c;
        const acc* dps = dpp + n * l.c + c;
        auto grads = [&](auto R) {
          for_vectors<acc>(len, [&](int64_t j, int k, auto tail) {
            constexpr bool T = decltype(tail)::value;
            const V sv = gate_vec<S, T>(ss, j, k);
            V z = vload_span<T, acc>(xs + j, k) * sv;
            if constexpr (decltype(R)::value) z += vload_span<T, acc>(rs + j, k);
            const V g = act_backward_lanes<P, acc>(vload_span<T, acc>(dys + j, k), z);
            vstore_span<T, acc>(dxs + j, g * sv + gate_vec<S, T>(dps, j, k), k);
            if constexpr (decltype(R)::value) vstore_span<T, acc>(drs + j, g, k);
          });
        };
        if (r != nullptr) grads(std::true_type{});
        else grads(std::false_type{});
      });
    });
  });
}

// ------------------------------------------------------------------------ entry points ----

void run_pool_excite(const Layout& l, Act act, bool direct, const Tensor& input, const Tensor& fc1_weight,
                     const OptTensor& fc1_bias, const Tensor& fc2_weight, const OptTensor& fc2_bias,
                     const Tensor& pooled, const Tensor& hidden, const Tensor& gate) {
  const auto acc_type = pooled.scalar_type();
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "se_forward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    pool<scalar_t, acc>(l, input.const_data_ptr<scalar_t>(), pooled.data_ptr<acc>());
    if (!direct) return;
    // The weights as [out, in] acc arrays; no copy when they already are (float32 / float64 parameters).
    auto as_acc = [&](const Tensor& t) { return t.scalar_type() == acc_type && t.is_contiguous() ? t : t.to(acc_type).contiguous(); };
    const Tensor w1 = as_acc(fc1_weight), w2 = as_acc(fc2_weight);
    const Tensor b1 = fc1_bias ? as_acc(*fc1_bias) : Tensor(), b2 = fc2_bias ? as_acc(*fc2_bias) : Tensor();
    const int64_t cr = fc1_weight.size(0);
    std::vector<acc> scratch(static_cast<size_t>(cr * l.c + cr));
    excite<acc>(l.n, l.c, cr, act, pooled.const_data_ptr<acc>(), w1.const_data_ptr<acc>(),
                b1.defined() ? b1.const_data_ptr<acc>() : nullptr, w2.const_data_ptr<acc>(),
                b2.defined() ? b2.const_data_ptr<acc>() : nullptr, hidden.data_ptr<acc>(), gate.data_ptr<acc>(),
                scratch.data());
  });
}

void run_scale(const Layout& l, Act post, const Tensor& input, const Tensor& residual, const Tensor& gate,
               const Tensor& output) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "se_forward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    scale_any<scalar_t, acc>(l, post, input.const_data_ptr<scalar_t>(),
                             residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
                             gate.const_data_ptr<acc>(), output.data_ptr<scalar_t>());
  });
}

void run_backward_gate_sums(const Layout& l, Act post, const Tensor& input, const Tensor& grad_output,
                            const Tensor& residual, const Tensor& gate, const Tensor& grad_gate) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "se_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    backward_gate_sums<scalar_t, acc>(l, post, input.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
                                      residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
                                      gate.const_data_ptr<acc>(), grad_gate.data_ptr<acc>());
  });
}

void run_backward_input(const Layout& l, Act post, const Tensor& input, const Tensor& grad_output,
                        const Tensor& residual, const Tensor& gate, const Tensor& dpooled, const Tensor& grad_input,
                        const Tensor& grad_residual) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "se_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    backward_input<scalar_t, acc>(l, post, input.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
                                  residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
                                  gate.const_data_ptr<acc>(), dpooled.const_data_ptr<acc>(),
                                  grad_input.data_ptr<scalar_t>(),
                                  grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr);
  });
}

extern const SeKernels kernels = {&run_pool_excite, &run_scale, &run_backward_gate_sums, &run_backward_input};
