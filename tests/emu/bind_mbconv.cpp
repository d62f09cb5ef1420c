// Emulation bindings of the mbconv CUDA kernel: the CUDA op's path (csrc/cuda/mbconv_run.h) on CPU tensors. The
// SE kernels it calls with SE are bind_se.cpp's (se.cu is compiled once, there).
#include "emu_bind.h"

#include "../../csrc/cuda/mbconv.cu"
#include "../../csrc/cuda/mbconv_run.h"

using at::Tensor;
using pycnn::OptTensor;

PYCNN_EMU_BINDINGS(mbconv, m) {
  m.def("forward", [](Tensor x, OptTensor we, OptTensor be, Tensor wd, OptTensor bd, Tensor wp, OptTensor bp,
                      int64_t stride, std::string act, bool residual, OptTensor w1, OptTensor b1, OptTensor w2,
                      OptTensor b2, std::string se_act, int sms) {
    return pycnn::run_mbconv_forward(x, we, be, wd, bd, wp, bp, stride, act, residual, w1, b1, w2, b2, se_act,
                                     nullptr, sms);
  });
  // Shared memory and tile of a launch (the shapes the tests pick to cover tile and chunk tails).
  m.def("smem_bytes", [](int64_t c, int64_t e, int64_t co, int64_t h, int64_t w, int k, int s, int stage,
                         at::ScalarType dtype) {
    pycnn::cuda::MbConvParams p{};
    p.g = {1, c, h, w, e, co, 0, (h - 1) / s + 1, (w - 1) / s + 1, k, s, k / 2, e != c, false};
    p.dtype = pycnn::kernel_dtype(dtype);
    return pycnn::cuda::mbconv_smem_bytes(p, static_cast<pycnn::cuda::MbConvStage>(stage));
  });
}
