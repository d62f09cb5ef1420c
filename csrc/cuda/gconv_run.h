// Tensors -> GConv*Params -> launcher, for any place the CUDA kernel source runs: the CUDA op
// (gconv_torch.cpp, on the current stream) and the CPU emulation of the same kernels in tests
// (tests/emu). Kernels are NHWC-native, so NCHW tensors are converted and the results converted back;
// the weight is rearranged into the GEMM layouts of csrc/gconv.h, per-channel vectors made float32.
#pragma once

#include "../gconv.h"
#include "run_common.h"
#include "gconv.cuh"

namespace pycnn {

inline cuda::GConvShape gconv_kernel_shape(const GConvGeometry& g) {
  cuda::GConvShape s;
  s.n = g.n;
  s.h = g.h;
  s.w = g.w;
  s.c_in = g.c_in;
  s.oh = g.oh;
  s.ow = g.ow;
  s.c_out = g.c_out;
  s.groups = g.groups;
  s.cg = g.cg;
  s.cog = g.cog;
  s.k = g.k;
  s.sh = g.sh;
  s.sw = g.sw;
  s.ph = g.ph;
  s.pw = g.pw;
  return s;
}

inline void check_gconv_cuda_dtype(std::string_view op, const Tensor& input) {
  TORCH_CHECK(input.scalar_type() != at::kDouble, op,
              ": float64 is not supported by the CUDA kernels (use float32, float16 or bfloat16; float64 runs on "
              "the CPU)");
}

inline void check_gconv_cuda_size(std::string_view op, const cuda::GConvShape& s) {
  TORCH_CHECK(cuda::gconv_shape_fits(s), op,
              ": input, output and weight must each have fewer than 2^31 elements for the CUDA kernels; split the batch");
}

// The checked launch settings; refuses a shape the kernels cannot index in 32 bits.
inline cuda::GConvConfig gconv_config(std::string_view op, const GConvGeometry& g, Act act, const Tensor& input,
                                      cuda::GConvPath path, int num_sms, int cc_major) {
  cuda::GConvConfig c{};
  c.s = gconv_kernel_shape(g);
  check_gconv_cuda_size(op, c.s);
  c.act = act;
  c.dtype = kernel_dtype(input.scalar_type());
  c.path = path;
  c.num_sms = num_sms;
  c.cc_major = cc_major;
  return c;
}

inline Tensor float_vector(const OptTensor& t) { return t ? t->to(at::kFloat).contiguous() : Tensor(); }

// path: which forward (input-gradient) kernel: Auto in the op; tests force Simt or TensorCore.
inline std::tuple<Tensor, Tensor> run_gconv_forward(const Tensor& input, const Tensor& weight, const OptTensor& scale,
                                                    const OptTensor& bias, const OptTensor& residual,
                                                    c10::IntArrayRef stride, c10::IntArrayRef padding, int64_t groups,
                                                    std::string_view act_name, bool save, cudaStream_t stream,
                                                    int num_sms, int cc_major,
                                                    cuda::GConvPath path = cuda::GConvPath::Auto) {
  constexpr std::string_view op = "pycnn.gconv";
  const GConvGeometry g = check_gconv_args(op, input, weight, scale, bias, residual, stride, padding, groups);
  const Act act = parse_act(op, act_name);
  check_gconv_cuda_dtype(op, input);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc);
  const Tensor wk = gconv_kernel_weight(weight, g, /*transposed=*/false, input.scalar_type());
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  const Tensor s = float_vector(scale), b = float_vector(bias);
  const bool keep = save && gconv_needs_saved(scale, act);
  Tensor y = at::empty({g.n, g.c_out, g.oh, g.ow}, input.options().memory_format(nhwc));
  Tensor saved = keep ? at::empty_like(y, nhwc) : Tensor();

