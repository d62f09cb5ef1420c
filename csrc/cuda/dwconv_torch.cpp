// CUDA registration of pycnn::dwconv_*: device guard, current stream, launch checks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "dwconv_run.h"

namespace pycnn {
namespace {

Tensor dwconv_forward_cuda(const Tensor& input, const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                           const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, c10::string_view act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.dwconv: input must be a CUDA tensor for the CUDA kernel, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_dwconv_forward(input, weight, scale, bias, residual, stride, padding, dilation,
                            std::string_view(act.data(), act.size()), c10::cuda::getCurrentCUDAStream());
}

std::tuple<Tensor, Tensor, Tensor, Tensor, OptTensor> dwconv_backward_cuda(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, c10::string_view act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.dwconv_backward: input must be a CUDA tensor, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_dwconv_backward(grad_output, input, weight, scale, bias, residual, stride, padding, dilation,
                             std::string_view(act.data(), act.size()), c10::cuda::getCurrentCUDAStream(),
                             sm_count(input));
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CUDA, m) {
  m.impl("dwconv_forward", &dwconv_forward_cuda);
  m.impl("dwconv_backward", &dwconv_backward_cuda);
}

}  // namespace pycnn
