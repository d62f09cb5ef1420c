// pycnn::dwconv CUDA kernels (torch-free; compiled by nvcc and, for tests, by the host compiler against
// csrc/emu/). NHWC tensors; a block is (tc, ty) threads: tc across vectors of VEC channels (one 128-bit
// load each when VEC * sizeof(T) == 16), ty across space. A block works on tiles of th x (twt * R)
// outputs of one image: thread (tx, ty) computes R consecutive outputs along W of one row, for its
// channel vector. The input tile with its halo is staged in shared memory (zeros outside the image),
// and so are the block's weights (float).
//
// forward  (1 launch): y = act(conv(x) * scale + bias [+ residual]).
// backward (2 launches):
//   grad_out: per output tile, recompute u = conv(x), z = u * scale + bias [+ r], dz = dy * act'(z);
//             write g = dz * scale (workspace) and dresidual = dz; sum dz * u and dz in registers; stage
//             g in shared memory and add g * x into per-(tap, channel) sums in registers: each thread
//             owns taps (and a slice of the tile's pixels), no atomics in that loop. Blocks loop over
//             tiles; at the end, per-block sums are merged with shared-memory atomics, then one global
//             atomic per (tap, channel) and block.
//   grad_in:  per input tile, stage g (with its halo) and compute dx = sum over taps of g * w, keeping
//             only the taps whose output position falls on the stride grid.
#include <algorithm>

#include "dwconv.cuh"

