// pycnn::eval_conv_bn_act on the CPU: an eval conv whose BatchNorm is folded in, with its residual and activation,
// for eager inference and the graphs torch.compile makes (pycnn/fused.py). It keeps, per conv weight and input
// signature, a plan: the ops that run the layer (oneDNN's fused conv on the packed folded weight; pycnn's
// depthwise or grouped conv with the fold's scale and shift; a 1x1 conv as one matrix product on the folded
// weight, then its bias; aten's conv on the folded weight; after the last two the residual add and the activation
// in place) with their arguments ready; while a plan runs, the kernels keep their weights' layouts
// (cpu/weight_forms.h). Plans come from Python (pycnn.fused._eval_plan, the one place that decides them) on the
// first call and after any change to the six tensors the fold reads (version counter, storage, dtype, device) or
// to eps; every other call runs the plan without entering Python (the op implemented in Python cost ~25 us a call
// more: the dispatcher's trip into Python and the checks there).
#include "cpu/eval_conv.h"
#include "cpu/tensor_stamp.h"
#include "cpu/weight_forms.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace pycnn::eval_conv {
namespace py = pybind11;
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// The facts of a call a plan holds for.
struct Signature {
  std::vector<int64_t> sizes, strides, stride, padding, dilation;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::optional<c10::ScalarType> residual_dtype;
  int64_t groups = 1;
  std::string kind, act;

  bool operator==(const Signature& o) const {
    return sizes == o.sizes && strides == o.strides && stride == o.stride && padding == o.padding &&
           dilation == o.dilation && dtype == o.dtype && residual_dtype == o.residual_dtype && groups == o.groups &&
           kind == o.kind && act == o.act;
  }
};

// One op of a plan. x_pos: where the layer's input goes (first step) or the previous step's output (the others).
struct Step {
  c10::OperatorHandle op;
  std::vector<c10::IValue> args;  // x, residual and the conv weight left out (None): filled per call
  int64_t x_pos = -1, residual_pos = -1, weight_pos = -1;
};

struct Plan {
  Signature signature;
  std::vector<Step> steps;  // none: the op in Python
  std::vector<int64_t> out_strides;
};

struct Entry {
  std::vector<cpu::TensorStamp> sources;  // conv weight, conv bias, bn weight, bn bias, running mean, running var
  double eps = 0;
  std::vector<std::shared_ptr<const Plan>> plans;
};

struct Python {
  py::object plan, run;
  size_t max_plans = 1;  // per conv weight (input signatures), the oldest dropped beyond
};

// Leaked on purpose: the Python objects must not be released after the interpreter is gone.
Python& python() {
  static auto* p = new Python();
  return *p;
}
std::mutex& table_mutex() {
  static auto* m = new std::mutex();
  return *m;
}
std::unordered_map<const c10::TensorImpl*, Entry>& table() {
  static auto* t = new std::unordered_map<const c10::TensorImpl*, Entry>();
  return *t;
}

bool current(const Entry& e, const std::array<const Tensor*, 6>& tensors, double eps) {
  if (e.eps != eps) return false;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (!e.sources[i].matches(tensors[i])) return false;
  return true;
}

// The erased entries' tensors are released outside the lock (a packed weight's free can take a while).
void drop_expired(std::vector<Entry>& dropped) {
  auto& t = table();
  for (auto it = t.begin(); it != t.end();) {
    bool gone = false;
    for (const cpu::TensorStamp& s : it->second.sources) gone = gone || s.expired();
    if (gone) {
      dropped.push_back(std::move(it->second));
      it = t.erase(it);
    } else {
      ++it;
    }
  }
}

const Tensor* given(const OptTensor& t) { return t.has_value() && t->defined() ? &*t : nullptr; }

struct Call {
  const Tensor& x;
  const Tensor& weight;
  std::array<const Tensor*, 6> tensors;
  double eps;
  const OptTensor& residual;
  Signature signature;

  // The op's arguments as Python objects, in schema order.
  py::tuple python_args(const OptTensor& bias, const OptTensor& bn_weight, const OptTensor& bn_bias,
                        const Tensor& running_mean, const Tensor& running_var) const {
    return py::make_tuple(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, eps, signature.stride,
                          signature.padding, signature.dilation, signature.groups, signature.kind, signature.act,
                          residual);
  }
};