  cuda::GConvForwardParams p{gconv_config(op, g, act, input, path, num_sms, cc_major)};
  p.x = x.const_data_ptr();
  p.w = wk.const_data_ptr();
  p.scale = ptr_or_null(s);
  p.bias = ptr_or_null(b);
  p.residual = ptr_or_null(r);
  p.y = y.data_ptr();
  p.saved = keep ? saved.data_ptr() : nullptr;
  check_launch(cuda::gconv_forward(p, stream), "pycnn.gconv");
  const auto format = kernel_memory_format(input);
  return {y.contiguous(format), keep ? saved.contiguous(format) : at::empty({0}, input.options())};
}

inline std::tuple<Tensor, Tensor, OptTensor, OptTensor, OptTensor> run_gconv_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, const Tensor& saved, c10::IntArrayRef stride,
    c10::IntArrayRef padding, int64_t groups, std::string_view act_name, cudaStream_t stream, int num_sms,
    int cc_major, cuda::GConvPath path = cuda::GConvPath::Auto) {
  constexpr std::string_view op = "pycnn.gconv_backward";
  const GConvGeometry g =
      check_gconv_backward_args(op, grad_output, input, weight, scale, bias, residual, saved, stride, padding, groups);
  const Act act = parse_act(op, act_name);
  check_gconv_cuda_dtype(op, input);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc);
  const Tensor dy = grad_output.contiguous(nhwc);
  const Tensor wt = gconv_kernel_weight(weight, g, /*transposed=*/true, input.scalar_type());
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  const Tensor s = float_vector(scale), b = float_vector(bias);
  Tensor conv;
  if (gconv_needs_saved(scale, act)) {
    conv = saved.numel() > 0
               ? saved.contiguous(nhwc)
               : std::get<0>(run_gconv_forward(input, weight, std::nullopt, std::nullopt, std::nullopt, stride, padding,
                                               groups, "none", false, stream, num_sms, cc_major))
                     .contiguous(nhwc);
  }
  const auto fopts = input.options().dtype(at::kFloat);
  Tensor dx = at::empty({g.n, g.c_in, g.h, g.w}, input.options().memory_format(nhwc));
  Tensor dw = at::empty({g.groups, g.taps(), g.cg, g.cog}, fopts);
  Tensor dscale = scale ? at::empty({g.c_out}, fopts) : Tensor();
  Tensor dbias = bias ? at::empty({g.c_out}, fopts) : Tensor();
  Tensor dres = residual ? at::empty({g.n, g.c_out, g.oh, g.ow}, input.options().memory_format(nhwc)) : Tensor();
  if (g.out_rows() == 0) {
    dx.zero_();
    dw.zero_();
    if (dscale.defined()) dscale.zero_();
    if (dbias.defined()) dbias.zero_();
  } else {
    cuda::GConvBackwardParams p{gconv_config(op, g, act, input, path, num_sms, cc_major)};
    p.dy = dy.const_data_ptr();
    p.x = x.const_data_ptr();
    p.wt = wt.const_data_ptr();
    p.scale = ptr_or_null(s);
    p.bias = ptr_or_null(b);
    p.residual = ptr_or_null(r);
    p.saved = ptr_or_null(conv);
    p.dx = dx.data_ptr();
    p.dw = dw.data_ptr();
    p.dscale = dscale.defined() ? dscale.data_ptr() : nullptr;
    p.dbias = dbias.defined() ? dbias.data_ptr() : nullptr;
    p.dresidual = dres.defined() ? dres.data_ptr() : nullptr;
    Tensor workspace = at::empty({static_cast<int64_t>(cuda::gconv_backward_workspace_bytes(p))},
                                 input.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
    check_launch(cuda::gconv_backward(p, stream), "pycnn.gconv_backward");
  }
  const auto format = kernel_memory_format(input);
  const auto dt = input.scalar_type();
  OptTensor grad_scale, grad_bias, grad_res;
  if (scale) grad_scale = dscale.to(scale->scalar_type());
  if (bias) grad_bias = dbias.to(bias->scalar_type());
  if (residual) grad_res = dres.contiguous(format);
  return {dx.contiguous(format), gconv_weight_from_kernel(dw, g).to(dt).contiguous(), grad_scale, grad_bias, grad_res};
}

}  // namespace pycnn