namespace pycnn {
namespace cuda {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kOutPerThread = 4;           // R: outputs per thread along W
constexpr size_t kSmemBudget = 48 * 1024;  // no opt-in needed
constexpr int kMaxGridY = 65535;

size_t round16(size_t b) { return (b + 15) / 16 * 16; }

// Block shape and tile geometry, chosen on the host; passed to the kernels by value.
struct Tiling {
  int tc, ty;          // block = (tc, ty) threads
  int twt, th;         // ty = th * twt: thread rows and columns of the tile
  int tile_w;          // twt * R outputs per tile row
  int src_h, src_w;    // staged source tile (input for forward/grad_out, g for grad_in)
  int cols;            // channel vectors
  int tiles_h, tiles_w, tiles;  // tiles per image and in all (times n); 32-bit: no 64-bit division in kernels
  int grid_y;          // blocks over tiles (each loops over tiles with stride grid_y)
};

// a / s for a stride s of 1 or 2 and any a: floor (arithmetic shift) and ceil; a is divisible by s when
// a == floor_div_stride(a, s) * s. Shifts rather than 64-bit divisions, which are calls on the GPU.
__device__ __forceinline__ int64_t floor_div_stride(int64_t a, int s) { return a >> (s - 1); }
__device__ __forceinline__ int64_t ceil_div_stride(int64_t a, int s) { return -((-a) >> (s - 1)); }

// Source extent along one dimension for a tile of `out` outputs.
// Forward/grad_out: inputs (out - 1) * s + (k - 1) * d + 1. grad_in (transposed): the g rows that reach
// `out` consecutive inputs: at most ((out - 1) + (k - 1) * d) / s + 1.
int src_extent(bool transposed, int out, int k, int s, int d) {
  return transposed ? ((out - 1) + (k - 1) * d) / s + 1 : (out - 1) * s + (k - 1) * d + 1;
}

// Shared memory of a launch: weights [k*k][tc*VEC] (acc), source tile [src_h*src_w][tc] vectors, and for
// grad_out the g tile [th*tile_w][tc] vectors plus the block sums dweight [k*k][tc*VEC], dscale, dbias.
size_t smem_bytes(const Tiling& t, int k, int vec, DType dtype, bool grad_out) {
  const size_t cv = static_cast<size_t>(t.tc) * vec;
  const size_t kk = static_cast<size_t>(k) * k;
  size_t b = round16(kk * cv * acc_size(dtype));
  b += round16(static_cast<size_t>(t.src_h) * t.src_w * cv * dtype_size(dtype));
  if (grad_out) {
    b += round16(static_cast<size_t>(t.th) * t.tile_w * cv * dtype_size(dtype));
    b += round16((kk + 2) * cv * acc_size(dtype));
  }
  return b;
}

// Picks the block shape and tile: channel-vector threads tc (8 x 16 bytes or 32 scalars: 128 bytes of a
// pixel), then among 256/128/64 threads and tile aspect ratios, the lowest cost per output: staged source
// pixels (halo overhead) plus thread slots (idle threads at the image border), within the smem budget.
Tiling make_tiling(const DwConvGeom& g, int vec, DType dtype, bool transposed, bool grad_out) {
  const int64_t out_h = transposed ? g.h : g.oh, out_w = transposed ? g.w : g.ow;
  const int sh = g.stride_h, sw = g.stride_w;
  Tiling best{};
  double best_cost = -1;
  const int64_t cols = g.c / vec;
  int tc_pref = 1;
  while (tc_pref < (vec > 1 ? 8 : 32) && tc_pref < cols) tc_pref *= 2;
  for (int tc = tc_pref; tc >= 1 && best_cost < 0; tc /= 2) {
    for (int threads = kMaxThreads; threads >= 32 && threads >= tc; threads /= 2) {
      const int ty = threads / tc;
      for (int twt = 1; twt <= ty; twt *= 2) {
        Tiling t{};
        t.tc = tc;
        t.ty = ty;
        t.twt = twt;
        t.th = ty / twt;
        t.tile_w = twt * kOutPerThread;
        t.src_h = src_extent(transposed, t.th, g.k, sh, g.dil_h);
        t.src_w = src_extent(transposed, t.tile_w, g.k, sw, g.dil_w);
        if (smem_bytes(t, g.k, vec, dtype, grad_out) > kSmemBudget) continue;
        t.cols = static_cast<int>(cols);
        t.tiles_h = static_cast<int>((out_h + t.th - 1) / t.th);
        t.tiles_w = static_cast<int>((out_w + t.tile_w - 1) / t.tile_w);
        t.tiles = static_cast<int>(g.n * t.tiles_h * t.tiles_w);  // fits_int32() checked by the launchers
        const double per_tile = static_cast<double>(t.src_h) * t.src_w + static_cast<double>(ty) * kOutPerThread;
        const double cost = per_tile * t.tiles_h * t.tiles_w / static_cast<double>(out_h * out_w) +
                            (threads < kMaxThreads ? 0.05 : 0.0);  // slight preference for full blocks
        if (best_cost < 0 || cost < best_cost) {
          best_cost = cost;
          best = t;
        }
      }
    }
  }
  return best;  // tc = 1 with 32 threads always fits (k <= 7, dilation <= 2)
}

template <typename T, int VEC>
__device__ __forceinline__ void to_acc_vec(const Vec<T, VEC>& v, acc_t<T> (&out)[VEC]) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = to_acc(v.v[k]);
}

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> from_acc_vec(const acc_t<T> (&in)[VEC]) {
  Vec<T, VEC> v;
#pragma unroll
  for (int k = 0; k < VEC; ++k) v.v[k] = from_acc<T>(in[k]);
  return v;
}

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> zero_vec() {
  Vec<T, VEC> v;
#pragma unroll
  for (int k = 0; k < VEC; ++k) v.v[k] = from_acc<T>(acc_t<T>(0));
  return v;
}

// The residual's VEC channels of vector `col` at element offset `off`, in the accumulation type; zeros when
// there is no residual.
template <typename T, int VEC>
__device__ __forceinline__ void load_residual(const T* res, int64_t off, int64_t col, acc_t<T> (&z)[VEC]) {
  if (res != nullptr) {
    to_acc_vec<T, VEC>(reinterpret_cast<const Vec<T, VEC>*>(res + off)[col], z);
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) z[v] = acc_t<T>(0);
  }
}

