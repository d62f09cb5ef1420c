// Every pycnn op schema, declared once. CPU implementations register from csrc/cpu/, CUDA ones from
// csrc/cuda/*_torch.cpp; Python adds register_fake and register_autograd (pycnn/ops.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <vector>

TORCH_LIBRARY(pycnn, m) {
  // Training or eval BatchNorm + optional residual add + activation:
  //   output = act(weight * (input - mean) / sqrt(var + eps) + bias [+ residual])
  // training: mean/var are the batch statistics (biased var), returned as save_mean/save_var in float32
  // (float64 for float64 input). eval: running_mean/running_var are used and returned.
  // The running-statistics update is left to the caller (pycnn.nn.BatchNormAct2d) so the op stays functional.
  m.def(
      "bn_act_forward(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, Tensor? running_mean, "
      "Tensor? running_var, bool training, float eps, str act) -> (Tensor output, Tensor save_mean, Tensor save_var)");
  // That update, in place and in one call (nn.BatchNorm2d's, after a training forward of `count` values per
  // channel): num_batches_tracked += 1 when given; factor = momentum, or 1 / num_batches_tracked when momentum
  // is None (cumulative average); running_mean.lerp_(save_mean, factor);
  // running_var.lerp_(save_var * (count / (count - 1)), factor), each in the running statistics' dtype.
  m.def(
      "bn_act_update_stats_(Tensor(a!) running_mean, Tensor(b!) running_var, Tensor(c!)? num_batches_tracked, "
      "Tensor save_mean, Tensor save_var, float? momentum, int count) -> ()");
  // Gradients of bn_act_forward; grad_residual is returned when residual is given.
  m.def(
      "bn_act_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, "
      "Tensor save_mean, Tensor save_var, bool training, float eps, str act) -> "
      "(Tensor grad_input, Tensor grad_weight, Tensor grad_bias, Tensor? grad_residual)");
  // Squeeze-and-Excitation [+ residual] + post-activation, N C H W input, per image n:
  //   pooled = mean_hw(input)                           [N, C]
  //   hidden = fc1_weight @ pooled + fc1_bias           [N, C_r]   (pre-activation)
  //   gate   = sigmoid(fc2_weight @ act(hidden) + fc2_bias)   [N, C]
  //   output = post_act(input * gate [+ residual])
  // fc*_weight: [out, in] or [out, in, 1, 1]; pooled/hidden/gate are float32 (float64 for float64 input) and
  // are what the backward needs besides input (and residual).
  m.def(
      "se_forward(Tensor input, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, Tensor? fc2_bias, "
      "Tensor? residual, str act, str post_act) -> (Tensor output, Tensor pooled, Tensor hidden, Tensor gate)");
  // Gradients of se_forward; the fc gradients have the shape and dtype of the fc weights, grad_residual
  // is returned when residual is given.
  m.def(
      "se_backward(Tensor grad_output, Tensor input, Tensor fc1_weight, Tensor fc2_weight, Tensor? residual, "
      "Tensor pooled, Tensor hidden, Tensor gate, str act, str post_act) -> (Tensor grad_input, "
      "Tensor grad_fc1_weight, Tensor grad_fc1_bias, Tensor grad_fc2_weight, Tensor grad_fc2_bias, "
      "Tensor? grad_residual)");
  // Depthwise conv2d (channel multiplier 1, weight (C, 1, k, k), k odd <= 7, stride 1|2, dilation 1|2)
  // + per-channel scale and bias (folded BatchNorm or conv bias) + optional residual add + activation:
  //   output = act(conv(input, weight) * scale + bias [+ residual])
  // scale defaults to 1 and bias to 0; they are float32 or the input's dtype (float64 for float64 input).
  m.def(
      "dwconv_forward(Tensor input, Tensor weight, Tensor? scale, Tensor? bias, Tensor? residual, "
      "int[2] stride, int[2] padding, int[2] dilation, str act) -> Tensor");
  // Gradients of dwconv_forward (the convolution is recomputed, nothing but the inputs is saved).
  // grad_scale and grad_bias are returned even when scale/bias are absent (then in the accumulation dtype);
  // grad_residual when residual is given.
  m.def(
      "dwconv_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? scale, Tensor? bias, "
      "Tensor? residual, int[2] stride, int[2] padding, int[2] dilation, str act) -> "
      "(Tensor grad_input, Tensor grad_weight, Tensor grad_scale, Tensor grad_bias, Tensor? grad_residual)");
  // Grouped conv2d (k 1 or 3, any stride/padding, dilation 1) + optional per-channel scale/bias (folded
  // BatchNorm or conv bias) + optional residual + activation:
  //   conv = conv2d(input, weight, stride, padding, groups)
  //   output = act(conv * scale[c] + bias[c] [+ residual])
  // saved: the raw conv output when save is true and backward needs it (a scale or an activation), so
  // backward never recomputes the convolution; otherwise an empty tensor.
  m.def(
      "gconv_forward(Tensor input, Tensor weight, Tensor? scale, Tensor? bias, Tensor? residual, int[2] stride, "
      "int[2] padding, int groups, str act, bool save) -> (Tensor output, Tensor saved)");
  // Gradients of gconv_forward. saved is gconv_forward's; when it is empty but needed, the conv is
  // recomputed. grad_scale / grad_bias / grad_residual are returned when scale / bias / residual are given.
  m.def(
      "gconv_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? scale, Tensor? bias, "
      "Tensor? residual, Tensor saved, int[2] stride, int[2] padding, int groups, str act) -> "
      "(Tensor grad_input, Tensor grad_weight, Tensor? grad_scale, Tensor? grad_bias, Tensor? grad_residual)");
  // Fused inverted-residual block (MobileNetV2 / EfficientNet MBConv), eval: the BatchNorms are folded into the
  // convs (weights and biases), padding is k / 2:
  //   e = act(conv1x1(input, expand_weight) + expand_bias)      (absent: e = input, expansion ratio 1)
  //   d = act(dwconv_kxk(e, dw_weight, stride) + dw_bias)
  //   [d = d * sigmoid(conv1x1(se_act(conv1x1(mean_hw(d), se_reduce_weight) + se_reduce_bias),
  //                            se_expand_weight) + se_expand_bias)          (squeeze-and-excitation, when given)]
  //   output = conv1x1(d, project_weight) + project_bias [+ input when residual]
  // The expanded activation is computed in row tiles and never stored (with SE: d is stored once, as the scale
  // needs all of it before the projection). Output channels_last. No autograd.
  m.def(
      "mbconv_forward(Tensor input, Tensor? expand_weight, Tensor? expand_bias, Tensor dw_weight, Tensor? dw_bias, "
      "Tensor project_weight, Tensor? project_bias, int stride, str act, bool residual, "
      "Tensor? se_reduce_weight=None, Tensor? se_reduce_bias=None, Tensor? se_expand_weight=None, "
      "Tensor? se_expand_bias=None, str se_act=\"relu\") -> Tensor");
  // Eval conv + BatchNorm (folded into it) [+ residual] + activation, given the modules' own tensors, for eager
  // inference and the graphs torch.compile makes (pycnn/fused.py): kind "dense" (oneDNN's fused conv on the folded,
  // packed weight, or aten's conv), "gemm" (a 1x1 conv of a channels_last input as one matrix product on the folded
  // weight; else as dense), "depthwise" or "grouped" (pycnn's kernels with the fold's scale and shift). The fold
  // and the prepared calls are kept per conv weight and input signature, redone when one of the six tensors
  // changes (csrc/cpu/eval_conv.cpp). CPU only; no autograd (called where it has nothing to record).
  m.def(
      "eval_conv_bn_act(Tensor x, Tensor weight, Tensor? bias, Tensor? bn_weight, Tensor? bn_bias, "
      "Tensor running_mean, Tensor running_var, float eps, int[] stride, int[] padding, int[] dilation, "
      "int groups, str kind, str act, Tensor? residual) -> Tensor");
}

