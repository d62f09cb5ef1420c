// Helpers for the emulation test bindings (tests/emu/bind_<op>.cpp). Include this FIRST, then the kernel
// source(s) with a path relative to this directory, e.g.
//
//   #include "emu_bind.h"
//   #include "../../csrc/cuda/bn_act.cu"
//   PYCNN_EMU_BINDINGS(bn_act, m) { m.def("forward", [](at::Tensor x, ...) { ...; check(launch_...(p)); }); }
//
// Everything (these bindings and the emulator) is compiled with -DPYCNN_EMU into one test-only extension
// by tests/emu/emu_build.py. Only the light torch header with the at::Tensor pybind caster is included:
// bindings take CPU tensors allocated by the Python test, fill the op's params struct, call its launcher.
#pragma once

#include <torch/csrc/utils/pybind.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/cuda/common.cuh"

namespace pycnn_emu_test {

namespace py = pybind11;
using Binder = void (*)(py::module_&);

inline std::vector<std::pair<const char*, Binder>>& registry() {
  static std::vector<std::pair<const char*, Binder>> r;
  return r;
}
struct Register {
  Register(const char* name, Binder b) { registry().emplace_back(name, b); }
};

using pycnn_emu::check;  // check(launcher(...)) throws RuntimeError with the emulator's message

template <typename T> struct DType;
template <> struct DType<float> { static constexpr auto value = at::kFloat; };
template <> struct DType<double> { static constexpr auto value = at::kDouble; };
template <> struct DType<__half> { static constexpr auto value = at::kHalf; };
template <> struct DType<__nv_bfloat16> { static constexpr auto value = at::kBFloat16; };
template <> struct DType<int32_t> { static constexpr auto value = at::kInt; };
template <> struct DType<int64_t> { static constexpr auto value = at::kLong; };
template <> struct DType<uint8_t> { static constexpr auto value = at::kByte; };
template <> struct DType<int16_t> { static constexpr auto value = at::kShort; };
template <> struct DType<uint32_t> { static constexpr auto value = at::kUInt32; };

// Typed pointer to a CPU tensor's data (any strides: the kernel decides how to index it).
template <typename T>
T* ptr(const at::Tensor& t, const char* name = "tensor") {
  if (!t.defined()) return nullptr;
  if (!t.device().is_cpu()) throw std::invalid_argument(std::string(name) + ": emulation needs a CPU tensor");
  if (t.scalar_type() != DType<T>::value)
    throw std::invalid_argument(std::string(name) + ": unexpected dtype " + std::string(c10::toString(t.scalar_type())));
  return reinterpret_cast<T*>(t.data_ptr());
}
template <typename T>
T* ptr(const std::optional<at::Tensor>& t, const char* name = "tensor") {
  return t ? ptr<T>(*t, name) : nullptr;
}

// Calls f(T{}) with T the kernel type of a floating dtype: float, double, __half, __nv_bfloat16.
template <typename F>
decltype(auto) dispatch_floating(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    case at::kHalf: return f(__half{});
    case at::kBFloat16: return f(__nv_bfloat16{});
    default: throw std::invalid_argument("unsupported dtype " + std::string(c10::toString(st)));
  }
}

}  // namespace pycnn_emu_test

// PYCNN_EMU_BINDINGS(op, m) { m.def(...); } -- functions land in the submodule `<module>.op`.
#define PYCNN_EMU_BINDINGS(op, m)                                                                     \
  static void pycnn_emu_bind_##op(pybind11::module_& m);                                             \
  static ::pycnn_emu_test::Register pycnn_emu_register_##op(#op, &pycnn_emu_bind_##op);              \
  static void pycnn_emu_bind_##op(pybind11::module_& m)
