// CPU implementation of pycnn::se_forward / se_backward (at::parallel_for, OpenMP in torch).
//
// Two passes over the activation each way, as on the GPU:
//   forward:  per-(image, channel) sums of x (the pool) -> the two tiny FCs on [N, C] (ATen GEMMs, so
//             wide SE layers such as RegNetY-32GF's run at BLAS speed) -> y = post(x * gate [+ residual]).
//   backward: per-(image, channel) sums of g * x, g = dy * post'(x * gate [+ residual]) -> the FC
//             gradients on [N, C] -> dx = g * gate + dpooled / HW, dresidual = g.
// The tensor is visited as contiguous spans as in bn_act: in NCHW one (n, c) plane of H*W elements of a
// single channel; in channels_last one pixel's C channels. Span loops take the channel stride S (0 or 1)
// as a template argument so one body serves both layouts and the compiler vectorizes it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/kernel_utils.h"
#include "cpu/se_entries.h"
#include "se.h"

namespace pycnn {

// The forward's passes (pool, scale) and small excitations run in cpu/se_kernels.h, built once per variant
// (baseline, AVX2+FMA, AVX-512: cpu/isa_kernels.h); the backward's loops below are baseline code.

namespace {

using cpu::dispatch_act;
using cpu::dispatch_channel_stride;
using cpu::Layout;
using cpu::layout_of;

// Visits the tensor as contiguous spans in parallel: fn(offset, image, channel, length); see the file comment.
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

constexpr int kLanes = 16;

// Sum over one span of term(j): with S == 1 every element adds into its channel's slot out[j]; with S == 0
// (one channel per span) into kLanes partial sums, so the float reduction vectorizes without -ffast-math.
template <int S, typename acc, typename Term>
inline void accumulate_span(int64_t len, acc* __restrict__ out, Term term) {
  if constexpr (S == 1) {
    for (int64_t j = 0; j < len; ++j) out[j] += term(j);
  } else {
    acc lanes[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= len; j += kLanes)
      for (int t = 0; t < kLanes; ++t) lanes[t] += term(j + t);
    for (; j < len; ++j) lanes[0] += term(j);
    acc s = 0;
    for (int t = 0; t < kLanes; ++t) s += lanes[t];
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

// Elementwise act(z) on a small contiguous tensor (hidden [N, C_r]).
template <typename acc>
Tensor apply_act(const Tensor& z, Act act) {
  Tensor out = at::empty_like(z);
  const acc* zp = z.const_data_ptr<acc>();
  acc* op = out.data_ptr<acc>();
  for (int64_t i = 0; i < z.numel(); ++i) op[i] = act_forward<acc>(act, zp[i]);
  return out;
}

// act_backward(dy, z) elementwise, in place on dy (same shape as z, contiguous).
template <typename acc>
Tensor& apply_act_backward_(Tensor& dy, const Tensor& z, Act act) {
  const acc* zp = z.const_data_ptr<acc>();
  acc* dp = dy.data_ptr<acc>();
  for (int64_t i = 0; i < z.numel(); ++i) dp[i] = act_backward<acc>(act, dp[i], zp[i]);
  return dy;
}

Tensor fc_matrix(const Tensor& w, at::ScalarType acc_type) {  // [out, in] in the accumulation dtype
  return w.reshape({w.size(0), w.size(1)}).to(acc_type).contiguous();
}

std::tuple<Tensor, Tensor, Tensor, Tensor> se_forward_cpu(const Tensor& input_, const Tensor& fc1_weight,
                                                          const OptTensor& fc1_bias, const Tensor& fc2_weight,
                                                          const OptTensor& fc2_bias, const OptTensor& residual_,
                                                          c10::string_view act_name, c10::string_view post_name) {
  constexpr std::string_view op = "pycnn.se";
  check_se_args(op, input_, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual_);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  const auto format = kernel_memory_format(input_);
  const Tensor input = input_.contiguous(format);
  const Tensor residual = residual_ ? residual_->contiguous(format) : Tensor();
  const Layout l = layout_of(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  Tensor output = at::empty_like(input, format);
  Tensor pooled = at::empty({l.n, l.c}, input.options().dtype(acc_type));
  Tensor hidden, gate;

  const int64_t cr = fc1_weight.size(0);
  // Up to this many multiply-adds per FC the excitation runs in se_kernels.h's loops (microseconds); wider
  // SE layers (RegNetY-32GF) go to ATen's GEMMs.
  constexpr int64_t kDirectExciteMacs = int64_t(1) << 20;
  const bool direct = l.n * l.c * cr <= kDirectExciteMacs;
  if (direct) {
    hidden = at::empty({l.n, cr}, pooled.options());
    gate = at::empty({l.n, l.c}, pooled.options());
  }

  const auto& kernels = PYCNN_CPU_KERNELS(se, input.scalar_type());
  kernels.pool_excite(l, act, direct, input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pooled, hidden, gate);
  if (!direct) {
    // The excitation: [N, C] -> [N, C_r] -> [N, C], GEMMs in the accumulation dtype.
    const Tensor w1 = fc_matrix(fc1_weight, acc_type), w2 = fc_matrix(fc2_weight, acc_type);
    hidden = fc1_bias ? at::addmm(fc1_bias->to(acc_type), pooled, w1.t()) : at::mm(pooled, w1.t());
    AT_DISPATCH_FLOATING_TYPES(acc_type, "se_forward_cpu", [&] {
      const Tensor a1 = apply_act<scalar_t>(hidden, act);
      gate = (fc2_bias ? at::addmm(fc2_bias->to(acc_type), a1, w2.t()) : at::mm(a1, w2.t())).sigmoid_();
    });
  }
  kernels.scale(l, post, input, residual, gate, output);
  return {output, pooled, hidden, gate};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, OptTensor> se_backward_cpu(
    const Tensor& grad_output_, const Tensor& input_, const Tensor& fc1_weight, const Tensor& fc2_weight,
    const OptTensor& residual_, const Tensor& pooled_, const Tensor& hidden_, const Tensor& gate_,
    c10::string_view act_name, c10::string_view post_name) {
  constexpr std::string_view op = "pycnn.se_backward";
  check_se_backward_args(op, grad_output_, input_, fc1_weight, fc2_weight, residual_, pooled_, hidden_, gate_);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  const auto format = kernel_memory_format(input_);
  const Tensor input = input_.contiguous(format);
  const Tensor grad_output = grad_output_.contiguous(format);
  const Tensor residual = residual_ ? residual_->contiguous(format) : Tensor();
  const Tensor pooled = pooled_.contiguous(), hidden = hidden_.contiguous(), gate = gate_.contiguous();
  const Layout l = layout_of(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  Tensor grad_input = at::empty_like(input, format);
  Tensor grad_residual = residual.defined() ? at::empty_like(input, format) : Tensor();
  Tensor grad_gate = at::empty({l.n, l.c}, input.options().dtype(acc_type));  // sum_hw g * x
  Tensor gw1, gb1, gw2, gb2;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "se_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* r = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc* s = gate.const_data_ptr<acc>();
    // g = dy * post'(z), z = x * s [+ r] recomputed.
    auto grad_z = [](auto P, acc xj, acc dyj, acc sj, acc rj) { return act_backward<acc>(P, dyj, xj * sj + rj); };
    dispatch_act(post, [&](auto P) {
      dispatch_channel_stride(l, [&](auto S_) {
        constexpr int S = decltype(S_)::value;
        image_channel_sums<acc>(l, grad_gate.data_ptr<acc>(), [&](int64_t off, int64_t n, int64_t c, int64_t len, acc* out) {
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
    // Back through sigmoid, fc2, act, fc1 on [N, C] / [N, C_r].
    const Tensor w1 = fc_matrix(fc1_weight, acc_type), w2 = fc_matrix(fc2_weight, acc_type);
    const Tensor dz2 = grad_gate * gate * (1 - gate);
    const Tensor a1 = apply_act<acc>(hidden, act);
    gw2 = dz2.t().mm(a1);
    gb2 = dz2.sum(0);
    Tensor dz1 = dz2.mm(w2);
    apply_act_backward_<acc>(dz1, hidden.contiguous(), act);
    gw1 = dz1.t().mm(pooled);
    gb1 = dz1.sum(0);
    const Tensor dp = dz1.mm(w1).mul_(1.0 / static_cast<double>(l.hw)).contiguous();  // d loss / d x via the pool

    const acc* dpp = dp.const_data_ptr<acc>();
    scalar_t* dx = grad_input.data_ptr<scalar_t>();
    scalar_t* dr = grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr;
    dispatch_act(post, [&](auto P) {
      dispatch_channel_stride(l, [&](auto S_) {
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
  });
  const auto wtype = fc1_weight.scalar_type();
  return {grad_input,
          gw1.reshape(fc1_weight.sizes()).to(wtype),
          gb1.to(wtype),
          gw2.reshape(fc2_weight.sizes()).to(wtype),
          gb2.to(wtype),
          residual.defined() ? OptTensor(grad_residual) : std::nullopt};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("se_forward", &se_forward_cpu);
  m.impl("se_backward", &se_backward_cpu);
}

}  // namespace pycnn
