// What identifies a tensor's contents without reading them: the tensor itself, its version counter, storage,
// dtype and device. Caches of derived tensors (a BatchNorm fold's plan, a kernel's weight layout) keep one per
// tensor they read and serve an entry only while every stamp matches.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace pycnn::cpu {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

// A tensor as it was when the stamp was taken (none: an optional tensor not given). The weak reference keeps
// the tensor's address from being reused by another while the stamp lives, so that an equal address is the same
// tensor. Inference tensors have no version counter: not stampable (stampable()).
struct TensorStamp {
  std::optional<WeakImpl> ref;
  const c10::TensorImpl* impl = nullptr;
  int64_t version = 0;
  const void* data = nullptr;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  c10::Device device = c10::kCPU;

  TensorStamp() = default;
  explicit TensorStamp(const at::Tensor* t) {
    if (t == nullptr) return;
    ref.emplace(t->getIntrusivePtr());
    impl = t->unsafeGetTensorImpl();
    version = t->_version();
    data = t->data_ptr();
    dtype = t->scalar_type();
    device = t->device();
  }
  bool matches(const at::Tensor* t) const {
    if (t == nullptr) return impl == nullptr;
    return impl == t->unsafeGetTensorImpl() && version == t->_version() && data == t->data_ptr() &&
           dtype == t->scalar_type() && device == t->device();
  }
  bool expired() const { return ref.has_value() && ref->expired(); }
};

inline bool stampable(const at::Tensor& t) { return !t.is_inference(); }

}  // namespace pycnn::cpu
