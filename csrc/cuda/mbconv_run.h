// Tensors -> MbConvParams -> launcher, for any place the CUDA kernel source runs: the CUDA op
// (mbconv_torch.cpp, on the current stream) and the CPU emulation of the same kernels in tests (tests/emu).
// Without SE the block is one launch; with SE it is three steps: the expanded and depthwise activation d
// (one launch), pycnn.se's forward kernels scaling d (cuda/se_run.h), the projection of the scaled d.
#pragma once

#include "../mbconv.h"
#include "mbconv.cuh"
#include "run_common.h"
#include "se_run.h"

namespace pycnn {

// A bias in the input's dtype (mbconv takes any floating dtype for them), contiguous: no copy when it is already.
inline Tensor mbconv_bias(const OptTensor& b, const Tensor& input) {
  return b ? b->to(input.scalar_type()).contiguous() : Tensor();
}

inline Tensor run_mbconv_forward(const Tensor& input, const OptTensor& expand_weight, const OptTensor& expand_bias,
                                 const Tensor& dw_weight, const OptTensor& dw_bias, const Tensor& project_weight,
                                 const OptTensor& project_bias, int64_t stride, std::string_view act_name,
                                 bool residual, const OptTensor& se_reduce_weight, const OptTensor& se_reduce_bias,
                                 const OptTensor& se_expand_weight, const OptTensor& se_expand_bias,
                                 std::string_view se_act_name, cudaStream_t stream, int num_sms) {
  constexpr std::string_view op = "pycnn.mbconv";
  MbConvGeometry g = check_mbconv_args(op, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                       project_bias, stride, residual);
  check_mbconv_se(op, g, input, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias);
  const Act act = parse_act(op, act_name);
  parse_act(op, se_act_name);
  constexpr auto nhwc = at::MemoryFormat::ChannelsLast;
  const Tensor x = input.contiguous(nhwc);
  // the weights as the convs hold them ([out][in][1][1], [e][1][k][k]; the checks gave them the input's dtype)
  const Tensor we = g.expand ? expand_weight->contiguous() : Tensor();
  const Tensor wd = dw_weight.contiguous(), wp = project_weight.contiguous();
  const Tensor be = mbconv_bias(expand_bias, input), bd = mbconv_bias(dw_bias, input),
               bp = mbconv_bias(project_bias, input);
  Tensor y = at::empty({g.n, g.co, g.oh, g.ow}, input.options(), nhwc);

  cuda::MbConvParams p{};
  p.x = x.const_data_ptr();
  p.we = ptr_or_null(we);
  p.be = ptr_or_null(be);
  p.wd = wd.const_data_ptr();
  p.bd = ptr_or_null(bd);
  p.wp = wp.const_data_ptr();
  p.bp = ptr_or_null(bp);
  p.y = y.data_ptr();
  p.g = g;
  p.act = act;
  p.dtype = kernel_dtype(input.scalar_type());
  const auto stage = g.r > 0 ? cuda::MbConvStage::ExpandDepthwise : cuda::MbConvStage::Block;
  for (const auto s : {stage, cuda::MbConvStage::Project}) {
    const size_t smem = cuda::mbconv_smem_bytes(p, s);
    TORCH_CHECK(smem <= cuda::kMbConvMaxSmemBytes, op, ": ", g.co, " output channels are too many for the CUDA ",
                "kernel (one output pixel's accumulators need ", smem, " bytes of shared memory, at most ",
                cuda::kMbConvMaxSmemBytes, ")");
  }
  if (y.numel() == 0) return y;
  if (g.r == 0) {
    check_launch(cuda::mbconv_forward(p, cuda::MbConvStage::Block, stream), "pycnn.mbconv");
    return y;
  }
  Tensor d = at::empty({g.n, g.e, g.oh, g.ow}, input.options(), nhwc);
  p.d = d.data_ptr();
  check_launch(cuda::mbconv_forward(p, cuda::MbConvStage::ExpandDepthwise, stream), "pycnn.mbconv");
  // pycnn.se wants its biases in its weights' dtype; mbconv takes any floating dtype for them.
  const auto se_bias = [&](const OptTensor& b) {
    return b ? OptTensor(b->to(se_reduce_weight->scalar_type())) : std::nullopt;
  };
  const Tensor scaled = std::get<0>(run_se_forward(d, *se_reduce_weight, se_bias(se_reduce_bias), *se_expand_weight,
                                                   se_bias(se_expand_bias), std::nullopt, se_act_name, "none",
                                                   stream, num_sms))
                            .contiguous(nhwc);
  p.d = const_cast<void*>(scaled.const_data_ptr());  // Project reads it
  check_launch(cuda::mbconv_forward(p, cuda::MbConvStage::Project, stream), "pycnn.mbconv");
  return y;
}

}  // namespace pycnn
