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
}
