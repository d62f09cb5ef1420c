#include "cpu/weight_forms.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "cpu/cpu_cache.h"
#include "cpu/tensor_stamp.h"

namespace pycnn::cpu {
namespace {

thread_local int open_scopes = 0;
std::atomic<int64_t> made_in_scopes{0};

struct Form {
  TensorStamp stamp;
  at::Tensor tensor;
};
using Key = std::tuple<uintptr_t, uintptr_t, int64_t>;  // the weight's TensorImpl, the variant, the detail

std::mutex& forms_mutex() {
  static auto* m = new std::mutex();
  return *m;
}
// Leaked on purpose: no tensor is freed after the interpreter is gone.
std::map<Key, Form>& forms() {
  static auto* f = new std::map<Key, Form>();
  return *f;
}

// The erased forms are released outside the lock.
void drop_expired(std::vector<Form>& dropped) {
  auto& f = forms();
  for (auto it = f.begin(); it != f.end();) {
    if (it->second.stamp.expired()) {
      dropped.push_back(std::move(it->second));
      it = f.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

WeightFormsScope::WeightFormsScope() { ++open_scopes; }
WeightFormsScope::~WeightFormsScope() { --open_scopes; }

at::Tensor weight_form(const at::Tensor& weight, const void* variant, int64_t detail,
                       const std::function<at::Tensor()>& make) {
  if (open_scopes == 0 || !stampable(weight)) return make();
  static std::atomic<uint32_t> calls{0};
  const Key key{reinterpret_cast<uintptr_t>(weight.unsafeGetTensorImpl()), reinterpret_cast<uintptr_t>(variant),
                detail};
  {
    std::vector<Form> dropped;
    std::lock_guard<std::mutex> lock(forms_mutex());
    // a freed model's forms go within a few thousand calls, not only at the next miss
    if ((++calls & 4095u) == 0) drop_expired(dropped);
    auto it = forms().find(key);
    if (it != forms().end() && it->second.stamp.matches(&weight)) return it->second.tensor;
  }
  const TensorStamp stamp(&weight);  // as the form is made from
  at::Tensor made;
  {
    const cpu_cache::OutsideScopes outside;  // kept beyond this forward: not from the activations' cached blocks
    made = make();
  }
  ++made_in_scopes;
  std::vector<Form> dropped;
  std::lock_guard<std::mutex> lock(forms_mutex());
  drop_expired(dropped);
  if (stamp.matches(&weight)) {  // (changed meanwhile by another thread: serves this call only)
    Form& f = forms()[key];
    dropped.push_back(std::move(f));
    f = Form{stamp, made};
  }
  return made;
}

WeightFormsStats weight_forms_stats() {
  std::vector<Form> dropped;
  std::lock_guard<std::mutex> lock(forms_mutex());
  drop_expired(dropped);
  return {static_cast<int64_t>(forms().size()), made_in_scopes.load()};
}

void sweep_weight_forms() {
  std::vector<Form> dropped;
  std::lock_guard<std::mutex> lock(forms_mutex());
  drop_expired(dropped);
}

void forget_weight_forms(const at::Tensor& weight) {
  std::vector<Form> dropped;
  std::lock_guard<std::mutex> lock(forms_mutex());
  auto& f = forms();
  const auto impl = reinterpret_cast<uintptr_t>(weight.unsafeGetTensorImpl());
  for (auto it = f.lower_bound(Key{impl, 0, INT64_MIN}); it != f.end() && std::get<0>(it->first) == impl;) {
    dropped.push_back(std::move(it->second));
    it = f.erase(it);
  }
}

}  // namespace pycnn::cpu
