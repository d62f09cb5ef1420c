// Kernel layouts of weights kept between inference calls.
//
// A kernel that lays its weight out per call (pycnn.gconv's taps as [G, k*k, Cg, Cog], padded or packed;
// pycnn.dwconv's taps-major copy; pycnn.mbconv's GEMM panels and padded vectors) spends as much on it as a small
// layer's work (RegNetX-400MF's 384-channel grouped 3x3 at 7x7, batch 1: ~46 us reordering the weight, ~57 us
// convolving). Inside a WeightFormsScope a kernel's weight_form() keeps the layout it makes. Scopes are opened
// where "the weight is unchanged" is already the caller's contract: while an eval plan runs
// (csrc/cpu/eval_conv.cpp: its stamps cover the same tensors, and clear_folds drops both), and around
// pycnn.mbconv on an eval fold's own tensors, which nothing edits in place (pycnn.fused._mbconv_from_folds).
// Outside one, every call makes its own and nothing is kept, so a direct call of an op after an edit no version
// counter sees (`.data`) can never read a stale layout.
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
// weight is the same tensor with the same version, storage and dtype, else made (outside the caching CPU
// allocator's scopes: it outlives the forward that made it) and kept, replacing the weight's older layout of
// that key. variant: what made it (a kernel table: its ISA variant; or a tag of the layout); detail: whatever
// else it depends on besides the weight's shape (form_detail).
at::Tensor weight_form(const at::Tensor& weight, const void* variant, int64_t detail,
                       const std::function<at::Tensor()>& make);

// A detail for weight_form: what (a role in the op, groups) and the dtype the layout is made in.
inline int64_t form_detail(int64_t what, at::ScalarType dtype) {
  static_assert(static_cast<int>(at::ScalarType::NumOptions) <= 64, "the dtype takes the detail's low 6 bits");
  return what * 64 + static_cast<int64_t>(dtype);
}

struct WeightFormsStats {
  int64_t entries = 0;  // layouts kept (of weights alive: the freed ones' dropped first)
  int64_t made = 0;     // made inside scopes since the process started (a kept layout served instead: not counted)
};
WeightFormsStats weight_forms_stats();
// Drops the layouts of this weight (it changed in a way no version counter sees).
void forget_weight_forms(const at::Tensor& weight);
// Drops the layouts of freed weights.
void sweep_weight_forms();

}  // namespace pycnn::cpu
