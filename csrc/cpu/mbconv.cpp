// CPU implementation of pycnn::mbconv_forward, the fused inverted-residual block in eval (BatchNorms folded
// into the convs by the caller): checks, NHWC input, the weights as the kernel reads them (the depthwise ones
// taps-major and the biases with their channel counts padded to kMbConvPad with zeros, the 1x1 ones as the
// variant's GEMM panels; kept between an eval fold's calls: cpu/weight_forms.h), the SE weights contiguous as
// the convs hold them, then the variant's kernel (cpu/mbconv_kernels.h). No training (docs/kernels.md).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <functional>

#include "cpu/kernel_utils.h"
#include "cpu/mbconv_entries.h"
#include "cpu/weight_forms.h"
#include "mbconv.h"

namespace pycnn {

namespace {

// t ([rows, cols], any strides) into a zero [rows, cols_padded] contiguous tensor.
Tensor pad_columns(const Tensor& t, int64_t cols_padded) {
  Tensor out = at::zeros({t.size(0), cols_padded}, t.options());
  out.narrow(1, 0, t.size(1)).copy_(t);
  return out;
}

Tensor padded_vector(const OptTensor& v, int64_t channels, int64_t padded, const Tensor& input) {
  Tensor out = at::zeros({padded}, input.options());
  if (v) out.narrow(0, 0, channels).copy_(*v);
  return out;
}

Tensor mbconv_forward_cpu(const Tensor& input, const OptTensor& expand_weight, const OptTensor& expand_bias,
                          const Tensor& dw_weight, const OptTensor& dw_bias, const Tensor& project_weight,
                          const OptTensor& project_bias, int64_t stride, c10::string_view act_name, bool residual,
                          const OptTensor& se_reduce_weight, const OptTensor& se_reduce_bias,
                          const OptTensor& se_expand_weight, const OptTensor& se_expand_bias,
                          c10::string_view se_act_name) {
  constexpr std::string_view op = "pycnn.mbconv";
  MbConvGeometry g = check_mbconv_args(op, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                       project_bias, stride, residual);
  check_mbconv_se(op, g, input, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias);
  TORCH_CHECK(input.device().is_cpu(), op, ": input must be a CPU tensor for the CPU kernel, got ", input.device());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
              ": input must be float32 or float64 for the CPU kernel, got ", input.scalar_type());
  const Act act = parse_act(op, std::string_view(act_name.data(), act_name.size()));
  MbConvSeTensors se;
  se.act = parse_act(op, std::string_view(se_act_name.data(), se_act_name.size()));
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const int64_t ep = mbconv_padded(g.e), cop = mbconv_padded(g.co);
  const Tensor x = input.contiguous(nhwc);
  const auto& kernels = PYCNN_CPU_KERNELS(mb, x.scalar_type());
  // The layouts the kernel reads, made per call, or kept between calls inside a weight-forms scope (an eval
  // fold's folded weights: pycnn.fused._mbconv_from_folds). role: which of the block's tensors t is.
  const auto form = [&](const Tensor& t, int64_t role, const std::function<Tensor()>& make) {
    return cpu::weight_form(t, &kernels, cpu::form_detail(role, input.scalar_type()), make);
  };
  const auto padded = [&](const OptTensor& v, int64_t role, int64_t channels, int64_t to) {
    return v ? form(*v, role, [&] { return padded_vector(v, channels, to, input); })
             : padded_vector(v, channels, to, input);
  };
  Tensor we, be;
  if (g.expand) {
    we = form(*expand_weight, 0, [&] {
      return kernels.panels(expand_weight->reshape({g.e, g.c}).contiguous(), ep);  // [E][C]
    });
    be = padded(expand_bias, 1, g.e, ep);
  }
  const Tensor wd = form(dw_weight, 2, [&] {  // [k*k][Ep]
    return pad_columns(dw_weight.reshape({g.e, g.k * g.k}).t(), ep);
  });
  const Tensor bd = padded(dw_bias, 3, g.e, ep);
  const Tensor wp = form(project_weight, 4, [&] {
    return kernels.panels(project_weight.reshape({g.co, g.e}).contiguous(), g.co);  // [C_out][E]
  });
  const Tensor bp = padded(project_bias, 5, g.co, cop);
  if (g.r > 0) {
    const auto as_input = [&](const Tensor& t, at::IntArrayRef shape) {
      return t.reshape(shape).to(input.scalar_type()).contiguous();
    };
    se.w1 = as_input(*se_reduce_weight, {g.r, g.e});
    se.w2 = as_input(*se_expand_weight, {g.e, g.r});
    if (se_reduce_bias) se.b1 = as_input(*se_reduce_bias, {g.r});
    if (se_expand_bias) se.b2 = as_input(*se_expand_bias, {g.e});
  }
  Tensor y = at::empty({g.n, g.co, g.oh, g.ow}, input.options(), nhwc);
  if (y.numel() > 0) kernels.forward(g, act, x, we, be, wd, bd, wp, bp, y, se);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CPU, m) { m.impl("mbconv_forward", &mbconv_forward_cpu); }

}  // namespace pycnn
