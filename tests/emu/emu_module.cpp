// The test-only emulation extension: emulator controls + the submodules registered by bind_<op>.cpp files.
#include "emu_bind.h"

#include <map>
#include <string>

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pycnn CUDA kernels executed on the CPU by csrc/emu (test-only)";
  m.def(
      "set_schedule",
      [](const std::string& order, uint64_t seed) {
        pycnn_emu::Order o;
        if (order == "forward") o = pycnn_emu::Order::Forward;
        else if (order == "reverse") o = pycnn_emu::Order::Reverse;
        else if (order == "shuffle") o = pycnn_emu::Order::Shuffle;
        else throw std::invalid_argument("order must be forward, reverse or shuffle, got '" + order + "'");
        pycnn_emu::set_schedule(o, seed);
      },
      py::arg("order"), py::arg("seed") = 0,
      "Order in which the threads of a block run between barriers: forward, reverse, or shuffle (seeded).");
  m.def("get_schedule", [] {
    return py::make_tuple(pycnn_emu::order_name(pycnn_emu::settings().order), pycnn_emu::settings().seed);
  });
  m.def("launched", [] { return pycnn_emu::launch_counts(); },
        "{kernel name (template arguments stripped): number of launches} since load or reset_launches().");
  m.def("reset_launches", [] { pycnn_emu::launch_counts().clear(); });
  m.def("last_error", [] { return pycnn_emu::last_error_message(); });
  m.def("clear_error", [] { pycnn_emu::clear_error(); });
  m.def("set_sm_count", [](int n) { pycnn_emu::set_sm_count(n); },
        "Multiprocessor count the emulated device reports (launchers sizing grids by SM count).");
  m.def("set_stack_kb", [](int kb) { pycnn_emu::settings().stack_bytes = size_t(kb) * 1024; });
  for (auto& [name, bind] : pycnn_emu_test::registry()) {
    auto sub = m.def_submodule(name);
    bind(sub);
  }
}