// The per-channel scale and bias of the thread's VEC channels from col * VEC (zeros past the last channel).
template <typename acc, int VEC>
__device__ __forceinline__ void load_scale_bias(const void* scale, const void* bias, int64_t col, int64_t channels,
                                                acc (&sc)[VEC], acc (&bi)[VEC]) {
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int64_t c = col * VEC + v;
    sc[v] = c < channels ? static_cast<const acc*>(scale)[c] : acc(0);
    bi[v] = c < channels ? static_cast<const acc*>(bias)[c] : acc(0);
  }
}

// Loads the block's weights into smem: ws[(tap * tc + tx) * VEC + v] (zeros past the last channel).
template <typename acc>
__device__ void stage_weights(const acc* __restrict__ weight, acc* ws, int kk, int64_t channels, int64_t c_base,
                              int tc_vec) {
  const int nthreads = blockDim.x * blockDim.y;
  for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < kk * tc_vec; i += nthreads) {
    const int tap = i / tc_vec;
    const int64_t c = c_base + i % tc_vec;
    ws[i] = c < channels ? weight[tap * channels + c] : acc(0);
  }
}

// Stages a [rows x cols_px] window of an NHWC image (origin (r0, q0), may reach outside: zeros) for the
// block's channel vectors: dst[(pixel * tc + cv)].
template <typename T, int VEC>
__device__ void stage_tile(const T* __restrict__ img, int64_t height, int64_t width, int64_t channels, int64_t cols,
                           int64_t col_base, int64_t r0, int64_t q0, int rows, int cols_px, Vec<T, VEC>* dst) {
  const int tc = blockDim.x;
  const int nthreads = blockDim.x * blockDim.y;
  const int total = rows * cols_px * tc;
  for (int i = threadIdx.y * tc + threadIdx.x; i < total; i += nthreads) {
    const int pix = i / tc, cv = i % tc;
    const int64_t r = r0 + pix / cols_px, q = q0 + pix % cols_px;
    const int64_t col = col_base + cv;
    if (r >= 0 && r < height && q >= 0 && q < width && col < cols) {
      dst[i] = reinterpret_cast<const Vec<T, VEC>*>(img + (r * width + q) * channels)[col];
    } else {
      dst[i] = zero_vec<T, VEC>();
    }
  }
}

// u[r][v] = conv(x) for the thread's R outputs (tile-local row lr, first column lc) from the staged tile.
template <typename T, int VEC, int K>
__device__ __forceinline__ void conv_outputs(const Vec<T, VEC>* xs, const acc_t<T>* ws, const DwConvGeom& g,
                                             const Tiling& t, int lr, int lc, acc_t<T> (&u)[kOutPerThread][VEC]) {
  using acc = acc_t<T>;
  const int tx = threadIdx.x, tc = t.tc;
  const int k = K > 0 ? K : g.k;
#pragma unroll
  for (int r = 0; r < kOutPerThread; ++r)
#pragma unroll
    for (int v = 0; v < VEC; ++v) u[r][v] = acc(0);
#pragma unroll 1
  for (int i = 0; i < k; ++i) {
    const int row = lr * g.stride_h + i * g.dil_h;
#pragma unroll
    for (int j = 0; j < k; ++j) {
      acc w[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) w[v] = ws[((i * k + j) * tc + tx) * VEC + v];
#pragma unroll
      for (int r = 0; r < kOutPerThread; ++r) {
        const int col = (lc + r) * g.stride_w + j * g.dil_w;
        acc xv[VEC];
        to_acc_vec<T, VEC>(xs[(row * t.src_w + col) * tc + tx], xv);
#pragma unroll
        for (int v = 0; v < VEC; ++v) u[r][v] += xv[v] * w[v];
      }
    }
  }
}

