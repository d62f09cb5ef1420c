// CPU implementation of pycnn::bn_act_forward / bn_act_backward (at::parallel_for, OpenMP in torch).
//
// The tensor is visited as contiguous spans: in NCHW a span is one (n, c) plane of H*W elements of a
// single channel; in channels_last a span is one pixel's C channels. Statistics are reduced per span
// block in two passes over cache-resident data and merged with Chan's formula (numerically stable).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "bn_act.h"

namespace pycnn {
namespace {

struct Layout {
  int64_t n, c, hw;
  bool channels_last;
  int64_t pixels() const { return n * hw; }
};

Layout layout_of(const Tensor& x) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), kernel_memory_format(x) == at::MemoryFormat::ChannelsLast};
}

// Runs body(std::integral_constant<Act, A>) so the activation is a compile-time constant in hot loops.
template <typename Body>
void dispatch_act(Act act, Body body) {
  switch (act) {
    case Act::ReLU: return body(std::integral_constant<Act, Act::ReLU>{});
    case Act::ReLU6: return body(std::integral_constant<Act, Act::ReLU6>{});
    case Act::SiLU: return body(std::integral_constant<Act, Act::SiLU>{});
    case Act::HardSwish: return body(std::integral_constant<Act, Act::HardSwish>{});
    default: return body(std::integral_constant<Act, Act::None>{});
  }
}

// Calls elem(i, c) for every element, in parallel; i is the flat offset, c the channel.
template <typename Elem>
void parallel_elementwise(const Layout& l, Elem elem) {
  if (l.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.c, 1));
    at::parallel_for(0, l.pixels(), grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t base = p * l.c;
        for (int64_t c = 0; c < l.c; ++c) elem(base + c, c);
      }
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(l.hw, 1));
    at::parallel_for(0, l.n * l.c, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t c = q % l.c, base = q * l.hw;
        for (int64_t i = 0; i < l.hw; ++i) elem(base + i, c);
      }
    });
  }
}

// Per-channel sums of f(i, c) over all elements, reduced in parallel blocks: out[k][c] for K sums.
template <int K, typename acc, typename F>
void channel_sums(const Layout& l, acc* out, F f) {
  if (l.channels_last) {
    const int64_t rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(l.c, 1));
    const int64_t blocks = (l.pixels() + rows - 1) / rows;
    std::vector<acc> partial(static_cast<size_t>(blocks * K * l.c), acc(0));
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc* sums = partial.data() + b * K * l.c;
        const int64_t end = std::min(l.pixels(), (b + 1) * rows);
        for (int64_t p = b * rows; p < end; ++p)
          for (int64_t c = 0; c < l.c; ++c) {
            acc v[K];
            f(p * l.c + c, c, v);
            for (int k = 0; k < K; ++k) sums[k * l.c + c] += v[k];
          }
      }
    });
    for (int64_t k = 0; k < K * l.c; ++k) {
      acc s = 0;
      for (int64_t b = 0; b < blocks; ++b) s += partial[b * K * l.c + k];
      out[k] = s;
    }
  } else {
    at::parallel_for(0, l.c, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc s[K] = {};
        for (int64_t n = 0; n < l.n; ++n) {
          const int64_t base = (n * l.c + c) * l.hw;
          acc plane[K] = {};
          for (int64_t i = 0; i < l.hw; ++i) {
            acc v[K];
            f(base + i, c, v);
            for (int k = 0; k < K; ++k) plane[k] += v[k];
          }
          for (int k = 0; k < K; ++k) s[k] += plane[k];
        }
        for (int k = 0; k < K; ++k) out[k * l.c + c] = s[k];
      }
    });
  }
}

