// Tensors -> DwConv*Params -> launcher, for any place the CUDA kernel source runs: the CUDA op
// (dwconv_torch.cpp, on the current stream) and the CPU emulation of the same kernels in tests
// (tests/emu). Kernels are NHWC-native, so NCHW tensors are converted and the results converted back.
#pragma once

#include "../dwconv.h"
#include "run_common.h"
#include "dwconv.cuh"

namespace pycnn {

inline cuda::DwConvGeom kernel_geometry(const DwConvGeometry& g) {
  cuda::DwConvGeom k{};
  k.n = g.n;
  k.h = g.h;
  k.w = g.w;
  k.c = g.c;
  k.oh = g.oh;
  k.ow = g.ow;
  k.k = g.k;
  k.stride_h = g.sh;
  k.stride_w = g.sw;
  k.pad_h = g.ph;
  k.pad_w = g.pw;
  k.dil_h = g.dh;
  k.dil_w = g.dw;
  return k;
}

inline Tensor run_dwconv_forward(const Tensor& input, const Tensor& weight, const OptTensor& scale,
                                 const OptTensor& bias, const OptTensor& residual, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view act_name,
                                 cudaStream_t stream) {
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const DwConvOperands a = prepare_dwconv("pycnn.dwconv", Tensor(), input, weight, scale, bias, residual, stride,
                                          padding, dilation, act_name, nhwc);
  const DwConvGeometry& g = a.g;
  const Tensor wt = dwconv_weight_taps(weight);
  Tensor y = at::empty({g.n, g.c, g.oh, g.ow}, input.options(), nhwc);

  cuda::DwConvForwardParams p{};
  p.x = a.x.const_data_ptr();
  p.weight = wt.const_data_ptr();
  p.scale = a.scale.const_data_ptr();
  p.bias = a.bias.const_data_ptr();
  p.residual = a.residual.defined() ? a.residual.const_data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.g = kernel_geometry(g);
  p.act = a.act;
  p.dtype = kernel_dtype(input.scalar_type());
  check_launch(cuda::dwconv_forward(p, stream), "pycnn.dwconv");
  return y.contiguous(kernel_memory_format(input));
}

inline std::tuple<Tensor, Tensor, Tensor, Tensor, OptTensor> run_dwconv_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::string_view act_name, cudaStream_t stream, int num_sms) {
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const DwConvOperands a = prepare_dwconv("pycnn.dwconv_backward", grad_output, input, weight, scale, bias,
                                          residual, stride, padding, dilation, act_name, nhwc);
  const DwConvGeometry& g = a.g;
  const Tensor& r = a.residual;
  const Tensor wt = dwconv_weight_taps(weight);
  const auto acc_type = acc_dtype(input.scalar_type());
  const int64_t kk = int64_t(g.k) * g.k;
  Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options(), nhwc);
  Tensor dr = r.defined() ? at::empty({g.n, g.c, g.oh, g.ow}, input.options(), nhwc) : Tensor();
  Tensor dweight = at::zeros({kk, g.c}, input.options().dtype(acc_type));
  Tensor dscale = at::zeros({g.c}, input.options().dtype(acc_type));
  Tensor dbias = at::zeros({g.c}, input.options().dtype(acc_type));

  cuda::DwConvBackwardParams p{};
  p.dy = a.dy.const_data_ptr();
  p.x = a.x.const_data_ptr();
  p.weight = wt.const_data_ptr();
  p.scale = a.scale.const_data_ptr();
  p.bias = a.bias.const_data_ptr();
  p.residual = r.defined() ? r.const_data_ptr() : nullptr;
  p.dx = dx.data_ptr();
  p.dresidual = dr.defined() ? dr.data_ptr() : nullptr;
  p.dweight = dweight.data_ptr();
  p.dscale = dscale.data_ptr();
  p.dbias = dbias.data_ptr();
  p.g = kernel_geometry(g);
  p.act = a.act;
  p.dtype = kernel_dtype(input.scalar_type());
  p.num_sms = num_sms;
  Tensor workspace = at::empty({static_cast<int64_t>(cuda::dwconv_backward_workspace_bytes(p))},
                               input.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  check_launch(cuda::dwconv_backward(p, stream), "pycnn.dwconv_backward");
  const auto format = kernel_memory_format(input);
  Tensor grad_scale = scale ? dscale.to(scale->scalar_type()) : dscale;
  Tensor grad_bias = bias ? dbias.to(bias->scalar_type()) : dbias;
  return {dx.contiguous(format), dwconv_weight_from_taps(dweight, weight), grad_scale, grad_bias,
          dr.defined() ? OptTensor(dr.contiguous(format)) : std::nullopt};
}

}  // namespace pycnn