// Smem carve-up shared by the kernels (see smem_bytes).
template <typename T, int VEC>
struct SmemLayout {
  acc_t<T>* ws;
  Vec<T, VEC>* src;
  Vec<T, VEC>* gs;     // grad_out only
  acc_t<T>* sums;      // grad_out only: [k*k + 2][tc * VEC]
  __device__ SmemLayout(unsigned char* base, const Tiling& t, int kk, bool grad_out) {
    const size_t cv = static_cast<size_t>(t.tc) * VEC;
    size_t off = 0;
    ws = reinterpret_cast<acc_t<T>*>(base + off);
    off += round16_dev(kk * cv * sizeof(acc_t<T>));
    src = reinterpret_cast<Vec<T, VEC>*>(base + off);
    off += round16_dev(static_cast<size_t>(t.src_h) * t.src_w * t.tc * sizeof(Vec<T, VEC>));
    gs = nullptr;
    sums = nullptr;
    if (grad_out) {
      gs = reinterpret_cast<Vec<T, VEC>*>(base + off);
      off += round16_dev(static_cast<size_t>(t.th) * t.tile_w * t.tc * sizeof(Vec<T, VEC>));
      sums = reinterpret_cast<acc_t<T>*>(base + off);
    }
  }
  static __device__ size_t round16_dev(size_t b) { return (b + 15) / 16 * 16; }
};

template <typename T, int VEC, int K>
__global__ void __launch_bounds__(kMaxThreads) dwconv_forward_kernel(DwConvForwardParams p, Tiling t) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(unsigned char, smem);
  const DwConvGeom& g = p.g;
  const int kk = g.k * g.k;
  const SmemLayout<T, VEC> s(smem, t, kk, false);
  const int tx = threadIdx.x;
  const int64_t col_base = static_cast<int64_t>(blockIdx.x) * t.tc;
  const int64_t col = col_base + tx;
  stage_weights<acc>(static_cast<const acc*>(p.weight), s.ws, kk, g.c, col_base * VEC, t.tc * VEC);
  acc sc[VEC], bi[VEC];
  load_scale_bias<acc, VEC>(p.scale, p.bias, col, g.c, sc, bi);
  const int lr = threadIdx.y / t.twt, lc = (threadIdx.y % t.twt) * kOutPerThread;
  const T* x = static_cast<const T*>(p.x);
  const T* res = static_cast<const T*>(p.residual);
  T* y = static_cast<T*>(p.y);
  for (int tile = blockIdx.y; tile < t.tiles; tile += gridDim.y) {
    const int n = tile / (t.tiles_h * t.tiles_w), rem = tile % (t.tiles_h * t.tiles_w);
    const int oh0 = (rem / t.tiles_w) * t.th, ow0 = (rem % t.tiles_w) * t.tile_w;
    __syncthreads();  // the previous tile's reads of the staged tile (and the weights) are done
    stage_tile<T, VEC>(x + n * g.h * g.w * g.c, g.h, g.w, g.c, t.cols, col_base, oh0 * g.stride_h - g.pad_h,
                       ow0 * g.stride_w - g.pad_w, t.src_h, t.src_w, s.src);
    __syncthreads();
    acc u[kOutPerThread][VEC];
    conv_outputs<T, VEC, K>(s.src, s.ws, g, t, lr, lc, u);
    const int64_t oh = oh0 + lr;
    if (col >= t.cols || oh >= g.oh) continue;
#pragma unroll
    for (int r = 0; r < kOutPerThread; ++r) {
      const int64_t ow = ow0 + lc + r;
      if (ow >= g.ow) break;
      const int64_t off = ((n * g.oh + oh) * g.ow + ow) * g.c;
      acc z[VEC];
      load_residual<T, VEC>(res, off, col, z);
#pragma unroll
      for (int v = 0; v < VEC; ++v) z[v] = act_forward<acc>(p.act, u[r][v] * sc[v] + bi[v] + z[v]);
      reinterpret_cast<Vec<T, VEC>*>(y + off)[col] = from_acc_vec<T, VEC>(z);
    }
  }
}

