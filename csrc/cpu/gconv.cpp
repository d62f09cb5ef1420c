// CPU implementation of pycnn::gconv_forward / gconv_backward (at::parallel_for, OpenMP in torch).
//
// Everything runs NHWC in the accumulation type (float, or double for float64): half-precision inputs
// are widened once, NCHW inputs transposed once, and the result converted back. The three convolutions
// (forward, dgrad, wgrad: per group small GEMMs on the NHWC tensors) run in cpu/gconv_kernels.h, compiled
// once per variant (baseline, AVX2+FMA, AVX-512: cpu/isa_kernels.h); the epilogue's backward
// (make_grad_conv) is here.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gconv_entries.h"
#include "cpu/kernel_utils.h"
#include "cpu/weight_forms.h"
#include "gconv.h"

namespace pycnn {
namespace {

// The NHWC tensor in the accumulation type (a view when it already is one).
Tensor nhwc_acc(const Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous(at::MemoryFormat::ChannelsLast);
}

// dconv = dy * act'(z) * scale with z = conv * scale + bias + residual recomputed from the saved conv;
// also grad_scale = sum dz * conv, grad_bias = sum dz, grad_residual = dz. The returned buffer has 16
// zero elements past the [rows, C_out] tensor (read, never used, by the wgrad micro-kernel). Absent tensors
// read a row of zeros (ones for the scale) and grad_residual goes to a scratch row, so the loop over a row's
// channels has no branch but the activation's and vectorizes.
template <typename acc, Act A>
Tensor make_grad_conv(const GConvGeometry& g, const Tensor& dy, const Tensor& conv, const Tensor& scale,
                      const Tensor& bias, const Tensor& res, const Tensor& dres, const Tensor& sums) {
  const int64_t rows = g.out_rows(), c = g.c_out;
  Tensor buf = at::empty({rows * c + 16}, dy.options());
  buf.narrow(0, rows * c, 16).zero_();
  const std::vector<acc> zeros(c, acc(0)), ones(c, acc(1));
  const acc* dyp = dy.const_data_ptr<acc>();
  const acc* cp = conv.defined() ? conv.const_data_ptr<acc>() : nullptr;
  const acc* sp = scale.defined() ? scale.const_data_ptr<acc>() : ones.data();
  const acc* bp = bias.defined() ? bias.const_data_ptr<acc>() : zeros.data();
  const acc* rp = res.defined() ? res.const_data_ptr<acc>() : nullptr;
  acc* drp = dres.defined() ? dres.data_ptr<acc>() : nullptr;
  acc* dcp = buf.data_ptr<acc>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * at::get_num_threads()));
  std::vector<acc> part(static_cast<size_t>(chunks * 2 * c), acc(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<acc> scratch(c);
    for (int64_t ch = c0; ch < c1; ++ch) {
      acc* __restrict__ ds = part.data() + ch * 2 * c;  // [sum dz * conv | sum dz]
      acc* __restrict__ db = ds + c;
      for (int64_t r = rows * ch / chunks; r < rows * (ch + 1) / chunks; ++r) {
        const int64_t off = r * c;
        const acc* __restrict__ d = dyp + off;
        const acc* __restrict__ v = cp ? cp + off : zeros.data();
        const acc* __restrict__ rr = rp ? rp + off : zeros.data();
        acc* __restrict__ dr = drp ? drp + off : scratch.data();
        acc* __restrict__ out = dcp + off;
        for (int64_t o = 0; o < c; ++o) {
          const acc dz = act_backward<acc>(A, d[o], v[o] * sp[o] + bp[o] + rr[o]);
          ds[o] += dz * v[o];
          db[o] += dz;
          dr[o] = dz;
          out[o] = dz * sp[o];
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
    const auto& kernels = PYCNN_CPU_KERNELS(gc, acc_type);
    // (the layout depends on the variant, the groups and the dtype; kept only inside an eval plan's scope)
    const Tensor wk = cpu::weight_form(weight, &kernels, cpu::form_detail(groups, acc_type),
                                       [&] { return kernels.forward_weight(g, weight, acc_type); });
    kernels.forward(g, act, x, wk, s, b, r, y, saved);
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
      const auto& kernels = PYCNN_CPU_KERNELS(gc, acc_type);
      kernels.forward(g, Act::None, x, kernels.forward_weight(g, weight, acc_type), Tensor(), Tensor(), Tensor(), conv,
                      Tensor());
    }
  }
  Tensor dres = residual ? at::empty({g.n, g.c_out, g.oh, g.ow}, x.options().memory_format(nhwc)) : Tensor();
  Tensor sums = at::zeros({2, g.c_out}, x.options());
  Tensor dx = at::empty({g.n, g.c_in, g.h, g.w}, x.options().memory_format(nhwc));  // dgrad writes all of it
  Tensor dwk;
  AT_DISPATCH_FLOATING_TYPES(acc_type, "gconv_backward_cpu", [&] {
    if (g.out_rows() == 0) {
      dx.zero_();  // (at::zeros would ignore the memory format)
      dwk = at::zeros({g.groups, g.taps(), g.cg, g.cog}, x.options());
      return;
    }
    Tensor dc;
    cpu::dispatch_act(act, [&](auto A) {
      dc = make_grad_conv<scalar_t, decltype(A)::value>(g, dy, conv, s, b, r, dres, sums);
    });
    const Tensor dc_view = dc.narrow(0, 0, g.out_rows() * g.c_out)
                               .view({g.n, g.oh, g.ow, g.c_out})
                               .permute({0, 3, 1, 2});
    const auto& kernels = PYCNN_CPU_KERNELS(gc, x.scalar_type());
    if (dx.numel() > 0) kernels.dgrad(g, dc_view, weight, dx);
    dwk = kernels.wgrad(g, x, dc);
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
