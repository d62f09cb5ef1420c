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

// 16 independent partial sums per reduction, so float sums vectorize without -ffast-math.
constexpr int kSeLanes = 16;

template <typename acc, typename Load>
inline acc lane_sum(int64_t len, Load load) {
  acc lanes[kSeLanes] = {};
  int64_t j = 0;
  for (; j + kSeLanes <= len; j += kSeLanes)
    for (int t = 0; t < kSeLanes; ++t) lanes[t] += load(j + t);
  for (; j < len; ++j) lanes[j % kSeLanes] += load(j);
  acc s = 0;
  for (int t = 0; t < kSeLanes; ++t) s += lanes[t];
  return s;
}

// pooled[n * C + c] = mean over H*W of x[n, c].
template <typename scalar_t, typename acc>
void pool(const Layout& l, const scalar_t* x, acc* pooled) {
  const acc inv_hw = acc(1) / static_cast<acc>(l.hw);
  if (!l.channels_last) {  // one plane per (n, c)
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const scalar_t* __restrict__ xs = x + q * l.hw;
        pooled[q] = lane_sum<acc>(l.hw, [&](int64_t j) { return static_cast<acc>(xs[j]); }) * inv_hw;
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
        const scalar_t* __restrict__ x0 = xs;
        const scalar_t* __restrict__ x1 = xs + C;
        const scalar_t* __restrict__ x2 = xs + 2 * C;
        const scalar_t* __restrict__ x3 = xs + 3 * C;
        acc* __restrict__ o = sums;
        for (int64_t j = 0; j < len; ++j)
          o[j] += (static_cast<acc>(x0[j]) + static_cast<acc>(x1[j])) + (static_cast<acc>(x2[j]) + static_cast<acc>(x3[j]));
      }
      for (; p < l.hw; ++p, xs += C) {
        const scalar_t* __restrict__ x0 = xs;
        acc* __restrict__ o = sums;
        for (int64_t j = 0; j < len; ++j) o[j] += static_cast<acc>(x0[j]);
      }
      acc* __restrict__ out = pooled + n * l.c + c0;
      for (int64_t j = 0; j < len; ++j) out[j] = sums[j] * inv_hw;
    }
  });
}