template <typename T, int VEC, int K>
__global__ void __launch_bounds__(kMaxThreads) dwconv_grad_out_kernel(DwConvBackwardParams p, Tiling t) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(unsigned char, smem);
  const DwConvGeom& g = p.g;
  const int k = K > 0 ? K : g.k;
  const int KK = k * k;
  const SmemLayout<T, VEC> s(smem, t, KK, true);
  const int tx = threadIdx.x, tc = t.tc;
  const int64_t col_base = static_cast<int64_t>(blockIdx.x) * tc;
  const int64_t col = col_base + tx;
  stage_weights<acc>(static_cast<const acc*>(p.weight), s.ws, KK, g.c, col_base * VEC, tc * VEC);
  for (int i = threadIdx.y * tc + tx; i < (KK + 2) * tc * VEC; i += tc * t.ty) s.sums[i] = acc(0);
  acc sc[VEC], bi[VEC], dsc[VEC], dbi[VEC];
  load_scale_bias<acc, VEC>(p.scale, p.bias, col, g.c, sc, bi);
#pragma unroll
  for (int v = 0; v < VEC; ++v) dsc[v] = dbi[v] = acc(0);
  const int lr = threadIdx.y / t.twt, lc = (threadIdx.y % t.twt) * kOutPerThread;
  // Weight-gradient units: (tap, pixel group); thread ty owns units ty, ty + ty_count, ...
  const int groups = t.ty >= KK ? t.ty / KK : 1;
  const int units = KK * groups;
  const int tile_px = t.th * t.tile_w;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  const T* res = static_cast<const T*>(p.residual);
  T* dres = static_cast<T*>(p.dresidual);
  T* gout = static_cast<T*>(p.workspace);
  for (int tile = blockIdx.y; tile < t.tiles; tile += gridDim.y) {
    const int n = tile / (t.tiles_h * t.tiles_w), rem = tile % (t.tiles_h * t.tiles_w);
    const int oh0 = (rem / t.tiles_w) * t.th, ow0 = (rem % t.tiles_w) * t.tile_w;
    __syncthreads();  // the previous tile's reads of the staged tiles are done
    stage_tile<T, VEC>(x + n * g.h * g.w * g.c, g.h, g.w, g.c, t.cols, col_base, oh0 * g.stride_h - g.pad_h,
                       ow0 * g.stride_w - g.pad_w, t.src_h, t.src_w, s.src);
    __syncthreads();
    {
      acc u[kOutPerThread][VEC];
      conv_outputs<T, VEC, K>(s.src, s.ws, g, t, lr, lc, u);
      const int64_t oh = oh0 + lr;
#pragma unroll
      for (int r = 0; r < kOutPerThread; ++r) {
        const int64_t ow = ow0 + lc + r;
        Vec<T, VEC> gv = zero_vec<T, VEC>();
        if (col < t.cols && oh < g.oh && ow < g.ow) {
          const int64_t off = ((n * g.oh + oh) * g.ow + ow) * g.c;
          acc d[VEC], z[VEC], dz[VEC], gacc[VEC];
          to_acc_vec<T, VEC>(reinterpret_cast<const Vec<T, VEC>*>(dy + off)[col], d);
          load_residual<T, VEC>(res, off, col, z);
#pragma unroll
          for (int v = 0; v < VEC; ++v) {
            dz[v] = act_backward<acc>(p.act, d[v], u[r][v] * sc[v] + bi[v] + z[v]);
            dsc[v] += dz[v] * u[r][v];
            dbi[v] += dz[v];
            gacc[v] = dz[v] * sc[v];
          }
          gv = from_acc_vec<T, VEC>(gacc);
          reinterpret_cast<Vec<T, VEC>*>(gout + off)[col] = gv;
          if (dres != nullptr) reinterpret_cast<Vec<T, VEC>*>(dres + off)[col] = from_acc_vec<T, VEC>(dz);
        }
        s.gs[(lr * t.tile_w + lc + r) * tc + tx] = gv;  // zeros outside the image: no contribution below
      }
    }
    __syncthreads();
    // dweight: unit (tap, group) sums g * x over the group's pixels of this tile, then adds to the block sums.
    for (int unit = threadIdx.y; unit < units; unit += t.ty) {
      const int tap = unit % KK, group = unit / KK;
      const int i = tap / k, j = tap % k;
      acc dw[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) dw[v] = acc(0);
      for (int px = group; px < tile_px; px += groups) {
        const int pr = px / t.tile_w, pc = px % t.tile_w;
        acc gx[VEC], xv[VEC];
        to_acc_vec<T, VEC>(s.gs[px * tc + tx], gx);
        to_acc_vec<T, VEC>(s.src[((pr * g.stride_h + i * g.dil_h) * t.src_w + pc * g.stride_w + j * g.dil_w) * tc + tx], xv);
#pragma unroll
        for (int v = 0; v < VEC; ++v) dw[v] += gx[v] * xv[v];
      }
#pragma unroll
      for (int v = 0; v < VEC; ++v) atomicAdd(&s.sums[(tap * tc + tx) * VEC + v], dw[v]);
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    atomicAdd(&s.sums[(KK * tc + tx) * VEC + v], dsc[v]);
    atomicAdd(&s.sums[((KK + 1) * tc + tx) * VEC + v], dbi[v]);
  }
  __syncthreads();
  // One global atomic per (tap or dscale/dbias, channel) and block.
  const int cv = tc * VEC;
  for (int i = threadIdx.y * tc + tx; i < (KK + 2) * cv; i += tc * t.ty) {
    const int row = i / cv;
    const int64_t c = col_base * VEC + i % cv;
    if (c >= g.c) continue;
    acc* dst = row < KK ? static_cast<acc*>(p.dweight) + row * g.c : (row == KK ? static_cast<acc*>(p.dscale) : static_cast<acc*>(p.dbias));
    atomicAdd(dst + c, s.sums[i]);
  }
}

