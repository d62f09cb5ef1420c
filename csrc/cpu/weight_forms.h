// Kernel layouts of weights kept between inference calls (pycnn::eval_conv_bn_act's plans, csrc/cpu/eval_conv.cpp).
//
// A kernel that reorders its weight per call (pycnn.gconv's taps as [G, k*k, Cg, Cog], padded or packed) spends
// as much on it as a small layer's convolution (RegNetX-400MF's 384-channel grouped 3x3 at 7x7, batch 1: ~46 us
// reordering the weight, ~57 us convolving). Inside a WeightFormsScope (opened by an eval plan's run, whose
// stamps and clear_folds already make "the weight is unchanged" the caller's contract) a kernel asks for the form
// it needs with weight_form(); outside one, every call makes its own and nothing is kept, so a direct call of an
// op after an edit no version counter sees (`.data`) can never read a stale layout.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

namespace pycnn::cpu {

// While one is open on this thread, weight_form() keeps what it makes. Nests.
class WeightFormsScope {
 public:
  WeightFormsScope();
  ~WeightFormsScope();
  WeightFormsScope(const WeightFormsScope&) = delete;
  WeightFormsScope& operator=(const WeightFormsScope&) = delete;
};

// make() (a layout of weight): inside a WeightFormsScope the one kept for (weight, variant, detail) while the
// weight is the same tensor with the same version, storage and dtype, else made (and kept, replacing the
// weight's older form of that key). variant: the kernel table that made it (its ISA variant); detail: whatever
// else the layout depends on besides the weight's shape and dtype.
at::Tensor weight_form(const at::Tensor& weight, const void* variant, int64_t detail,
                       const std::function<at::Tensor()>& make);

// The weights forms are kept for, those of freed weights dropped first.
int64_t weight_forms_entries();
// Drops the forms of this weight (it changed in a way no version counter sees).
void forget_weight_forms(const at::Tensor& weight);

}  // namespace pycnn::cpu
