// Emulation bindings of the dwconv CUDA kernels: the CUDA op's path (csrc/cuda/dwconv_run.h) on CPU tensors.
#include "emu_bind.h"

#include "../../csrc/cuda/dwconv.cu"
#include "../../csrc/cuda/dwconv_run.h"

using at::Tensor;

PYCNN_EMU_BINDINGS(dwconv, m) {
  m.def("forward", [](Tensor x, Tensor w, std::optional<Tensor> sc, std::optional<Tensor> b, std::optional<Tensor> r,
                      std::vector<int64_t> s, std::vector<int64_t> p, std::vector<int64_t> d, std::string act) {
    return pycnn::run_dwconv_forward(x, w, sc, b, r, s, p, d, act, nullptr);
  });
  m.def("backward", [](Tensor dy, Tensor x, Tensor w, std::optional<Tensor> sc, std::optional<Tensor> b,
                       std::optional<Tensor> r, std::vector<int64_t> s, std::vector<int64_t> p, std::vector<int64_t> d,
                       std::string act, int sms) {
    auto [dx, dw, dsc, db, dr] = pycnn::run_dwconv_backward(dy, x, w, sc, b, r, s, p, d, act, nullptr, sms);
    return py::make_tuple(dx, dw, dsc, db, dr ? py::cast(*dr) : py::none());
  });
}