namespace {

// bn_act_update_stats_ updates buffers and returns nothing; torch's fallbacks for custom ops bump the version
// counters of mutated outputs only, and the default autograd one dispatches past ADInplaceOrView. So: autograd
// passes the call down (no gradient), and ADInplaceOrView, which inference mode keeps for normal tensors as it
// does for lerp_, runs the op and bumps the counters of the arguments the schema marks as written. The cached
// eval folds (pycnn/fused.py) see running statistics changed by a training forward through them.
void below_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  at::AutoDispatchBelowAutograd guard;
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

void bump_written_arguments(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& arguments = op.schema().arguments();
  const size_t first = stack->size() - arguments.size();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const c10::IValue& value = (*stack)[first + i];
    if (arguments[i].alias_info() && arguments[i].alias_info()->isWrite() && value.isTensor())
      written.push_back(value.toTensor());
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) torch::autograd::impl::bump_version(t);
}

}  // namespace

TORCH_LIBRARY_IMPL(pycnn, Autograd, m) {
  m.impl("bn_act_update_stats_", torch::CppFunction::makeFromBoxedFunction<&below_autograd>());
}
TORCH_LIBRARY_IMPL(pycnn, ADInplaceOrView, m) {
  m.impl("bn_act_update_stats_", torch::CppFunction::makeFromBoxedFunction<&bump_written_arguments>());
}
