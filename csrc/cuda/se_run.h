// Tensors -> Se*Params -> launcher, for any place the CUDA kernel source runs: the CUDA op
// (se_torch.cpp, on the current stream) and the CPU emulation of the same kernels in tests.
// Kernels are NHWC-native, so NCHW tensors are converted and the results converted back.
#pragma once

#include "../se.h"
#include "run_common.h"
#include "se.cuh"

namespace pycnn {

inline void check_se_launch_limits(std::string_view op, int64_t n, size_t smem) {
  TORCH_CHECK(n <= cuda::kSeMaxBatch, op, ": the CUDA kernel takes at most ", cuda::kSeMaxBatch,
              " images per call, got a batch of ", n);
  TORCH_CHECK(smem <= cuda::kSeMaxSmemBytes, op, ": channels / reduced channels / batch too large for the CUDA "
              "kernel (needs ", smem, " bytes of shared memory, at most ", cuda::kSeMaxSmemBytes, ")");
}

// A contiguous [out, in] view of an fc weight ([out, in] or [out, in, 1, 1]); no copy when contiguous.
inline Tensor fc_weight_2d(const Tensor& w) { return w.contiguous().view({w.size(0), w.size(1)}); }

// fc1_weight: its dtype tells whether the fc weights are in the accumulation type (weights_acc).
inline cuda::SeConfig se_config(const Tensor& input, int64_t reduced, Act act, Act post, const Tensor& fc1_weight,
                                int num_sms) {
  cuda::SeConfig c{};
  c.n = input.size(0);
  c.hw = input.size(2) * input.size(3);
  c.channels = input.size(1);
  c.reduced = reduced;
  c.act = act;
  c.post_act = post;
  c.dtype = kernel_dtype(input.scalar_type());
  c.weights_acc = fc1_weight.scalar_type() != input.scalar_type();
  c.num_sms = num_sms;
  return c;
}

inline std::tuple<Tensor, Tensor, Tensor, Tensor> run_se_forward(
    const Tensor& input, const Tensor& fc1_weight, const OptTensor& fc1_bias, const Tensor& fc2_weight,
    const OptTensor& fc2_bias, const OptTensor& residual, std::string_view act_name, std::string_view post_name,
    cudaStream_t stream, int num_sms) {
  constexpr std::string_view op = "pycnn.se";
  const int64_t reduced = check_se_args(op, input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc);
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  const Tensor w1 = fc_weight_2d(fc1_weight), w2 = fc_weight_2d(fc2_weight);
  const Tensor b1 = fc1_bias ? fc1_bias->contiguous() : Tensor(), b2 = fc2_bias ? fc2_bias->contiguous() : Tensor();
  Tensor y = at::empty_like(x, nhwc);
  const int64_t n = input.size(0), channels = input.size(1);
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  Tensor pooled = at::empty({n, channels}, acc), hidden = at::empty({n, reduced}, acc),
         gate = at::empty({n, channels}, acc);

  cuda::SeForwardParams p{se_config(input, reduced, act, post, fc1_weight, num_sms)};
  p.x = x.const_data_ptr();
  p.residual = r.defined() ? r.const_data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.w1 = w1.const_data_ptr();
  p.b1 = b1.defined() ? b1.const_data_ptr() : nullptr;
  p.w2 = w2.const_data_ptr();
  p.b2 = b2.defined() ? b2.const_data_ptr() : nullptr;
  p.pooled = pooled.data_ptr();
  p.hidden = hidden.data_ptr();
  p.gate = gate.data_ptr();
  check_se_launch_limits(op, n, cuda::se_forward_smem_bytes(p));
  Tensor workspace = at::empty({static_cast<int64_t>(cuda::se_forward_workspace_bytes(p))},
                               input.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  check_launch(cuda::se_forward(p, stream), "pycnn.se");
  return {y.contiguous(kernel_memory_format(input)), pooled, hidden, gate};
}

inline std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, OptTensor> run_se_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& fc1_weight, const Tensor& fc2_weight,
    const OptTensor& residual, const Tensor& pooled_, const Tensor& hidden_, const Tensor& gate_,
    std::string_view act_name, std::string_view post_name, cudaStream_t stream, int num_sms) {
  constexpr std::string_view op = "pycnn.se_backward";
  const int64_t reduced =
      check_se_backward_args(op, grad_output, input, fc1_weight, fc2_weight, residual, pooled_, hidden_, gate_);
  const Act act = parse_act(op, act_name), post = parse_act(op, post_name);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc), dy = grad_output.contiguous(nhwc);
  const Tensor r = residual ? residual->contiguous(nhwc) : Tensor();
  const Tensor w1 = fc_weight_2d(fc1_weight), w2 = fc_weight_2d(fc2_weight);
  const Tensor pooled = pooled_.contiguous(), hidden = hidden_.contiguous(), gate = gate_.contiguous();
  Tensor dx = at::empty_like(x, nhwc);
  Tensor dr = r.defined() ? at::empty_like(x, nhwc) : Tensor();
  const int64_t n = input.size(0), channels = input.size(1);
  const auto wopt = fc1_weight.options().memory_format(at::MemoryFormat::Contiguous);
  Tensor dw1 = at::empty({reduced, channels}, wopt), db1 = at::empty({reduced}, wopt);
  Tensor dw2 = at::empty({channels, reduced}, wopt), db2 = at::empty({channels}, wopt);

  cuda::SeBackwardParams p{se_config(input, reduced, act, post, fc1_weight, num_sms)};
  p.dy = dy.const_data_ptr();
  p.x = x.const_data_ptr();
  p.residual = r.defined() ? r.const_data_ptr() : nullptr;
  p.dx = dx.data_ptr();
  p.dresidual = dr.defined() ? dr.data_ptr() : nullptr;
  p.w1 = w1.const_data_ptr();
  p.w2 = w2.const_data_ptr();
  p.pooled = pooled.const_data_ptr();
  p.hidden = hidden.const_data_ptr();
  p.gate = gate.const_data_ptr();
  p.dw1 = dw1.data_ptr();
  p.db1 = db1.data_ptr();
  p.dw2 = dw2.data_ptr();
  p.db2 = db2.data_ptr();
  if (n == 0 || channels == 0) {  // nothing to launch: the weight gradients are zero
    for (Tensor* t : {&dw1, &db1, &dw2, &db2}) t->zero_();
  } else {
    check_se_launch_limits(op, n, cuda::se_backward_smem_bytes(p));
    Tensor workspace = at::empty({static_cast<int64_t>(cuda::se_backward_workspace_bytes(p))},
                                 input.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
    check_launch(cuda::se_backward(p, stream), "pycnn.se_backward");
  }
  const auto format = kernel_memory_format(input);
  return {dx.contiguous(format), dw1.view(fc1_weight.sizes()), db1, dw2.view(fc2_weight.sizes()), db2,
          dr.defined() ? OptTensor(dr.contiguous(format)) : std::nullopt};
}

}  // namespace pycnn
