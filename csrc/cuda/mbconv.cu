// pycnn::mbconv CUDA kernel (torch-free; compiled by nvcc and, for tests, by the host compiler against
// csrc/emu/). Activations are NHWC.
//
// mbconv_tile_kernel<T, STAGE>: a block per (image, tile of th x tw output pixels), 256 threads. It walks the
// expanded channels in chunks of ec; per chunk:
//   1. expand the chunk over the tile's input patch ((th - 1) * s + k rows, (tw - 1) * s + k columns) into
//      shared memory: act(x . we + be), zero outside the image (the depthwise conv's padding);
//   2. the depthwise conv of the patch: act(taps . wd + bd), one value per tile pixel and channel, into shared
//      memory (Block), or to d in global memory (ExpandDepthwise);
//   3. (Block, Project) add the chunk's share of the projection, d . wp, to the tile's [pixels][C_out]
//      accumulators in shared memory (each accumulator has one owner thread; Project loads the chunk of d).
// Then y = accumulators + bp [+ x]. The expanded activation never goes to global memory in Block. The tile and
// the chunk are the largest that keep the shared memory within 48 KiB (no opt-in, several blocks per SM).
#include <algorithm>

#include "mbconv.cuh"

namespace pycnn {
namespace cuda {
namespace {
namespace mbconv_detail {

constexpr int kThreads = 256;
constexpr int kTilePixels = 32;  // output pixels per tile before the shared-memory budget shrinks it
constexpr int kChunk = 32;       // expanded channels per chunk before that

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int th, tw;            // output tile (rows, columns)
  int ec;                // expanded channels per chunk
  int64_t tiles_h, tiles_w;
  size_t ex, dd, out;    // shared-memory elements of the expanded patch, the depthwise chunk, the accumulators
  size_t smem_bytes() const { return (ex + dd + out) * elem; }
  size_t elem;           // bytes per shared-memory element (the accumulation type)
};

Plan make_plan(const MbConvGeometry& g, MbConvStage stage, DType dtype) {
  Plan p{};
  p.elem = acc_size(dtype);
  p.tw = static_cast<int>(std::min<int64_t>(g.ow, 8));
  p.th = static_cast<int>(std::min<int64_t>(g.oh, std::max(1, kTilePixels / p.tw)));
  p.ec = static_cast<int>(std::min<int64_t>(g.e, kChunk));
  for (;;) {
    const size_t patch = size_t((p.th - 1) * g.s + g.k) * size_t((p.tw - 1) * g.s + g.k);
    const size_t pixels = size_t(p.th) * size_t(p.tw);
    p.ex = stage == MbConvStage::Project ? 0 : patch * p.ec;
    p.dd = stage == MbConvStage::ExpandDepthwise ? 0 : pixels * p.ec;
    p.out = stage == MbConvStage::ExpandDepthwise ? 0 : pixels * size_t(g.co);
    if (p.smem_bytes() <= kMbConvMaxSmemBytes) break;
    if (p.ec > 8) {
      p.ec /= 2;
    } else if (p.th > 1) {
      p.th = (p.th + 1) / 2;
    } else if (p.tw > 1) {
      p.tw = (p.tw + 1) / 2;
    } else {
      break;  // too large even for one pixel: the launcher refuses it
    }
  }
  p.tiles_h = ceil_div(g.oh, p.th);
  p.tiles_w = ceil_div(g.ow, p.tw);
  return p;
}

template <typename T>
__device__ __forceinline__ acc_t<T> bias_at(const void* b, int64_t i) {
  return b == nullptr ? acc_t<T>(0) : to_acc(static_cast<const T*>(b)[i]);
}

template <typename T, MbConvStage STAGE>
__global__ void __launch_bounds__(kThreads) mbconv_tile_kernel(MbConvParams p, Plan plan) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(acc, smem);
  const MbConvGeometry& g = p.g;
  const int t = threadIdx.x;
  const int64_t tiles = plan.tiles_h * plan.tiles_w;
  const int64_t n = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int64_t oh0 = tile / plan.tiles_w * plan.th, ow0 = tile % plan.tiles_w * plan.tw;
  const int th = static_cast<int>(std::min<int64_t>(plan.th, g.oh - oh0));
  const int tw = static_cast<int>(std::min<int64_t>(plan.tw, g.ow - ow0));
  const int pixels = th * tw;
  const int pw = (tw - 1) * g.s + g.k, patch = ((th - 1) * g.s + g.k) * pw;
  const int64_t ih0 = oh0 * g.s - g.p, iw0 = ow0 * g.s - g.p;
  const int64_t E = g.e, CO = g.co;
  const int ec = plan.ec;
  acc* ex = smem;              // [patch pixel][ec]
  acc* dd = ex + plan.ex;      // [tile pixel][ec]
  acc* out = dd + plan.dd;     // [tile pixel][C_out]
  const T* x = static_cast<const T*>(p.x);
  const T* we = static_cast<const T*>(p.we);
  const T* wd = static_cast<const T*>(p.wd);
  const T* wp = static_cast<const T*>(p.wp);
  const int kk = g.k * g.k;
  T* d = static_cast<T*>(p.d);
  // Global row (pixel) of tile pixel q in an [n, oh, ow, *] tensor: row0 + q / tw * ow + q % tw.
  const int64_t row0 = (n * g.oh + oh0) * g.ow + ow0;

