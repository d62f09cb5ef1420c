// CUDA registration of pycnn::gconv_*: device guard, current stream, SM count and compute capability.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "gconv_run.h"

namespace pycnn {
namespace {

struct DeviceInfo {
  int sms, cc_major;
};

DeviceInfo device_info(const Tensor& t) {
  DeviceInfo d{sm_count(t), 0};
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, t.get_device()));
  return d;
}

std::tuple<Tensor, Tensor> gconv_forward_cuda(const Tensor& input, const Tensor& weight, const OptTensor& scale,
                                              const OptTensor& bias, const OptTensor& residual,
                                              c10::IntArrayRef stride, c10::IntArrayRef padding, int64_t groups,
                                              c10::string_view act, bool save) {
  TORCH_CHECK(input.is_cuda(), "pycnn.gconv: input must be a CUDA tensor for the CUDA kernel, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  const DeviceInfo d = device_info(input);
  return run_gconv_forward(input, weight, scale, bias, residual, stride, padding, groups,
                           std::string_view(act.data(), act.size()), save, c10::cuda::getCurrentCUDAStream(), d.sms,
                           d.cc_major);
}

std::tuple<Tensor, Tensor, OptTensor, OptTensor, OptTensor> gconv_backward_cuda(
    const Tensor& grad_output, const Tensor& input, const Tensor& weight, const OptTensor& scale,
    const OptTensor& bias, const OptTensor& residual, const Tensor& saved, c10::IntArrayRef stride,
    c10::IntArrayRef padding, int64_t groups, c10::string_view act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.gconv_backward: input must be a CUDA tensor, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  const DeviceInfo d = device_info(input);
  return run_gconv_backward(grad_output, input, weight, scale, bias, residual, saved, stride, padding, groups,
                            std::string_view(act.data(), act.size()), c10::cuda::getCurrentCUDAStream(), d.sms,
                            d.cc_major);
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CUDA, m) {
  m.impl("gconv_forward", &gconv_forward_cuda);
  m.impl("gconv_backward", &gconv_backward_cuda);
}

}  // namespace pycnn
