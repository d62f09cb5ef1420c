// The Python module pycnn._C: importing it registers the ops (static initializers in the other
// translation units); build_info() says how this binary was built.
#include <pybind11/pybind11.h>

#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "pycnn's compiled ops (torch.ops.pycnn.*)";
  m.def("build_info", [] {
    py::dict info;
    info["torch_version"] = PYCNN_TORCH_VERSION;
    info["cuda"] = PYCNN_WITH_CUDA != 0;
    info["cuda_arch_list"] = PYCNN_CUDA_ARCH_LIST;
    info["cxx_compiler"] = PYCNN_CXX_COMPILER;
    info["cuda_compiler"] = PYCNN_CUDA_COMPILER;
    return info;
  });
}