std::shared_ptr<const Plan> lookup(const Call& c) {
  static std::atomic<uint32_t> calls{0};
  std::vector<Entry> dropped;  // (released after the lock)
  std::lock_guard<std::mutex> lock(table_mutex());
  // a deleted model's plans (its packed weights) go within a few thousand calls of other layers, not only at the
  // next miss
  if ((++calls & 4095u) == 0) drop_expired(dropped);
  auto it = table().find(c.weight.unsafeGetTensorImpl());
  if (it == table().end() || !current(it->second, c.tensors, c.eps)) return nullptr;
  for (const auto& p : it->second.plans)
    if (p->signature == c.signature) return p;
  return nullptr;
}

// With the GIL held (the table's lock is taken after it, never the other way round).
std::shared_ptr<const Plan> make_plan(const Call& c, const py::tuple& args) {
  auto plan = std::make_shared<Plan>();
  plan->signature = c.signature;
  // the stamp as the fold is computed from: an edit from another thread while Python plans makes it stale
  std::vector<cpu::TensorStamp> sources;
  for (const Tensor* t : c.tensors) sources.emplace_back(t);
  {
    const py::object made = python().plan(*args);
    if (!made.is_none()) {
      const auto made_tuple = made.cast<py::tuple>();
      for (const py::handle step : made_tuple[0].cast<py::list>()) {
        const auto t = step.cast<py::tuple>();
        const auto name = t[0].cast<std::string>(), overload = t[1].cast<std::string>();
        Step st{c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload.c_str()), {}};
        const auto& arguments = st.op.schema().arguments();
        const auto values = t[2].cast<py::list>();
        TORCH_CHECK(values.size() == arguments.size(), "pycnn.eval_conv_bn_act: a plan's ", name, " has ",
                    values.size(), " arguments, its schema ", arguments.size());
        st.x_pos = t[3].cast<int64_t>();
        st.residual_pos = t[4].cast<int64_t>();
        st.weight_pos = t[5].cast<int64_t>();
        for (size_t i = 0; i < arguments.size(); ++i) {
          // kept beyond this call: no reference to its input, residual or the conv weight (an entry must not
          // keep the weight it is keyed by alive); filled in per call
          const bool per_call = static_cast<int64_t>(i) == st.x_pos || static_cast<int64_t>(i) == st.residual_pos ||
                                static_cast<int64_t>(i) == st.weight_pos;
          st.args.push_back(per_call ? c10::IValue() : torch::jit::toIValue(values[i], arguments[i].real_type()));
        }
        TORCH_CHECK(st.x_pos >= 0 && st.x_pos < static_cast<int64_t>(st.args.size()),
                    "pycnn.eval_conv_bn_act: a plan's ", name, " has no input");
        plan->steps.push_back(std::move(st));
      }
      plan->out_strides = made_tuple[1].cast<std::vector<int64_t>>();
    }
  }
  std::vector<Entry> dropped;  // (released after the lock, as is an evicted plan)
  std::shared_ptr<const Plan> evicted;
  std::lock_guard<std::mutex> lock(table_mutex());
  drop_expired(dropped);
  // a tensor changed while Python planned (another thread): the plan runs this call only, as the call began
  // before the change, and is not kept
  bool planned_from_current = true;
  for (size_t i = 0; i < sources.size(); ++i)
    planned_from_current = planned_from_current && sources[i].matches(c.tensors[i]);
  if (!planned_from_current) return plan;
  Entry& e = table()[c.weight.unsafeGetTensorImpl()];
  if (e.sources.empty() || !current(e, c.tensors, c.eps)) {
    Entry fresh{std::move(sources), c.eps, {}};
    std::swap(e, fresh);
    dropped.push_back(std::move(fresh));
  }
  if (e.plans.size() >= python().max_plans) {  // each may hold a packed weight
    evicted = std::move(e.plans.front());
    e.plans.erase(e.plans.begin());
  }
  e.plans.push_back(plan);
  return plan;
}

