// Emulation bindings of the bn_act CUDA kernels: the same tensors -> params -> launcher path as the CUDA
// op (csrc/cuda/bn_act_run.h), run on CPU tensors by the emulator.
#include "emu_bind.h"
#include "../../csrc/cuda/bn_act.cu"
#include "../../csrc/cuda/bn_act_run.h"

using namespace pycnn_emu_test;
using pycnn::OptTensor;

PYCNN_EMU_BINDINGS(bn_act, m) {
  // num_sms sizes the reduction grids: small values give several partial results per channel.
  m.def("forward", [](const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
                      const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
                      bool training, double eps, const std::string& act, int num_sms) {
    return pycnn::run_bn_act_forward(input, weight, bias, residual, running_mean, running_var, training, eps, act,
                                     nullptr, num_sms);
  });
  m.def("update_stats", [](const at::Tensor& running_mean, const at::Tensor& running_var,
                           const OptTensor& num_batches_tracked, const at::Tensor& save_mean,
                           const at::Tensor& save_var, std::optional<double> momentum, int64_t count) {
    pycnn::run_bn_act_update_stats(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum,
                                   count, nullptr);
  });
  m.def("backward", [](const at::Tensor& grad_output, const at::Tensor& input, const OptTensor& weight,
                       const OptTensor& bias, const OptTensor& residual, const at::Tensor& save_mean,
                       const at::Tensor& save_var, bool training, double eps, const std::string& act, int num_sms) {
    return pycnn::run_bn_act_backward(grad_output, input, weight, bias, residual, save_mean, save_var, training, eps,
                                      act, nullptr, num_sms);
  });
}