template <typename T, int VEC, int K>
__global__ void __launch_bounds__(kMaxThreads) dwconv_grad_in_kernel(DwConvBackwardParams p, Tiling t) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(unsigned char, smem);
  const DwConvGeom& g = p.g;
  const int k = K > 0 ? K : g.k;
  const SmemLayout<T, VEC> s(smem, t, k * k, false);
  const int tx = threadIdx.x, tc = t.tc;
  const int64_t col_base = static_cast<int64_t>(blockIdx.x) * tc;
  const int64_t col = col_base + tx;
  stage_weights<acc>(static_cast<const acc*>(p.weight), s.ws, k * k, g.c, col_base * VEC, tc * VEC);
  const int lr = threadIdx.y / t.twt, lc = (threadIdx.y % t.twt) * kOutPerThread;
  const T* gin = static_cast<const T*>(p.workspace);
  T* dx = static_cast<T*>(p.dx);
  for (int tile = blockIdx.y; tile < t.tiles; tile += gridDim.y) {
    const int n = tile / (t.tiles_h * t.tiles_w), rem = tile % (t.tiles_h * t.tiles_w);
    const int ih0 = (rem / t.tiles_w) * t.th, iw0 = (rem % t.tiles_w) * t.tile_w;
    // First g row/column that reaches the tile: ceil((i0 + pad - (k - 1) * dil) / stride).
    const int64_t gh0 = ceil_div_stride(ih0 + g.pad_h - (k - 1) * g.dil_h, g.stride_h);
    const int64_t gw0 = ceil_div_stride(iw0 + g.pad_w - (k - 1) * g.dil_w, g.stride_w);
    __syncthreads();
    stage_tile<T, VEC>(gin + n * g.oh * g.ow * g.c, g.oh, g.ow, g.c, t.cols, col_base, gh0, gw0, t.src_h, t.src_w,
                       s.src);
    __syncthreads();
    const int64_t ih = ih0 + lr;
    if (col >= t.cols || ih >= g.h) continue;
    acc a[kOutPerThread][VEC];
#pragma unroll
    for (int r = 0; r < kOutPerThread; ++r)
#pragma unroll
      for (int v = 0; v < VEC; ++v) a[r][v] = acc(0);
#pragma unroll 1
    for (int i = 0; i < k; ++i) {
      const int64_t num_h = ih + g.pad_h - i * g.dil_h;  // = oh * stride_h for a contributing tap
      const int64_t oh = floor_div_stride(num_h, g.stride_h);
      if (oh * g.stride_h != num_h) continue;
      const int srow = static_cast<int>(oh - gh0);
      // k = 7 with float4 runs out of registers fully unrolled: keep the tap loop rolled there (and for
      // the run-time k of the scalar and float64 paths).
#pragma unroll(K == 0 || K == 7 ? 1 : 7)
      for (int j = 0; j < k; ++j) {
        acc w[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) w[v] = s.ws[((i * k + j) * tc + tx) * VEC + v];
#pragma unroll
        for (int r = 0; r < kOutPerThread; ++r) {
          const int64_t num_w = iw0 + lc + r + g.pad_w - j * g.dil_w;
          const int64_t ow = floor_div_stride(num_w, g.stride_w);
          if (ow * g.stride_w != num_w) continue;
          const int scol = static_cast<int>(ow - gw0);
          acc gv[VEC];
          to_acc_vec<T, VEC>(s.src[(srow * t.src_w + scol) * tc + tx], gv);
#pragma unroll
          for (int v = 0; v < VEC; ++v) a[r][v] += gv[v] * w[v];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kOutPerThread; ++r) {
      const int64_t iw = iw0 + lc + r;
      if (iw >= g.w) break;
      reinterpret_cast<Vec<T, VEC>*>(dx + ((n * g.h + ih) * g.w + iw) * g.c)[col] = from_acc_vec<T, VEC>(a[r]);
    }
  }
}

int forward_vec(const DwConvForwardParams& p) {
  return vector_width16(p.dtype, p.g.c, aligned16(p.x) && aligned16(p.residual) && aligned16(p.y));
}

int backward_vec(const DwConvBackwardParams& p) {
  return vector_width16(p.dtype, p.g.c,
                        aligned16(p.dy) && aligned16(p.x) && aligned16(p.residual) && aligned16(p.dx) &&
                            aligned16(p.dresidual) && aligned16(p.workspace));
}

// Tile and channel-vector counts are 32-bit in the kernels.
bool fits_int32(const DwConvGeom& g) {
  constexpr int64_t kMax = int64_t(1) << 30;
  return g.n * g.oh * g.ow < kMax && g.n * g.h * g.w < kMax && g.c < kMax;
}

dim3 grid_of(const Tiling& t, int64_t max_y) {
  return dim3(static_cast<unsigned>((t.cols + t.tc - 1) / t.tc),
              static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(t.tiles, max_y))));
}