Tensor run(const Plan& p, const Tensor& x, const Tensor& weight, const OptTensor& residual) {
  Tensor y = x;
  const cpu::WeightFormsScope keep_forms;  // the plan holds while its tensors are unchanged: so do their layouts
  for (const Step& st : p.steps) {
    std::vector<c10::IValue> stack = st.args;
    stack[st.x_pos] = y;
    if (st.residual_pos >= 0 && residual.has_value()) stack[st.residual_pos] = *residual;
    if (st.weight_pos >= 0) stack[st.weight_pos] = weight;
    {
      at::AutoDispatchBelowADInplaceOrView guard;  // inference: nothing for autograd to record
      st.op.callBoxed(&stack);
    }
    y = stack[0].toTensor();
  }
  if (y.strides() == c10::IntArrayRef(p.out_strides)) return y;
  // the layout the op's fake promised (pycnn.fused._output_layout)
  Tensor out = at::empty_strided(y.sizes(), p.out_strides, y.options());
  return out.copy_(y);
}

Tensor eval_conv_bn_act_cpu(const Tensor& x, const Tensor& weight, const OptTensor& bias, const OptTensor& bn_weight,
                            const OptTensor& bn_bias, const Tensor& running_mean, const Tensor& running_var,
                            double eps, c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                            int64_t groups, c10::string_view kind, c10::string_view act, const OptTensor& residual) {
  Call c{x, weight, {&weight, given(bias), given(bn_weight), given(bn_bias), &running_mean, &running_var}, eps,
         residual, {}};
  c.signature.sizes = x.sizes().vec();
  c.signature.strides = x.strides().vec();
  c.signature.stride = stride.vec();
  c.signature.padding = padding.vec();
  c.signature.dilation = dilation.vec();
  c.signature.dtype = x.scalar_type();
  if (given(residual)) c.signature.residual_dtype = residual->scalar_type();
  c.signature.groups = groups;
  c.signature.kind = std::string(kind);
  c.signature.act = std::string(act);
  // inference tensors have no version counter: nothing tells when their fold goes stale, so no plan is kept
  bool plannable = true;
  for (const Tensor* t : c.tensors) plannable = plannable && (t == nullptr || cpu::stampable(*t));
  std::shared_ptr<const Plan> plan = plannable ? lookup(c) : nullptr;
  if (plan == nullptr || plan->steps.empty()) {
    py::gil_scoped_acquire gil;
    TORCH_CHECK(python().plan && python().run, "pycnn.eval_conv_bn_act: import pycnn.fused first (its Python side)");
    const py::tuple args = c.python_args(bias, bn_weight, bn_bias, running_mean, running_var);
    if (plannable && plan == nullptr) plan = make_plan(c, args);
    if (plan == nullptr || plan->steps.empty()) return python().run(*args).cast<Tensor>();
  }
  return run(*plan, x, weight, residual);
}

}  // namespace

void set_python(py::object plan, py::object run, int64_t max_plans) {
  TORCH_CHECK(max_plans >= 1, "pycnn.eval_conv_bn_act: max_plans must be >= 1, got ", max_plans);
  python().plan = std::move(plan);
  python().run = std::move(run);
  python().max_plans = static_cast<size_t>(max_plans);
}

int64_t entries() {
  std::vector<Entry> dropped;
  std::lock_guard<std::mutex> lock(table_mutex());
  drop_expired(dropped);
  return static_cast<int64_t>(table().size());
}

int64_t plans(const Tensor& weight) {
  std::lock_guard<std::mutex> lock(table_mutex());
  auto it = table().find(weight.unsafeGetTensorImpl());
  return it == table().end() ? 0 : static_cast<int64_t>(it->second.plans.size());
}

void forget(const Tensor& weight) {
  cpu::forget_weight_forms(weight);
  Entry dropped;
  std::lock_guard<std::mutex> lock(table_mutex());
  auto it = table().find(weight.unsafeGetTensorImpl());
  if (it == table().end()) return;
  dropped = std::move(it->second);
  table().erase(it);
}

void sweep() {
  cpu::sweep_weight_forms();
  std::vector<Entry> dropped;
  std::lock_guard<std::mutex> lock(table_mutex());
  drop_expired(dropped);
}

TORCH_LIBRARY_IMPL(pycnn, CPU, m) { m.impl("eval_conv_bn_act", &eval_conv_bn_act_cpu); }

}  // namespace pycnn::eval_conv