// Batch mean and biased variance per channel: per block, mean then squared deviations from that
// mean (two passes over cache-resident data); blocks merged with Chan's parallel formula.
template <typename scalar_t, typename acc>
void batch_moments(const Layout& l, const scalar_t* x, acc* mean, acc* var) {
  auto merge = [](acc& n, acc& m, acc& m2, acc nb, acc mb, acc m2b) {
    const acc total = n + nb, delta = mb - m;
    m += delta * nb / total;
    m2 += m2b + delta * delta * n * nb / total;
    n = total;
  };
  if (l.channels_last) {
    const int64_t rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(l.c, 1));
    const int64_t blocks = (l.pixels() + rows - 1) / rows;
    std::vector<acc> bmean(static_cast<size_t>(blocks * l.c), acc(0)), bm2(bmean.size(), acc(0));
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc* __restrict__ m = bmean.data() + b * l.c;
        acc* __restrict__ m2 = bm2.data() + b * l.c;
        const int64_t p0 = b * rows, p1 = std::min(l.pixels(), p0 + rows);
        for (int64_t p = p0; p < p1; ++p) {
          const scalar_t* __restrict__ row = x + p * l.c;
          for (int64_t c = 0; c < l.c; ++c) m[c] += static_cast<acc>(row[c]);
        }
        const acc inv = acc(1) / static_cast<acc>(p1 - p0);
        for (int64_t c = 0; c < l.c; ++c) m[c] *= inv;
        for (int64_t p = p0; p < p1; ++p) {
          const scalar_t* __restrict__ row = x + p * l.c;
          for (int64_t c = 0; c < l.c; ++c) {
            const acc d = static_cast<acc>(row[c]) - m[c];
            m2[c] += d * d;
          }
        }
      }
    });
    at::parallel_for(0, l.c, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc n = 0, m = 0, m2 = 0;
        for (int64_t b = 0; b < blocks; ++b) {
          const acc nb = static_cast<acc>(std::min(l.pixels(), (b + 1) * rows) - b * rows);
          merge(n, m, m2, nb, bmean[b * l.c + c], bm2[b * l.c + c]);
        }
        mean[c] = m;
        var[c] = m2 / n;
      }
    });
  } else {
    at::parallel_for(0, l.c, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc n = 0, m = 0, m2 = 0;
        for (int64_t img = 0; img < l.n; ++img) {
          const scalar_t* __restrict__ plane = x + (img * l.c + c) * l.hw;
          acc s = 0;
          for (int64_t i = 0; i < l.hw; ++i) s += static_cast<acc>(plane[i]);
          const acc pm = s / static_cast<acc>(l.hw);
          acc q = 0;
          for (int64_t i = 0; i < l.hw; ++i) {
            const acc d = static_cast<acc>(plane[i]) - pm;
            q += d * d;
          }
          merge(n, m, m2, static_cast<acc>(l.hw), pm, q);
        }
        mean[c] = m;
        var[c] = m2 / n;
      }
    });
  }
}

std::tuple<Tensor, Tensor, Tensor> bn_act_forward_cpu(const Tensor& input_, const OptTensor& weight,
                                                      const OptTensor& bias, const OptTensor& residual_,
                                                      const OptTensor& running_mean, const OptTensor& running_var,
                                                      bool training, double eps, c10::string_view act_name) {
  check_bn_act_forward_args(input_, weight, bias, residual_, running_mean, running_var, training);
  const Act act = parse_act("pycnn.bn_act", act_name);
  const auto format = kernel_memory_format(input_);
  const Tensor input = input_.contiguous(format);
  const Tensor residual = residual_ ? residual_->contiguous(format) : Tensor();
  const Layout l = layout_of(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  Tensor output = at::empty_like(input, format);
  Tensor mean, var;
  if (training) {
    mean = at::empty({l.c}, input.options().dtype(acc_type));
    var = at::empty({l.c}, input.options().dtype(acc_type));
  } else {
    mean = running_mean->to(acc_type, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(acc_type, false, true).contiguous();
  }
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bn_act_forward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    if (training) batch_moments<scalar_t, acc>(l, x, mean.data_ptr<acc>(), var.data_ptr<acc>());
    std::vector<acc> scale(l.c), shift(l.c);
    for (int64_t c = 0; c < l.c; ++c) {
      const acc invstd = acc(1) / std::sqrt(var.const_data_ptr<acc>()[c] + static_cast<acc>(eps));
      scale[c] = w.const_data_ptr<acc>()[c] * invstd;
      shift[c] = b.const_data_ptr<acc>()[c] - mean.const_data_ptr<acc>()[c] * scale[c];
    }
    const acc* sc = scale.data();
    const acc* sh = shift.data();
    const scalar_t* r = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y = output.data_ptr<scalar_t>();
    dispatch_act(act, [&](auto A) {
      if (r) {
        parallel_elementwise(l, [=](int64_t i, int64_t c) {
          y[i] = static_cast<scalar_t>(act_forward<acc>(A, static_cast<acc>(x[i]) * sc[c] + sh[c] + static_cast<acc>(r[i])));
        });
      } else {
        parallel_elementwise(l, [=](int64_t i, int64_t c) {
          y[i] = static_cast<scalar_t>(act_forward<acc>(A, static_cast<acc>(x[i]) * sc[c] + sh[c]));
        });
      }
    });
  });
  return {output, mean, var};
}