template <typename T, int VEC, int K>
cudaError_t forward_impl(const DwConvForwardParams& p, cudaStream_t stream) {
  const Tiling t = make_tiling(p.g, VEC, p.dtype, false, false);
  const size_t smem = smem_bytes(t, p.g.k, VEC, p.dtype, false);
  PYCNN_LAUNCH(grid_of(t, kMaxGridY), dim3(t.tc, t.ty), smem, stream, dwconv_forward_kernel<T, VEC, K>)(p, t);
  return cudaGetLastError();
}

template <typename T, int VEC, int K>
cudaError_t backward_impl(const DwConvBackwardParams& p, cudaStream_t stream) {
  const size_t acc_bytes = acc_size(p.dtype);
  PYCNN_RETURN_IF_ERROR(cudaMemsetAsync(p.dweight, 0, acc_bytes * p.g.k * p.g.k * p.g.c, stream));
  PYCNN_RETURN_IF_ERROR(cudaMemsetAsync(p.dscale, 0, acc_bytes * p.g.c, stream));
  PYCNN_RETURN_IF_ERROR(cudaMemsetAsync(p.dbias, 0, acc_bytes * p.g.c, stream));
  const Tiling to = make_tiling(p.g, VEC, p.dtype, false, true);
  // Enough blocks to fill the device a few times; each loops over tiles, keeping its sums on chip.
  const int64_t grid_c = (to.cols + to.tc - 1) / to.tc;
  const int64_t sms = p.num_sms > 0 ? p.num_sms : 1;
  const int64_t max_y = std::max<int64_t>(1, std::min<int64_t>(kMaxGridY, 8 * sms / grid_c));
  PYCNN_LAUNCH(grid_of(to, max_y), dim3(to.tc, to.ty), smem_bytes(to, p.g.k, VEC, p.dtype, true), stream,
               dwconv_grad_out_kernel<T, VEC, K>)(p, to);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  const Tiling ti = make_tiling(p.g, VEC, p.dtype, true, false);
  PYCNN_LAUNCH(grid_of(ti, kMaxGridY), dim3(ti.tc, ti.ty), smem_bytes(ti, p.g.k, VEC, p.dtype, false), stream,
               dwconv_grad_in_kernel<T, VEC, K>)(p, ti);
  return cudaGetLastError();
}

