// CUDA registration of pycnn::bn_act_*: device guard, current stream, launch checks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bn_act_run.h"

namespace pycnn {
namespace {

std::tuple<Tensor, Tensor, Tensor> bn_act_forward_cuda(const Tensor& input, const OptTensor& weight,
                                                       const OptTensor& bias, const OptTensor& residual,
                                                       const OptTensor& running_mean, const OptTensor& running_var,
                                                       bool training, double eps, c10::string_view act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.bn_act: input must be a CUDA tensor for the CUDA kernel, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_bn_act_forward(input, weight, bias, residual, running_mean, running_var, training, eps,
                            std::string_view(act.data(), act.size()), c10::cuda::getCurrentCUDAStream(), sm_count(input));
}

std::tuple<Tensor, Tensor, Tensor, OptTensor> bn_act_backward_cuda(
    const Tensor& grad_output, const Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const Tensor& save_mean, const Tensor& save_var, bool training, double eps,
    c10::string_view act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.bn_act_backward: input must be a CUDA tensor, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_bn_act_backward(grad_output, input, weight, bias, residual, save_mean, save_var, training, eps,
                             std::string_view(act.data(), act.size()), c10::cuda::getCurrentCUDAStream(), sm_count(input));
}

void bn_act_update_stats_cuda(const Tensor& running_mean, const Tensor& running_var,
                              const OptTensor& num_batches_tracked, const Tensor& save_mean, const Tensor& save_var,
                              std::optional<double> momentum, int64_t count) {
  TORCH_CHECK(running_mean.is_cuda(), "pycnn.bn_act_update_stats_: running_mean must be a CUDA tensor, got ",
              running_mean.device());
  const c10::cuda::CUDAGuard guard(running_mean.device());
  run_bn_act_update_stats(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum, count,
                          c10::cuda::getCurrentCUDAStream());
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CUDA, m) {
  m.impl("bn_act_forward", &bn_act_forward_cuda);
  m.impl("bn_act_backward", &bn_act_backward_cuda);
  m.impl("bn_act_update_stats_", &bn_act_update_stats_cuda);
}

}  // namespace pycnn
