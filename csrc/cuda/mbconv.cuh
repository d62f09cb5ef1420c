// pycnn::mbconv on CUDA: params and launchers (torch-free). Activations are NHWC; the folded weights and biases
// are in the element type and the layout the convs hold them in (contiguous: expand [E][C], depthwise [E][k * k],
// project [C_out][E]), so a call converts nothing before its launch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "../mbconv_geometry.h"
#include "common.cuh"

namespace pycnn {
namespace cuda {

struct MbConvParams {
  const void* x;       // [n, h, w, c]
  const void* we;      // [e][c] (nullptr without expansion)
  const void* be;      // [e] or nullptr
  const void* wd;      // [e][k * k]
  const void* bd;      // [e] or nullptr
  const void* wp;      // [co][e]
  const void* bp;      // [co] or nullptr
  void* d;             // [n, oh, ow, e]: written by ExpandDepthwise, read by Project (SE-scaled by then)
  void* y;             // [n, oh, ow, co]
  MbConvGeometry g;
  Act act;
  DType dtype;
};

// What one launch of the tile kernel computes, over tiles of output pixels and chunks of expanded channels:
//   Block            y = project(act(dw(act(expand(x))))) [+ x]: the expanded activation stays in shared memory
//   ExpandDepthwise  d = act(dw(act(expand(x))))  (the block with SE: the scale needs all of d first)
//   Project          y = project(d) [+ x]
enum class MbConvStage : int32_t { Block = 0, ExpandDepthwise = 1, Project = 2 };

// Dynamic shared memory of a launch; the launcher fails (cudaErrorInvalidValue) above kMbConvMaxSmemBytes,
// which only C_out in the thousands (in double) reaches: the glue checks it first.
constexpr size_t kMbConvMaxSmemBytes = 48 * 1024;
size_t mbconv_smem_bytes(const MbConvParams& p, MbConvStage stage);
cudaError_t mbconv_forward(const MbConvParams& p, MbConvStage stage, cudaStream_t stream);

}  // namespace cuda
}  // namespace pycnn
