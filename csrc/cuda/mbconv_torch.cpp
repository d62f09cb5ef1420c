// CUDA registration of pycnn::mbconv_forward: device guard, current stream, launch checks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "mbconv_run.h"

namespace pycnn {
namespace {

Tensor mbconv_forward_cuda(const Tensor& input, const OptTensor& expand_weight, const OptTensor& expand_bias,
                           const Tensor& dw_weight, const OptTensor& dw_bias, const Tensor& project_weight,
                           const OptTensor& project_bias, int64_t stride, c10::string_view act, bool residual,
                           const OptTensor& se_reduce_weight, const OptTensor& se_reduce_bias,
                           const OptTensor& se_expand_weight, const OptTensor& se_expand_bias,
                           c10::string_view se_act) {
  TORCH_CHECK(input.is_cuda(), "pycnn.mbconv: input must be a CUDA tensor for the CUDA kernel, got ", input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  return run_mbconv_forward(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                            stride, std::string_view(act.data(), act.size()), residual, se_reduce_weight,
                            se_reduce_bias, se_expand_weight, se_expand_bias,
                            std::string_view(se_act.data(), se_act.size()), c10::cuda::getCurrentCUDAStream(),
                            sm_count(input));
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, CUDA, m) { m.impl("mbconv_forward", &mbconv_forward_cuda); }

}  // namespace pycnn
