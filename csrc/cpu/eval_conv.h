// pycnn::eval_conv_bn_act on the CPU (csrc/cpu/eval_conv.cpp): the plans it keeps, and the Python functions it
// asks for them (pycnn/fused.py sets them at import).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

namespace pycnn::eval_conv {

// plan(*op_args) -> None or ([(op name, overload, arguments, x position, residual position, weight position)
// per step], output strides); run(*op_args) -> Tensor: the op in Python, where there is no plan. max_plans: input
// signatures kept per conv weight (each plan may hold a packed weight), the oldest dropped beyond.
void set_python(pybind11::object plan, pybind11::object run, int64_t max_plans);
// The conv weights alive that plans are kept for (the freed ones' entries dropped first).
int64_t entries();
// The plans kept for this conv weight (input signatures: at most max_plans).
int64_t plans(const at::Tensor& weight);
// Drops the entry of this conv weight and the kernel layouts kept of it (cpu/weight_forms.h): its fold changed
// in a way no version counter sees (`.data`).
void forget(const at::Tensor& weight);
// Drops the entries whose conv weight was freed, and the freed weights' kept layouts (cpu/weight_forms.h).
void sweep();

}  // namespace pycnn::eval_conv