  if (STAGE != MbConvStage::ExpandDepthwise) {
    for (int i = t; i < pixels * CO; i += kThreads) out[i] = acc(0);
  }
  for (int64_t e0 = 0; e0 < E; e0 += ec) {
    const int chunk = static_cast<int>(std::min<int64_t>(ec, E - e0));
    if (STAGE != MbConvStage::Project) {
      for (int i = t; i < patch * chunk; i += kThreads) {
        const int q = i / chunk, j = i % chunk;
        const int64_t ih = ih0 + q / pw, iw = iw0 + q % pw;
        acc v = 0;
        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
          const T* xq = x + ((n * g.h + ih) * g.w + iw) * g.c;
          if (g.expand) {
            const T* w = we + (e0 + j) * g.c;
            acc z = bias_at<T>(p.be, e0 + j);
            for (int64_t c = 0; c < g.c; ++c) z += to_acc(xq[c]) * to_acc(w[c]);
            v = z;
          } else {
            v = to_acc(xq[e0 + j]);
          }
        }
        ex[q * ec + j] = v;
      }
      // The activation in a pass of its own (each thread its own values, no barrier): fewer values live across
      // the activation's division keeps the kernel from spilling. act(0) == 0 for every kernel activation, so the
      // padding stays zero.
      if (g.expand) {
        for (int i = t; i < patch * chunk; i += kThreads) {
          acc* v = ex + i / chunk * ec + i % chunk;
          *v = act_forward<acc>(p.act, *v);
        }
      }
      __syncthreads();
      for (int i = t; i < pixels * chunk; i += kThreads) {
        const int q = i / chunk, j = i % chunk;
        const acc* window = ex + ((q / tw) * g.s * pw + (q % tw) * g.s) * ec + j;
        const T* w = wd + (e0 + j) * kk;
        acc z = bias_at<T>(p.bd, e0 + j);
        for (int ky = 0; ky < g.k; ++ky) {
          for (int kx = 0; kx < g.k; ++kx) z += window[(ky * pw + kx) * ec] * to_acc(w[ky * g.k + kx]);
        }
        const acc v = act_forward<acc>(p.act, z);
        if (STAGE == MbConvStage::ExpandDepthwise) {
          d[(row0 + q / tw * g.ow + q % tw) * E + e0 + j] = from_acc<T>(v);
        } else {
          dd[q * ec + j] = v;
        }
      }
    } else {
      for (int i = t; i < pixels * chunk; i += kThreads) {
        const int q = i / chunk, j = i % chunk;
        dd[q * ec + j] = to_acc(d[(row0 + q / tw * g.ow + q % tw) * E + e0 + j]);
      }
    }
    __syncthreads();  // dd complete (Block, Project); ex read by everyone before the next chunk overwrites it
    if (STAGE != MbConvStage::ExpandDepthwise) {
      for (int i = t; i < pixels * CO; i += kThreads) {
        const int q = static_cast<int>(i / CO);
        const int64_t o = i % CO;
        const T* w = wp + o * E + e0;
        acc z = out[i];
        for (int j = 0; j < chunk; ++j) z += dd[q * ec + j] * to_acc(w[j]);
        out[i] = z;
      }
      __syncthreads();  // dd read by everyone before the next chunk overwrites it
    }
  }
  if (STAGE != MbConvStage::ExpandDepthwise) {
    T* y = static_cast<T*>(p.y);
    for (int i = t; i < pixels * CO; i += kThreads) {
      const int q = static_cast<int>(i / CO);
      const int64_t o = i % CO, row = row0 + q / tw * g.ow + q % tw;
      acc z = out[i] + bias_at<T>(p.bp, o);
      if (g.residual) z += to_acc(x[row * g.c + o]);  // stride 1 and C_out == C: the input pixel is the output's
      y[row * CO + o] = from_acc<T>(z);
    }
  }
}

template <MbConvStage STAGE>
struct Launch {
  const MbConvParams& p;
  const Plan& plan;
  cudaStream_t stream;
  template <typename T>
  cudaError_t run() const {
    const int64_t blocks = p.g.n * plan.tiles_h * plan.tiles_w;
    PYCNN_LAUNCH(static_cast<unsigned>(blocks), kThreads, plan.smem_bytes(), stream, mbconv_tile_kernel<T, STAGE>)(
        p, plan);
    return cudaGetLastError();
  }
};

}  // namespace mbconv_detail
}  // namespace

size_t mbconv_smem_bytes(const MbConvParams& p, MbConvStage stage) {
  return mbconv_detail::make_plan(p.g, stage, p.dtype).smem_bytes();
}

cudaError_t mbconv_forward(const MbConvParams& p, MbConvStage stage, cudaStream_t stream) {
  using namespace mbconv_detail;
  if (p.g.n == 0 || p.g.oh == 0 || p.g.ow == 0 || p.g.co == 0) return cudaSuccess;
  const Plan plan = make_plan(p.g, stage, p.dtype);
  if (plan.smem_bytes() > kMbConvMaxSmemBytes) return cudaErrorInvalidValue;
  if (p.g.n * plan.tiles_h * plan.tiles_w > 0x7fffffff) return cudaErrorInvalidValue;
  switch (stage) {
    case MbConvStage::Block: return dispatch_dtype(p.dtype, Launch<MbConvStage::Block>{p, plan, stream});
    case MbConvStage::ExpandDepthwise:
      return dispatch_dtype(p.dtype, Launch<MbConvStage::ExpandDepthwise>{p, plan, stream});
    case MbConvStage::Project: return dispatch_dtype(p.dtype, Launch<MbConvStage::Project>{p, plan, stream});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace pycnn