// y = post(x * gate [+ residual]), gate [N, C].
template <typename scalar_t, typename acc, Act P, bool R>
void scale(const Layout& l, const scalar_t* x, const scalar_t* r, const acc* gate, scalar_t* y) {
  if (!l.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const scalar_t* __restrict__ xs = x + q * l.hw;
        scalar_t* __restrict__ ys = y + q * l.hw;
        const acc s = gate[q];
        if constexpr (R) {
          const scalar_t* __restrict__ rs = r + q * l.hw;
          for (int64_t j = 0; j < l.hw; ++j)
            ys[j] = static_cast<scalar_t>(cpu::cpu_act<P, acc>(static_cast<acc>(xs[j]) * s + static_cast<acc>(rs[j])));
        } else {
          for (int64_t j = 0; j < l.hw; ++j) ys[j] = static_cast<scalar_t>(cpu::cpu_act<P, acc>(static_cast<acc>(xs[j]) * s));
        }
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.c, 1));
  at::parallel_for(0, l.pixels(), grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = p * l.c;
      const scalar_t* __restrict__ xs = x + off;
      scalar_t* __restrict__ ys = y + off;
      const acc* __restrict__ ss = gate + (p / l.hw) * l.c;
      if constexpr (R) {
        const scalar_t* __restrict__ rs = r + off;
        for (int64_t j = 0; j < l.c; ++j)
          ys[j] = static_cast<scalar_t>(cpu::cpu_act<P, acc>(static_cast<acc>(xs[j]) * ss[j] + static_cast<acc>(rs[j])));
      } else {
        for (int64_t j = 0; j < l.c; ++j) ys[j] = static_cast<scalar_t>(cpu::cpu_act<P, acc>(static_cast<acc>(xs[j]) * ss[j]));
      }
    }
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
  for (int64_t k = 0; k < cr; ++k) {  // each row of w1 once, against every image's pooled vector (in L1)
    const acc* __restrict__ w = w1 + k * c;
    for (int64_t i = 0; i < n; ++i) {
      const acc* __restrict__ p = pooled + i * c;
      hidden[i * cr + k] = lane_sum<acc>(c, [&](int64_t j) { return w[j] * p[j]; }) + (b1 ? b1[k] : acc(0));
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
        g[j] = lane_sum<acc>(cr, [&](int64_t k) { return w[k] * a[k]; }) + (b2 ? b2[j] : acc(0));
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

// The backward's passes. Visits the tensor as contiguous spans in parallel: fn(offset, image, channel, length);
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

// Sum over one span of term(j): with S == 1 every element adds into its channel's slot out[j]; with S == 0
// (one channel per span) into kSeLanes partial sums, so the float reduction vectorizes without -ffast-math.
template <int S, typename acc, typename Term>
inline void accumulate_span(int64_t len, acc* __restrict__ out, Term term) {
  if constexpr (S == 1) {
    for (int64_t j = 0; j < len; ++j) out[j] += term(j);
  } else {
    acc lanes[kSeLanes] = {};
    int64_t j = 0;
    for (; j + kSeLanes <= len; j += kSeLanes)
      for (int t = 0; t < kSeLanes; ++t) lanes[t] += term(j + t);
    for (; j < len; ++j) lanes[0] += term(j);
    acc s = 0;
    for (int t = 0; t < kSeLanes; ++t) s += lanes[t];
    out[0] += s;
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


// grad_gate[n, c] = sum over H*W of g * x, g = dy * post'(x * s [+ r]) recomputed.
template <typename scalar_t, typename acc>
void backward_gate_sums(const Layout& l, Act post, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
                        const acc* s, acc* grad_gate) {
  auto grad_z = [](auto P, acc xj, acc dyj, acc sj, acc rj) { return act_backward<acc>(P, dyj, xj * sj + rj); };
  cpu::dispatch_act(post, [&](auto P) {
    cpu::dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      image_channel_sums<acc>(l, grad_gate, [&](int64_t off, int64_t n, int64_t c, int64_t len, acc* out) {
        const scalar_t* __restrict__ xs = x + off;
        const scalar_t* __restrict__ dys = dy + off;
        const acc* __restrict__ ss = s + n * l.c + c;
        if (r != nullptr) {
          const scalar_t* __restrict__ rs = r + off;
          accumulate_span<S, acc>(len, out, [&](int64_t j) {
            const acc xj = static_cast<acc>(xs[j]);
            return grad_z(P, xj, static_cast<acc>(dys[j]), ss[j * S], static_cast<acc>(rs[j])) * xj;
          });
        } else {
          accumulate_span<S, acc>(len, out, [&](int64_t j) {
            const acc xj = static_cast<acc>(xs[j]);
            return grad_z(P, xj, static_cast<acc>(dys[j]), ss[j * S], acc(0)) * xj;
          });
        }
      });
    });
  });
}

// dx = g * s + dp (dp: the gradient through the pool, [N, C]), dr = g.
template <typename scalar_t, typename acc>
void backward_input(const Layout& l, Act post, const scalar_t* x, const scalar_t* dy, const scalar_t* r,
                    const acc* s, const acc* dpp, scalar_t* dx, scalar_t* dr) {
  auto grad_z = [](auto P, acc xj, acc dyj, acc sj, acc rj) { return act_backward<acc>(P, dyj, xj * sj + rj); };
  cpu::dispatch_act(post, [&](auto P) {
    cpu::dispatch_channel_stride(l, [&](auto S_) {
      constexpr int S = decltype(S_)::value;
      parallel_spans(l, [&](int64_t off, int64_t n, int64_t c, int64_t len) {
        const scalar_t* __restrict__ xs = x + off;
        const scalar_t* __restrict__ dys = dy + off;
        scalar_t* __restrict__ dxs = dx + off;
        const acc* __restrict__ ss = s + n * l.c + c;
        const acc* __restrict__ dps = dpp + n * l.c + c;
        if (r != nullptr) {
          const scalar_t* __restrict__ rs = r + off;
          scalar_t* __restrict__ drs = dr + off;
          for (int64_t j = 0; j < len; ++j) {
            const acc g = grad_z(P, static_cast<acc>(xs[j]), static_cast<acc>(dys[j]), ss[j * S], static_cast<acc>(rs[j]));
            dxs[j] = static_cast<scalar_t>(g * ss[j * S] + dps[j * S]);
            drs[j] = static_cast<scalar_t>(g);
          }
        } else {
          for (int64_t j = 0; j < len; ++j) {
            const acc g = grad_z(P, static_cast<acc>(xs[j]), static_cast<acc>(dys[j]), ss[j * S], acc(0));
            dxs[j] = static_cast<scalar_t>(g * ss[j * S] + dps[j * S]);
          }
        }
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

#if PYCNN_ISA_VARIANT == 0  // only the baseline's runs (see se.cpp): not built into the other variants
void run_backward_gate_sums(const Layout& l, Act post, const Tensor& input, const Tensor& grad_output,
                            const Tensor& residual, const Tensor& gate, const Tensor& grad_gate) {
  PYCNN_DISPATCH_FLOATING_TYPES_AND_HALF_BF16(input.scalar_type(), "se_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    backward_gate_sums<scalar_t, acc>(l, post, input.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
                                      residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr,
                                      gate.const_data_ptr<acc>(), grad_gate.data_ptr<acc>());
  });
}

#endif

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

extern const SeKernels kernels = {&run_pool_excite, &run_scale,
#if PYCNN_ISA_VARIANT == 0
                                  &run_backward_gate_sums,
#else
                                  nullptr,
#endif
                                  &run_backward_input};