struct ForwardLaunch {
  const DwConvForwardParams& p;
  cudaStream_t stream;
  template <typename T, int VEC, int K> cudaError_t run() const { return forward_impl<T, VEC, K>(p, stream); }
};

struct BackwardLaunch {
  const DwConvBackwardParams& p;
  cudaStream_t stream;
  template <typename T, int VEC, int K> cudaError_t run() const { return backward_impl<T, VEC, K>(p, stream); }
};

template <typename T, int VEC, typename F>
cudaError_t dispatch_k(int k, F f) {
  switch (k) {
    case 1: return f.template run<T, VEC, 1>();
    case 3: return f.template run<T, VEC, 3>();
    case 5: return f.template run<T, VEC, 5>();
    case 7: return f.template run<T, VEC, 7>();
  }
  return cudaErrorInvalidValue;
}

// Calls f.run<T, VEC, K>() with the element type, vector width and kernel size. The kernel size is a
// template argument (K > 0) on the 128-bit float/half/bfloat16 paths; the scalar fallback and float64
// read it at run time (K = 0), which keeps the number of instantiations (and the build time) down.
template <typename F>
cudaError_t dispatch(DType dtype, int vec, int k, F f) {
  switch (dtype) {
    case DType::Float32: return vec == 4 ? dispatch_k<float, 4>(k, f) : f.template run<float, 1, 0>();
    case DType::Float16: return vec == 8 ? dispatch_k<__half, 8>(k, f) : f.template run<__half, 1, 0>();
    case DType::BFloat16:
      return vec == 8 ? dispatch_k<__nv_bfloat16, 8>(k, f) : f.template run<__nv_bfloat16, 1, 0>();
    case DType::Float64: return vec == 2 ? f.template run<double, 2, 0>() : f.template run<double, 1, 0>();
  }
  return cudaErrorInvalidValue;
}

}  // namespace

size_t dwconv_backward_workspace_bytes(const DwConvBackwardParams& p) {
  return round16(static_cast<size_t>(p.g.n * p.g.oh * p.g.ow * p.g.c) * dtype_size(p.dtype));
}

cudaError_t dwconv_forward(const DwConvForwardParams& p, cudaStream_t stream) {
  if (p.g.n == 0 || p.g.c == 0 || p.g.oh <= 0 || p.g.ow <= 0) return cudaSuccess;
  if (!fits_int32(p.g)) return cudaErrorInvalidValue;
  return dispatch(p.dtype, forward_vec(p), p.g.k, ForwardLaunch{p, stream});
}

cudaError_t dwconv_backward(const DwConvBackwardParams& p, cudaStream_t stream) {
  if (p.g.n == 0 || p.g.c == 0 || p.g.oh <= 0 || p.g.ow <= 0) return cudaSuccess;
  if (!fits_int32(p.g)) return cudaErrorInvalidValue;
  return dispatch(p.dtype, backward_vec(p), p.g.k, BackwardLaunch{p, stream});
}

}  // namespace cuda
}  // namespace pycnn
