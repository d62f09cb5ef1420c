// Every pycnn op schema, declared once. CPU implementations register from csrc/cpu/, CUDA ones from
// csrc/cuda/*_torch.cpp; Python adds register_fake and register_autograd (pycnn/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(pycnn, m) {
  // Training or eval BatchNorm + optional residual add + activation:
  //   output = act(weight * (input - mean) / sqrt(var + eps) + bias [+ residual])
  // training: mean/var are the batch statistics (biased var), returned as save_mean/save_var in float32
  // (float64 for float64 input). eval: running_mean/running_var are used and returned.
  // The running-statistics update is left to the caller (pycnn.nn.BatchNormAct2d) so the op stays functional.
  m.def(
      "bn_act_forward(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, Tensor? running_mean, "
      "Tensor? running_var, bool training, float eps, str act) -> (Tensor output, Tensor save_mean, Tensor save_var)");
  // Gradients of bn_act_forward; grad_residual is returned when residual is given.
  m.def(
      "bn_act_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, "
      "Tensor save_mean, Tensor save_var, bool training, float eps, str act) -> "
      "(Tensor grad_input, Tensor grad_weight, Tensor grad_bias, Tensor? grad_residual)");
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
}
