// Emulation bindings of the gconv CUDA kernels: the same tensors -> params -> launcher path as the CUDA op
// (csrc/cuda/gconv_run.h), run on CPU tensors by the emulator. `path` forces the forward / input-gradient
// kernel (0 auto, 1 SIMT, 2 tensor cores); cc_major < 8 makes auto pick SIMT everywhere.
#include "emu_bind.h"
#include "../../csrc/cuda/gconv.cu"
#include "../../csrc/cuda/gconv_run.h"

using pycnn::OptTensor;

PYCNN_EMU_BINDINGS(gconv, m) {
  m.def("forward", [](const at::Tensor& input, const at::Tensor& weight, const OptTensor& scale,
                      const OptTensor& bias, const OptTensor& residual, std::vector<int64_t> stride,
                      std::vector<int64_t> padding, int64_t groups, const std::string& act, bool save, int path,
                      int cc_major, int num_sms) {
    return pycnn::run_gconv_forward(input, weight, scale, bias, residual, stride, padding, groups, act, save, nullptr,
                                    num_sms, cc_major, static_cast<pycnn::cuda::GConvPath>(path));
  });
  m.def("backward", [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                       const OptTensor& scale, const OptTensor& bias, const OptTensor& residual,
                       const at::Tensor& saved, std::vector<int64_t> stride, std::vector<int64_t> padding,
                       int64_t groups, const std::string& act, int path, int cc_major, int num_sms) {
    return pycnn::run_gconv_backward(grad_output, input, weight, scale, bias, residual, saved, stride, padding,
                                     groups, act, nullptr, num_sms, cc_major,
                                     static_cast<pycnn::cuda::GConvPath>(path));
  });
}
