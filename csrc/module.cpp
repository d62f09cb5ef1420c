// The Python module pycnn._C: importing it registers the ops (static initializers in the other
// translation units); build_info() says how this binary was built; check_<op>(...) runs the argument checks
// of an op (the ones its CPU and CUDA kernels run first) for pycnn/ops.py's fake kernels, so that under
// torch.compile and torch.export bad arguments get the same errors as in eager, from the same code.
// pybind11 with torch's Tensor caster (defined in libtorch_python), not torch/extension.h: that one parses
// all of libtorch's C++ API (torch::nn, optim, autograd...), 3/4 of this unit's compile time.
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "bn_act.h"
#include "build_info.h"
#include "cpu/cpu_cache.h"
#include "cpu/eval_conv.h"
#include "cpu/weight_forms.h"
#include "cpu/kernel_utils.h"
#include "dwconv.h"
#include "gconv.h"
#include "mbconv.h"
#include "se.h"

namespace py = pybind11;
using namespace pycnn;

namespace {

// Each takes the op's schema arguments (csrc/ops.cpp) in order and raises what the kernels would.
void check_bn_act_forward(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                          const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
                          bool training, double /*eps*/, const std::string& act) {
  check_bn_act_forward_args(input, weight, bias, residual, running_mean, running_var, training);
  parse_act("pycnn.bn_act", act);
}

void check_bn_act_update_stats_(const Tensor& running_mean, const Tensor& running_var,
                                const OptTensor& num_batches_tracked, const Tensor& save_mean,
                                const Tensor& save_var, std::optional<double> momentum, int64_t count) {
  check_bn_act_update_stats_args(running_mean, running_var, num_batches_tracked, save_mean, save_var, momentum,
                                 count);
}

void check_bn_act_backward(const Tensor& grad_output, const Tensor& input, const OptTensor& weight,
                           const OptTensor& bias, const OptTensor& residual, const Tensor& save_mean,
                           const Tensor& save_var, bool /*training*/, double /*eps*/, const std::string& act) {
  check_bn_act_backward_args(grad_output, input, weight, bias, residual, save_mean, save_var);
  parse_act("pycnn.bn_act_backward", act);
}

void check_dwconv_forward(const Tensor& input, const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                          const OptTensor& residual, std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> dilation, const std::string& act) {
  constexpr std::string_view op = "pycnn.dwconv";
  check_dwconv_args(op, input, weight, scale, bias, residual, stride, padding, dilation);
  parse_act(op, act);
}

void check_dwconv_backward(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                           const OptTensor& scale, const OptTensor& bias, const OptTensor& residual,
                           std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                           const std::string& act) {
  constexpr std::string_view op = "pycnn.dwconv_backward";
  check_dwconv_backward_args(op, grad_output, input, weight, scale, bias, residual, stride, padding, dilation);
  parse_act(op, act);
}

void check_gconv_forward(const Tensor& input, const Tensor& weight, const OptTensor& scale, const OptTensor& bias,
                         const OptTensor& residual, std::vector<int64_t> stride, std::vector<int64_t> padding,
                         int64_t groups, const std::string& act, bool /*save*/) {
  constexpr std::string_view op = "pycnn.gconv";
  check_gconv_args(op, input, weight, scale, bias, residual, stride, padding, groups);
  parse_act(op, act);
}

void check_gconv_backward(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                          const OptTensor& scale, const OptTensor& bias, const OptTensor& residual,
                          const Tensor& saved, std::vector<int64_t> stride, std::vector<int64_t> padding,
                          int64_t groups, const std::string& act) {
  constexpr std::string_view op = "pycnn.gconv_backward";
  check_gconv_backward_args(op, grad_output, input, weight, scale, bias, residual, saved, stride, padding, groups);
  parse_act(op, act);
}

void check_se_forward(const Tensor& input, const Tensor& fc1_weight, const OptTensor& fc1_bias,
                      const Tensor& fc2_weight, const OptTensor& fc2_bias, const OptTensor& residual,
                      const std::string& act, const std::string& post_act) {
  constexpr std::string_view op = "pycnn.se";
  check_se_args(op, input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual);
  parse_act(op, act);
  parse_act(op, post_act);
}

void check_se_backward(const Tensor& grad_output, const Tensor& input, const Tensor& fc1_weight,
                       const Tensor& fc2_weight, const OptTensor& residual, const Tensor& pooled,
                       const Tensor& hidden, const Tensor& gate, const std::string& act,
                       const std::string& post_act) {
  constexpr std::string_view op = "pycnn.se_backward";
  check_se_backward_args(op, grad_output, input, fc1_weight, fc2_weight, residual, pooled, hidden, gate);
  parse_act(op, act);
  parse_act(op, post_act);
}

void check_mbconv_forward(const Tensor& input, const OptTensor& expand_weight, const OptTensor& expand_bias,
                          const Tensor& dw_weight, const OptTensor& dw_bias, const Tensor& project_weight,
                          const OptTensor& project_bias, int64_t stride, const std::string& act, bool residual,
                          const OptTensor& se_reduce_weight, const OptTensor& se_reduce_bias,
                          const OptTensor& se_expand_weight, const OptTensor& se_expand_bias,
                          const std::string& se_act) {
  constexpr std::string_view op = "pycnn.mbconv";
  MbConvGeometry g = check_mbconv_args(op, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                       project_bias, stride, residual);
  check_mbconv_se(op, g, input, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias);
  parse_act(op, act);
  parse_act(op, se_act);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pycnn's compiled ops (torch.ops.pycnn.*)";
  m.def("build_info", [] {
    py::dict info;
    info["torch_version"] = PYCNN_TORCH_VERSION;
    info["cuda"] = PYCNN_WITH_CUDA != 0;
    info["cuda_arch_list"] = PYCNN_CUDA_ARCH_LIST;
    info["cxx_compiler"] = PYCNN_CXX_COMPILER;
    info["cuda_compiler"] = PYCNN_CUDA_COMPILER;
    // The CPU kernel variant that runs (cpu/isa_kernels.h) and the best one this CPU has.
    info["cpu_isa"] = cpu::isa_name(cpu::active_isa());
    info["cpu_isa_best"] = cpu::isa_name(cpu::cpu_isa());
    return info;
  });
  m.def(
      "_parallel_threads",
      [] {
        // How many threads an at::parallel_for of this build runs on: at::get_num_threads() when the kernels
        // were compiled with ATen's parallel backend (OpenMP: a header template over `#pragma omp parallel`),
        // 1 when they were not, whatever torch.set_num_threads says.
        std::atomic<int> seen{0};
        std::vector<std::atomic<bool>> used(static_cast<size_t>(at::get_num_threads()));
        at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
          const int t = at::get_thread_num();
          if (t >= 0 && t < static_cast<int>(used.size()) && !used[t].exchange(true)) ++seen;
        });
        return seen.load();
      },
      "Tests only: the threads one at::parallel_for of pycnn's kernels runs on.");
  m.def("_cpu_isa", [] { return std::string(cpu::isa_name(cpu::active_isa())); },
        "The CPU kernel variant that runs (baseline, avx2 or avx512).");
  m.def(
      "_set_cpu_isa", [](const std::string& name) { return std::string(cpu::isa_name(cpu::set_isa_cap(cpu::parse_isa(name)))); },
      "Tests only: caps the CPU kernel variant for this process (baseline, avx2 or avx512, within PYCNN_CPU_ISA "
      "and the CPU); returns the variant that now runs.");
  m.def("_cpu_cache_enable", &cpu_cache::enable, py::arg("max_cached_bytes"),
        "Installs the caching CPU allocator (csrc/cpu/cpu_cache.h) and bounds what it keeps.");
  m.def("_cpu_cache_disable", &cpu_cache::disable, py::arg("keep_cached") = false,
        "Passes every request (but those inside a scope) to the CPU allocator it replaced; it stays installed.");
  m.def("_cpu_cache_empty", &cpu_cache::empty, "Frees the cached blocks.");
  m.def("_eval_conv_set_python", &eval_conv::set_python, py::arg("plan"), py::arg("run"), py::arg("max_plans"),
        "pycnn::eval_conv_bn_act's Python side: plan(*args) makes a layer's plan (or None), run(*args) runs it; "
        "max_plans input signatures kept per conv weight.");
  m.def("_eval_conv_entries", &eval_conv::entries, "The conv weights pycnn::eval_conv_bn_act keeps plans for.");
  m.def("_eval_conv_plans", &eval_conv::plans, py::arg("weight"),
        "The plans pycnn::eval_conv_bn_act keeps for this conv weight.");
  m.def("_eval_conv_forget", &eval_conv::forget, py::arg("weight"),
        "Drops pycnn::eval_conv_bn_act's plans for this conv weight and the kernel layouts kept of it.");
  m.def(
      "_weight_forms_stats",
      [] {
        const cpu::WeightFormsStats s = cpu::weight_forms_stats();
        return py::dict(py::arg("entries") = s.entries, py::arg("made") = s.made);
      },
      "The kernel layouts of weights kept between inference calls, and those made inside scopes "
      "(csrc/cpu/weight_forms.h).");
  // (a holder, so that the scope opens in __enter__ and closes in __exit__, on the thread of the with-block)
  struct WeightFormsScopeHolder {
    std::optional<cpu::WeightFormsScope> scope;
  };
  py::class_<WeightFormsScopeHolder>(m, "_WeightFormsScope",
                                     "Inside it the kernels keep their weights' layouts between calls (an eval "
                                     "fold's own tensors, which nothing edits in place: csrc/cpu/weight_forms.h).")
      .def(py::init<>())
      .def("__enter__", [](WeightFormsScopeHolder& h) { h.scope.emplace(); })
      .def("__exit__", [](WeightFormsScopeHolder& h, const py::args&) { h.scope.reset(); });
  m.def("_eval_conv_sweep", &eval_conv::sweep,
        "Drops pycnn::eval_conv_bn_act's plans for freed conv weights, and the freed weights' kept layouts.");
  m.def("_cpu_cache_enter_scope", &cpu_cache::enter_scope, py::arg("max_cached_bytes"),
        "Caches until the matching _cpu_cache_exit_scope (a fused network's forward).");
  m.def("_cpu_cache_exit_scope", &cpu_cache::exit_scope, "Closes a _cpu_cache_enter_scope.");
  m.def("_cpu_cache_suspend_scopes", &cpu_cache::suspend_scopes,
        "Suspends the calling thread's scopes; returns how many were open (for _cpu_cache_resume_scopes).");
  m.def("_cpu_cache_resume_scopes", &cpu_cache::resume_scopes, py::arg("open"),
        "Reopens the scopes _cpu_cache_suspend_scopes suspended.");
  m.def("_cpu_cache_size_class", &cpu_cache::size_class, "Tests only: the block size a request is served from.");
  m.def(
      "_cpu_cache_stats",
      [] {
        const cpu_cache::Stats s = cpu_cache::stats();
        py::dict d;
        d["enabled"] = s.enabled;
        d["scopes"] = s.scopes;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        d["cached_bytes"] = s.cached_bytes;
        d["live_bytes"] = s.live_bytes;
        d["max_cached_bytes"] = s.max_cached_bytes;
        d["min_cached_bytes"] = cpu_cache::kMinCachedBytes;
        return d;
      },
      "The caching CPU allocator's counters.");
  m.def("check_bn_act_forward", &check_bn_act_forward);
  m.def("check_bn_act_backward", &check_bn_act_backward);
  m.def("check_bn_act_update_stats_", &check_bn_act_update_stats_);
  m.def("check_dwconv_forward", &check_dwconv_forward);
  m.def("check_dwconv_backward", &check_dwconv_backward);
  m.def("check_gconv_forward", &check_gconv_forward);
  m.def("check_gconv_backward", &check_gconv_backward);
  m.def("check_se_forward", &check_se_forward);
  m.def("check_se_backward", &check_se_backward);
  m.def("check_mbconv_forward", &check_mbconv_forward);
}