std::tuple<Tensor, Tensor, Tensor, OptTensor> bn_act_backward_cpu(
    const Tensor& grad_output_, const Tensor& input_, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual_, const Tensor& save_mean, const Tensor& save_var, bool training, double eps,
    c10::string_view act_name) {
  check_bn_act_backward_args(grad_output_, input_, weight, bias, residual_, save_mean, save_var);
  const Act act = parse_act("pycnn.bn_act_backward", act_name);
  const auto format = kernel_memory_format(input_);
  const Tensor input = input_.contiguous(format);
  const Tensor grad_output = grad_output_.contiguous(format);
  const Tensor residual = residual_ ? residual_->contiguous(format) : Tensor();
  const Layout l = layout_of(input);
  const auto acc_type = acc_dtype(input.scalar_type());
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);
  const Tensor mean = save_mean.to(acc_type).contiguous(), var = save_var.to(acc_type).contiguous();
  Tensor grad_input = at::empty_like(input, format);
  Tensor grad_residual = residual.defined() ? at::empty_like(input, format) : Tensor();
  Tensor sums = at::empty({2, l.c}, input.options().dtype(acc_type));  // [sum dz, sum dz * (x - mean)]

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bn_act_backward_cpu", [&] {
    using acc = at::opmath_type<scalar_t>;
    std::vector<acc> invstd(l.c), scale(l.c), shift(l.c);
    const acc* mu = mean.const_data_ptr<acc>();
    for (int64_t c = 0; c < l.c; ++c) {
      invstd[c] = acc(1) / std::sqrt(var.const_data_ptr<acc>()[c] + static_cast<acc>(eps));
      scale[c] = w.const_data_ptr<acc>()[c] * invstd[c];
      shift[c] = b.const_data_ptr<acc>()[c] - mu[c] * scale[c];
    }
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* r = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc* sc = scale.data();
    const acc* sh = shift.data();
    acc* s = sums.data_ptr<acc>();
    dispatch_act(act, [&](auto A) {
      // dz = dy * act'(z), z recomputed from x (and the residual).
      auto grad_z = [=](int64_t i, int64_t c) {
        const acc z = static_cast<acc>(x[i]) * sc[c] + sh[c] + (r ? static_cast<acc>(r[i]) : acc(0));
        return static_cast<acc>(dy[i]) * act_derivative<acc>(A, z);
      };
      channel_sums<2, acc>(l, s, [=](int64_t i, int64_t c, acc* v) {
        const acc dz = grad_z(i, c);
        v[0] = dz;
        v[1] = dz * (static_cast<acc>(x[i]) - mu[c]);
      });
      // dx = k_dz * dz + k_x * (x - mean) + k_0 per channel (training couples x through the batch stats).
      std::vector<acc> k_dz(l.c), k_x(l.c), k_0(l.c);
      const acc inv_count = acc(1) / static_cast<acc>(l.pixels());
      for (int64_t c = 0; c < l.c; ++c) {
        k_dz[c] = scale[c];
        k_x[c] = training ? -scale[c] * invstd[c] * invstd[c] * s[l.c + c] * inv_count : acc(0);
        k_0[c] = training ? -scale[c] * s[c] * inv_count : acc(0);
      }
      const acc* kdz = k_dz.data();
      const acc* kx = k_x.data();
      const acc* k0 = k_0.data();
      scalar_t* dx = grad_input.data_ptr<scalar_t>();
      scalar_t* dr = grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr;
      parallel_elementwise(l, [=](int64_t i, int64_t c) {
        const acc dz = grad_z(i, c);
        dx[i] = static_cast<scalar_t>(kdz[c] * dz + kx[c] * (static_cast<acc>(x[i]) - mu[c]) + k0[c]);
        if (dr) dr[i] = static_cast<scalar_t>(dz);
      });
      for (int64_t c = 0; c < l.c; ++c) s[l.c + c] *= invstd[c];  // sum dz * xhat
    });
  });
  Tensor grad_bias = sums[0].clone(), grad_weight = sums[1].clone();
  if (weight) grad_weight = grad_weight.to(weight->scalar_type());
  if (bias) grad_bias = grad_bias.to(bias->scalar_type());
  return {grad_input, grad_weight, grad_bias, residual.defined() ? OptTensor(grad_residual) : std::nullopt};
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) {
  m.impl("bn_act_forward", &bn_act_forward_cpu);
  m.impl("bn_act_backward", &bn_act_backward_cpu);
}

}  // namespace pycnn
