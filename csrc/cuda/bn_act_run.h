// Tensors -> BnAct*Params -> launcher, for any place the CUDA kernel source runs: the CUDA op
// (bn_act_torch.cpp, on the current stream) and the CPU emulation of the same kernels in tests
// (tests/emu). Kernels are NHWC-native, so NCHW tensors are converted and the result converted back.
#pragma once

#include "../bn_act.h"
#include "bn_act.cuh"
#include "run_common.h"

namespace pycnn {

inline cuda::BnActConfig bn_act_config(const Tensor& x, double eps, Act act, bool training, int num_sms) {
  cuda::BnActConfig c{};
  c.rows = x.numel() / std::max<int64_t>(x.size(1), 1);
  c.channels = x.size(1);
  c.eps = eps;
  c.act = act;
  c.training = training;
  c.dtype = kernel_dtype(x.scalar_type());
  c.num_sms = num_sms;
  return c;
}

inline std::tuple<Tensor, Tensor, Tensor> run_bn_act_forward(const Tensor& input, const OptTensor& weight,
                                                             const OptTensor& bias, const OptTensor& residual,
                                                             const OptTensor& running_mean,
                                                             const OptTensor& running_var, bool training, double eps,
                                                             std::string_view act_name, cudaStream_t stream,
                                                             int num_sms) {
  check_bn_act_forward_args(input, weight, bias, residual, running_mean, running_var, training);
  const Act act = parse_act("pycnn.bn_act", act_name);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc);
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  Tensor y = at::empty_like(x, nhwc);
  const auto acc_type = acc_dtype(input.scalar_type());
  Tensor mean, var;
  if (training) {
    mean = at::empty({input.size(1)}, input.options().dtype(acc_type));
    var = at::empty({input.size(1)}, input.options().dtype(acc_type));
  } else {
    mean = running_mean->to(acc_type, false, /*copy=*/true).contiguous();
    var = running_var->to(acc_type, false, /*copy=*/true).contiguous();
  }
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);

  cuda::BnActForwardParams p{bn_act_config(x, eps, act, training, num_sms)};
  p.x = x.const_data_ptr();
  p.residual = r.defined() ? r.const_data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.weight = w.const_data_ptr();
  p.bias = b.const_data_ptr();
  p.mean = mean.data_ptr();
  p.var = var.data_ptr();
  Tensor workspace = at::empty({static_cast<int64_t>(cuda::bn_act_forward_workspace_bytes(p))},
                               input.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  check_launch(cuda::bn_act_forward(p, stream), "pycnn.bn_act");
  return {y.contiguous(kernel_memory_format(input)), mean, var};
}

inline std::tuple<Tensor, Tensor, Tensor, OptTensor> run_bn_act_backward(
    const Tensor& grad_output, const Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const Tensor& save_mean, const Tensor& save_var, bool training, double eps,
    std::string_view act_name, cudaStream_t stream, int num_sms) {
  check_bn_act_backward_args(grad_output, input, weight, bias, residual, save_mean, save_var);
  const Act act = parse_act("pycnn.bn_act_backward", act_name);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc), dy = grad_output.contiguous(nhwc);
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  Tensor dx = at::empty_like(x, nhwc);
  Tensor dr = r.defined() ? at::empty_like(x, nhwc) : Tensor();
  const auto acc_type = acc_dtype(input.scalar_type());
  const Tensor w = channel_vector_acc(weight, input, 1.0), b = channel_vector_acc(bias, input, 0.0);
  const Tensor mean = save_mean.to(acc_type).contiguous(), var = save_var.to(acc_type).contiguous();
  Tensor dweight = at::empty({input.size(1)}, input.options().dtype(acc_type));
  Tensor dbias = at::empty({input.size(1)}, input.options().dtype(acc_type));

  cuda::BnActBackwardParams p{bn_act_config(x, eps, act, training, num_sms)};
  p.dy = dy.const_data_ptr();
  p.x = x.const_data_ptr();
  p.residual = r.defined() ? r.const_data_ptr() : nullptr;
  p.dx = dx.data_ptr();
  p.dresidual = dr.defined() ? dr.data_ptr() : nullptr;
  p.weight = w.const_data_ptr();
  p.bias = b.const_data_ptr();
  p.mean = mean.const_data_ptr();
  p.var = var.const_data_ptr();
  p.dweight = dweight.data_ptr();
  p.dbias = dbias.data_ptr();
  Tensor workspace = at::empty({static_cast<int64_t>(cuda::bn_act_backward_workspace_bytes(p))},
                               input.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  if (p.rows > 0 && p.channels > 0) {
    check_launch(cuda::bn_act_backward(p, stream), "pycnn.bn_act_backward");
  } else {
    dweight.zero_();
    dbias.zero_();
  }
  const auto format = kernel_memory_format(input);
  if (weight) dweight = dweight.to(weight->scalar_type());
  if (bias) dbias = dbias.to(bias->scalar_type());
  return {dx.contiguous(format), dweight, dbias, dr.defined() ? OptTensor(dr.contiguous(format)) : std::nullopt};
}

inline void run_bn_act_update_stats(const Tensor& running_mean, const Tensor& running_var,
                                    const OptTensor& num_batches_tracked, const Tensor& save_mean,
                                    const Tensor& save_var, std::optional<double> momentum, int64_t count,
                                    cudaStream_t stream) {
  check_bn_act_update_stats_args(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum,
                                 count);
  const Tensor sm = save_mean.contiguous(), sv = save_var.contiguous();
  cuda::BnActStatsParams p{};
  p.channels = running_mean.size(0);
  p.running_mean = running_mean.data_ptr();
  p.running_var = running_var.data_ptr();
  p.num_batches_tracked = num_batches_tracked ? num_batches_tracked->data_ptr<int64_t>() : nullptr;
  p.save_mean = sm.const_data_ptr();
  p.save_var = sv.const_data_ptr();
  p.cumulative = !momentum;
  p.momentum = momentum.value_or(0.0);
  p.count = count;
  p.running_dtype = kernel_dtype(running_mean.scalar_type());
  p.save_dtype = kernel_dtype(save_mean.scalar_type());
  check_launch(cuda::bn_act_update_stats(p, stream), "pycnn.bn_act_update_stats_");
}

}  // namespace pycnn
