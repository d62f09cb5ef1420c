// Emulation bindings of the SE CUDA kernels: the same tensors -> params -> launcher path as the CUDA op
// (csrc/cuda/se_run.h), run on CPU tensors by the emulator.
#include "emu_bind.h"
#include "../../csrc/cuda/se.cu"
#include "../../csrc/cuda/se_run.h"

using namespace pycnn_emu_test;
using pycnn::OptTensor;

namespace {
pybind11::dict plan_dict(const pycnn::cuda::se_detail::Plan& plan, size_t smem) {
  pybind11::dict out;
  out["vec"] = plan.vec;
  out["partials"] = plan.partials;  // row chunks of se_pool_kernel / se_grad_gate_kernel
  out["chunks"] = plan.chunks;      // row chunks of se_excite_scale_kernel / se_backward_kernel's dx blocks
  out["smem"] = smem;               // dynamic shared memory of se_excite_scale_kernel / se_backward_kernel
  return out;
}

// The shape, dtype and grid size the plans depend on (activations none, weights in the element type).
pycnn::cuda::SeConfig plan_config(const at::Tensor& x, int64_t reduced, int num_sms) {
  return pycnn::se_config(x, reduced, pycnn::Act::None, pycnn::Act::None, x, num_sms);
}
}  // namespace

PYCNN_EMU_BINDINGS(se, m) {
  // num_sms sizes the grids: small values give several row chunks per image (pool/grad-gate partials and
  // excite/apply chunks).
  m.def("forward", [](const at::Tensor& input, const at::Tensor& fc1_weight, const OptTensor& fc1_bias,
                      const at::Tensor& fc2_weight, const OptTensor& fc2_bias, const OptTensor& residual,
                      const std::string& act, const std::string& post_act, int num_sms) {
    return pycnn::run_se_forward(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, act, post_act,
                                 nullptr, num_sms);
  });
  m.def("backward", [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& fc1_weight,
                       const at::Tensor& fc2_weight, const OptTensor& residual, const at::Tensor& pooled,
                       const at::Tensor& hidden, const at::Tensor& gate, const std::string& act,
                       const std::string& post_act, int num_sms) {
    return pycnn::run_se_backward(grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate, act,
                                  post_act, nullptr, num_sms);
  });
  // The launch plans the launchers derive from the same tensors (vector width from the pointers' alignment,
  // row chunks, shared memory), so tests can assert that a case reaches the path it is meant to cover.
  m.def("forward_plan", [](const at::Tensor& input, const OptTensor& residual, int64_t reduced, int num_sms) {
    constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
    const at::Tensor x = input.contiguous(nhwc), y = at::empty_like(x, nhwc);
    const at::Tensor r = residual ? residual->contiguous(nhwc) : at::Tensor();
    pycnn::cuda::SeForwardParams p{plan_config(x, reduced, num_sms)};
    p.x = x.const_data_ptr();
    p.residual = r.defined() ? r.const_data_ptr() : nullptr;
    p.y = y.data_ptr();
    return plan_dict(pycnn::cuda::se_detail::forward_plan(p), pycnn::cuda::se_forward_smem_bytes(p));
  });
  m.def("backward_plan", [](const at::Tensor& grad_output, const at::Tensor& input, const OptTensor& residual,
                            int64_t reduced, int num_sms) {
    constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
    const at::Tensor x = input.contiguous(nhwc), dy = grad_output.contiguous(nhwc), dx = at::empty_like(x, nhwc);
    const at::Tensor r = residual ? residual->contiguous(nhwc) : at::Tensor();
    const at::Tensor dr = r.defined() ? at::empty_like(x, nhwc) : at::Tensor();
    pycnn::cuda::SeBackwardParams p{plan_config(x, reduced, num_sms)};
    p.dy = dy.const_data_ptr();
    p.x = x.const_data_ptr();
    p.residual = r.defined() ? r.const_data_ptr() : nullptr;
    p.dx = dx.data_ptr();
    p.dresidual = dr.defined() ? dr.data_ptr() : nullptr;
    return plan_dict(pycnn::cuda::se_detail::backward_plan(p), pycnn::cuda::se_backward_smem_bytes(p));
  });
  // The launchers themselves on an empty problem (the torch glue never calls se_backward with n == 0):
  // (forward error, backward error); they must return cudaSuccess without launching anything.
  m.def("launch_empty", [](int64_t n, int64_t hw, int64_t channels, int64_t reduced) {
    pycnn::cuda::SeConfig c{};
    c.n = n;
    c.hw = hw;
    c.channels = channels;
    c.reduced = reduced;
    c.num_sms = 4;
    const pycnn::cuda::SeForwardParams f{c};
    const pycnn::cuda::SeBackwardParams b{c};
    return std::make_pair(static_cast<int>(pycnn::cuda::se_forward(f, nullptr)),
                          static_cast<int>(pycnn::cuda::se_backward(b, nullptr)));
  });
}
