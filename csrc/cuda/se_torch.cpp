// CUDA registration of pycnn::se_*: device guard, current stream, launch checks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "se_run.h"

namespace pycnn {
namespace {

std::tuple<Tensor, Tensor, Tensor, Tensor> se_forward_cuda(const Tensor& input, const Tensor& fc1_weight,
                                                           const OptTensor& fc1_bias, const Tensor& fc2_weight,
                                                           const OptTensor& fc2_bias, const OptTensor& residual,
                                                           c10::string_view act, c10::string_view post_act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.se: input must be a CUDA tensor for the CUDA kernel, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_se_forward(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual,
                        std::string_view(act.data(), act.size()), std::string_view(post_act.data(), post_act.size()),
                        c10::cuda::getCurrentCUDAStream(), sm_count(input));
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, OptTensor> se_backward_cuda(
    const Tensor& grad_output, const Tensor& input, const Tensor& fc1_weight, const Tensor& fc2_weight,
    const OptTensor& residual, const Tensor& pooled, const Tensor& hidden, const Tensor& gate, c10::string_view act,
    c10::string_view post_act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.se_backward: input must be a CUDA tensor, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_se_backward(grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate,
                         std::string_view(act.data(), act.size()), std::string_view(post_act.data(), post_act.size()),
                         c10::cuda::getCurrentCUDAStream(), sm_count(input));
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CUDA, m) {
  m.impl("se_forward", &se_forward_cuda);
  m.impl("se_backward", &se_backward_cuda);
}

}  // namespace pycnn
