// pycnn::se CUDA kernels (torch-free; compiled by nvcc and, for tests, by the host compiler against
// csrc/emu/). Activations are NHWC: image n is [hw, channels] at offset n * hw * channels.
//
// forward (2 launches):
//   se_pool_kernel          grid (channel-vector blocks, row chunks, images), block (tx, ty): per-chunk channel
//                           sums of x (tx across vectors of VEC channels, ty across rows, tree over ty) ->
//                           workspace partials [n][chunk][channels].
//   se_excite_scale_kernel  grid (row chunks, images), 256 threads: every block sums its image's partials
//                           (pooled), computes fc1 (a warp per reduced channel), act, fc2 + sigmoid (a warp
//                           per channel) into shared memory, then y = post(x * gate [+ residual]) over its rows.
//                           The row chunks are sized so the recomputed FCs stay a small part of the work;
//                           the blocks of chunk 0 write pooled, hidden and gate for the backward.
// backward (2 launches):
//   se_grad_gate_kernel     like se_pool_kernel, summing g * x with g = dy * post'(x * gate [+ residual]).
//   se_backward_kernel      1-D grid of three kinds of blocks (the kind is uniform per block):
//                           [0, chunks * n)          dx = g * gate + dpooled / hw, dresidual = g, for one image
//                                                    and row chunk (dpooled recomputed from the partials);
//                           next ceil(C / kTile)     dw2, db2 for kTile channels (all images);
//                           next ceil(C_r / kTile)   dw1, db1 for kTile reduced channels (all images).
//                           No block depends on another; no atomics: every output element has one writer.
#include <algorithm>

#include "se.cuh"

namespace pycnn {
namespace cuda {
namespace {
namespace se_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 8;  // channels per dw2 block, reduced channels per dw1 block
constexpr int kMaxPartials = 64;

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan : RowVectors {  // vec, cols, block shape tx x ty of the row-sum kernels (tx also splits the
                            // 256 threads of the apply phase)
  int gx;           // blocks across channel vectors (row-sum kernels)
  int partials;     // row chunks of the row-sum kernels
  int64_t chunk1;   // rows per such chunk
  int chunks;       // row chunks of the excite/apply blocks
  int64_t chunk2;   // rows per such chunk
};

Plan make_plan(int64_t n, int64_t hw, int64_t channels, int64_t reduced, DType dtype, int num_sms, bool aligned) {
  Plan p;
  static_cast<RowVectors&>(p) = row_vectors(dtype, channels, aligned, kThreads);
  p.gx = static_cast<int>(ceil_div(p.cols, p.tx));
  const int64_t sms = num_sms > 0 ? num_sms : 1;
  const int64_t images = n > 0 ? n : 1;
  // Row sums: enough blocks to fill the device a few times over, few partials to merge.
  int64_t partials = std::min<int64_t>(ceil_div(4 * sms, images * p.gx), ceil_div(hw, p.ty));
  partials = std::max<int64_t>(1, std::min<int64_t>(partials, kMaxPartials));
  p.chunk1 = ceil_div(hw, partials);
  p.partials = static_cast<int>(ceil_div(hw, p.chunk1));
  // Excite/apply: every block recomputes the FCs of its image (2 * C * C_r multiply-adds), so a block
  // takes at least 2 * C_r rows (C elements each), and no more blocks than fill the device.
  const int64_t min_rows = std::max<int64_t>(2 * reduced, p.ty);
  int64_t chunks = std::min<int64_t>(ceil_div(hw, min_rows), ceil_div(8 * sms, images));
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, 65535));
  p.chunk2 = ceil_div(hw, chunks);
  p.chunks = static_cast<int>(ceil_div(hw, p.chunk2));
  return p;
}

template <typename T, int VEC>
__device__ __forceinline__ void load_acc(const T* base, int64_t vec_index, acc_t<T> (&out)[VEC]) {
  const Vec<T, VEC> v = reinterpret_cast<const Vec<T, VEC>*>(base)[vec_index];
  for (int k = 0; k < VEC; ++k) out[k] = to_acc(v.v[k]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_acc(T* base, int64_t vec_index, const acc_t<T> (&in)[VEC]) {
  Vec<T, VEC> v;
  for (int k = 0; k < VEC; ++k) v.v[k] = from_acc<T>(in[k]);
  reinterpret_cast<Vec<T, VEC>*>(base)[vec_index] = v;
}

// fc weights/biases: element type T, or the accumulation type when `is_acc`.
template <typename T>
__device__ __forceinline__ acc_t<T> load_w(const void* w, int64_t i, bool is_acc) {
  if (is_acc) return static_cast<const acc_t<T>*>(w)[i];
  return to_acc(static_cast<const T*>(w)[i]);
}

template <typename T>
__device__ __forceinline__ acc_t<T> load_bias(const void* b, int64_t i, bool is_acc) {
  return b == nullptr ? acc_t<T>(0) : load_w<T>(b, i, is_acc);
}

template <typename T>
__device__ __forceinline__ void store_w(void* w, int64_t i, acc_t<T> v, bool is_acc) {
  if (is_acc) {
    static_cast<acc_t<T>*>(w)[i] = v;
  } else {
    static_cast<T*>(w)[i] = from_acc<T>(v);
  }
}

template <typename acc>
__device__ __forceinline__ acc warp_sum(acc v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename acc>
__device__ __forceinline__ acc sigmoid(acc z) {
  return acc(1) / (acc(1) + std::exp(-z));
}

// Tree reduction of VEC sums over threadIdx.y (blockDim.y is a power of two); row 0 stores the block's
// sums at out[col * VEC + k].
template <typename acc, int VEC>
__device__ void store_block_sums(acc (&s)[VEC], acc* smem, acc* out, int64_t col, int64_t cols) {
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  for (int k = 0; k < VEC; ++k) smem[t * VEC + k] = s[k];
  __syncthreads();
  for (int stride = blockDim.y / 2; stride > 0; stride >>= 1) {
    if (threadIdx.y < stride) {
      for (int k = 0; k < VEC; ++k) {
        s[k] += smem[(t + stride * blockDim.x) * VEC + k];
        smem[t * VEC + k] = s[k];
      }
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && col < cols) {
    for (int k = 0; k < VEC; ++k) out[col * VEC + k] = s[k];
  }
}

// ------------------------------------------------------------------------------------ forward ----

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) se_pool_kernel(SeForwardParams p, int64_t cols, int64_t chunk) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(acc, smem);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.z;
  acc s[VEC];
  for (int k = 0; k < VEC; ++k) s[k] = 0;
  if (col < cols) {
    const T* x = static_cast<const T*>(p.x) + n * p.hw * p.channels;
    const int64_t first = static_cast<int64_t>(blockIdx.y) * chunk;
    const int64_t last = first + chunk < p.hw ? first + chunk : p.hw;
    for (int64_t row = first + threadIdx.y; row < last; row += blockDim.y) {
      acc v[VEC];
      load_acc<T, VEC>(x, row * cols + col, v);
      for (int k = 0; k < VEC; ++k) s[k] += v[k];
    }
  }
  acc* out = static_cast<acc*>(p.workspace) + (n * gridDim.y + blockIdx.y) * p.channels;
  store_block_sums<acc, VEC>(s, smem, out, col, cols);
}

// Shared memory: pooled [C], act(hidden) [C_r], gate [C].
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    se_excite_scale_kernel(SeForwardParams p, int64_t cols, int tx, int partials, int64_t chunk) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(acc, smem);
  const int64_t C = p.channels, R = p.reduced;
  acc* pooled = smem;
  acc* act1 = smem + C;
  acc* gate = act1 + R;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32;
  const int64_t n = blockIdx.y;
  const bool leader = blockIdx.x == 0;  // writes the saved vectors of its image
  const acc* ws = static_cast<const acc*>(p.workspace) + n * partials * C;
  const acc inv_hw = acc(1) / static_cast<acc>(p.hw);
  for (int64_t c = t; c < C; c += kThreads) {
    acc v = 0;
    for (int g = 0; g < partials; ++g) v += ws[g * C + c];
    pooled[c] = v * inv_hw;
    if (leader) static_cast<acc*>(p.pooled)[n * C + c] = v * inv_hw;
  }
  __syncthreads();
  // fc1 + act: a warp per reduced channel, lanes across the (contiguous) input channels.
  for (int64_t j = warp; j < R; j += kWarps) {
    acc z = 0;
    for (int64_t c = lane; c < C; c += 32) z += load_w<T>(p.w1, j * C + c, p.weights_acc) * pooled[c];
    z = warp_sum(z) + load_bias<T>(p.b1, j, p.weights_acc);
    if (lane == 0) {
      act1[j] = act_forward<acc>(p.act, z);
      if (leader) static_cast<acc*>(p.hidden)[n * R + j] = z;
    }
  }
  __syncthreads();
  // fc2 + sigmoid: a warp per channel.
  for (int64_t c = warp; c < C; c += kWarps) {
    acc z = 0;
    for (int64_t j = lane; j < R; j += 32) z += load_w<T>(p.w2, c * R + j, p.weights_acc) * act1[j];
    z = warp_sum(z) + load_bias<T>(p.b2, c, p.weights_acc);
    if (lane == 0) {
      const acc s = sigmoid(z);
      gate[c] = s;
      if (leader) static_cast<acc*>(p.gate)[n * C + c] = s;
    }
  }
  __syncthreads();
  // y = post(x * gate [+ residual]) over this block's rows: tx threads across channel vectors.
  const int ty = kThreads / tx, lc = t % tx, lr = t / tx;
  const int64_t offset = n * p.hw * C;
  const T* x = static_cast<const T*>(p.x) + offset;
  const T* r = p.residual != nullptr ? static_cast<const T*>(p.residual) + offset : nullptr;
  T* y = static_cast<T*>(p.y) + offset;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t last = first + chunk < p.hw ? first + chunk : p.hw;
  for (int64_t col = lc; col < cols; col += tx) {
    acc s[VEC];
    for (int k = 0; k < VEC; ++k) s[k] = gate[col * VEC + k];
    for (int64_t row = first + lr; row < last; row += ty) {
      const int64_t i = row * cols + col;
      acc v[VEC], rv[VEC];
      load_acc<T, VEC>(x, i, v);
      if (r != nullptr) {
        load_acc<T, VEC>(r, i, rv);
      } else {
        for (int k = 0; k < VEC; ++k) rv[k] = 0;
      }
      for (int k = 0; k < VEC; ++k) v[k] = act_forward<acc>(p.post_act, v[k] * s[k] + rv[k]);
      store_acc<T, VEC>(y, i, v);
    }
  }
}

// ----------------------------------------------------------------------------------- backward ----

// g = dy * post'(x * gate [+ residual]) for one vector of channels of one row; x is returned too.
template <typename T, int VEC>
__device__ __forceinline__ void grad_out(const SeBackwardParams& p, int64_t offset, int64_t i,
                                         const acc_t<T> (&s)[VEC], acc_t<T> (&x)[VEC], acc_t<T> (&g)[VEC]) {
  using acc = acc_t<T>;
  acc dy[VEC], r[VEC];
  load_acc<T, VEC>(static_cast<const T*>(p.x) + offset, i, x);
  load_acc<T, VEC>(static_cast<const T*>(p.dy) + offset, i, dy);
  if (p.residual != nullptr) {
    load_acc<T, VEC>(static_cast<const T*>(p.residual) + offset, i, r);
  } else {
    for (int k = 0; k < VEC; ++k) r[k] = 0;
  }
  for (int k = 0; k < VEC; ++k) g[k] = act_backward<acc>(p.post_act, dy[k], x[k] * s[k] + r[k]);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) se_grad_gate_kernel(SeBackwardParams p, int64_t cols, int64_t chunk) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(acc, smem);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.z;
  acc sums[VEC];
  for (int k = 0; k < VEC; ++k) sums[k] = 0;
  if (col < cols) {
    acc s[VEC];
    for (int k = 0; k < VEC; ++k) s[k] = static_cast<const acc*>(p.gate)[n * p.channels + col * VEC + k];
    const int64_t offset = n * p.hw * p.channels;
    const int64_t first = static_cast<int64_t>(blockIdx.y) * chunk;
    const int64_t last = first + chunk < p.hw ? first + chunk : p.hw;
    for (int64_t row = first + threadIdx.y; row < last; row += blockDim.y) {
      acc x[VEC], g[VEC];
      grad_out<T, VEC>(p, offset, row * cols + col, s, x, g);
      for (int k = 0; k < VEC; ++k) sums[k] += g[k] * x[k];
    }
  }
  acc* out = static_cast<acc*>(p.workspace) + (n * gridDim.y + blockIdx.y) * p.channels;
  store_block_sums<acc, VEC>(sums, smem, out, col, cols);
}

// d loss / d (fc2 output) of image n, channel c: (sum over the partials of g * x) * gate * (1 - gate).
template <typename acc>
__device__ __forceinline__ acc grad_fc2_out(const SeBackwardParams& p, int partials, int64_t n, int64_t c) {
  const acc* ws = static_cast<const acc*>(p.workspace) + n * partials * p.channels;
  acc d = 0;
  for (int g = 0; g < partials; ++g) d += ws[g * p.channels + c];
  const acc s = static_cast<const acc*>(p.gate)[n * p.channels + c];
  return d * s * (acc(1) - s);
}

// Blocks [0, chunks * n): dx and dresidual of one image's row chunk.
// Shared memory: dz2 [C] (then dpooled / hw), gate [C], dz1 [C_r], partial dots [kWarps][32].
template <typename T, int VEC>
__device__ void grad_input_block(const SeBackwardParams& p, acc_t<T>* smem, int64_t n, int64_t chunk_index,
                                 int64_t cols, int tx, int partials, int64_t chunk) {
  using acc = acc_t<T>;
  const int64_t C = p.channels, R = p.reduced;
  acc* dz2 = smem;
  acc* gate = smem + C;
  acc* dz1 = gate + C;
  acc* dots = dz1 + R;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32;
  for (int64_t c = t; c < C; c += kThreads) {
    gate[c] = static_cast<const acc*>(p.gate)[n * C + c];
    dz2[c] = grad_fc2_out<acc>(p, partials, n, c);
  }
  __syncthreads();
  // dz1[j] = act'(hidden[j]) * sum_c w2[c, j] dz2[c]: lanes across 32 consecutive j (coalesced rows of
  // w2), warps across c; the warps' partial dots are summed through shared memory.
  for (int64_t j0 = 0; j0 < R; j0 += 32) {
    const int64_t j = j0 + lane;
    acc d = 0;
    if (j < R) {
      for (int64_t c = warp; c < C; c += kWarps) d += load_w<T>(p.w2, c * R + j, p.weights_acc) * dz2[c];
    }
    dots[warp * 32 + lane] = d;
    __syncthreads();
    if (warp == 0 && j < R) {
      acc sum = 0;
      for (int w = 0; w < kWarps; ++w) sum += dots[w * 32 + lane];
      dz1[j] = act_backward<acc>(p.act, sum, static_cast<const acc*>(p.hidden)[n * R + j]);
    }
    __syncthreads();
  }
  // dpooled / hw = (w1^T dz1) / hw, a thread per channel (coalesced rows of w1); overwrites dz2.
  const acc inv_hw = acc(1) / static_cast<acc>(p.hw);
  for (int64_t c = t; c < C; c += kThreads) {
    acc d = 0;
    for (int64_t j = 0; j < R; ++j) d += load_w<T>(p.w1, j * C + c, p.weights_acc) * dz1[j];
    dz2[c] = d * inv_hw;
  }
  __syncthreads();
  const int ty = kThreads / tx, lc = t % tx, lr = t / tx;
  const int64_t offset = n * p.hw * C;
  T* dx = static_cast<T*>(p.dx) + offset;
  T* dr = p.dresidual != nullptr ? static_cast<T*>(p.dresidual) + offset : nullptr;
  const int64_t first = chunk_index * chunk;
  const int64_t last = first + chunk < p.hw ? first + chunk : p.hw;
  for (int64_t col = lc; col < cols; col += tx) {
    acc s[VEC], dp[VEC];
    for (int k = 0; k < VEC; ++k) {
      s[k] = gate[col * VEC + k];
      dp[k] = dz2[col * VEC + k];
    }
    for (int64_t row = first + lr; row < last; row += ty) {
      const int64_t i = row * cols + col;
      acc x[VEC], g[VEC], d[VEC];
      grad_out<T, VEC>(p, offset, i, s, x, g);
      for (int k = 0; k < VEC; ++k) d[k] = g[k] * s[k] + dp[k];
      store_acc<T, VEC>(dx, i, d);
      if (dr != nullptr) store_acc<T, VEC>(dr, i, g);
    }
  }
}

// One FC layer's weight and bias gradients for the kTile output rows from row0 (of `rows`), from dz [n][kTile]
// (shared memory, written before the caller's last barrier): dw[row, col] = sum_n dz[n][row - row0] * in(n, col)
// for the `cols` inputs, db[row] = sum_n dz[n][row - row0].
template <typename T, typename Input>
__device__ void store_fc_grads(const SeBackwardParams& p, const acc_t<T>* dz, int64_t row0, int64_t rows, int64_t cols,
                               Input in, void* dw, void* db) {
  using acc = acc_t<T>;
  const int t = threadIdx.x;
  for (int64_t col = t; col < cols; col += kThreads) {
    acc d[kTile];
    for (int k = 0; k < kTile; ++k) d[k] = 0;
    for (int64_t n = 0; n < p.n; ++n) {
      const acc v = in(n, col);
      for (int k = 0; k < kTile; ++k) d[k] += dz[n * kTile + k] * v;
    }
    for (int k = 0; k < kTile; ++k) {
      if (row0 + k < rows) store_w<T>(dw, (row0 + k) * cols + col, d[k], p.weights_acc);
    }
  }
  if (t < kTile && row0 + t < rows) {
    acc d = 0;
    for (int64_t n = 0; n < p.n; ++n) d += dz[n * kTile + t];
    store_w<T>(db, row0 + t, d, p.weights_acc);
  }
}

// dw2[c, j] = sum_n dz2[n, c] act(hidden[n, j]), db2[c] = sum_n dz2[n, c] for kTile channels from c0.
// Shared memory: dz2 [n][kTile].
template <typename T>
__device__ void grad_fc2_block(const SeBackwardParams& p, acc_t<T>* smem, int partials, int64_t c0) {
  using acc = acc_t<T>;
  const int64_t C = p.channels, R = p.reduced;
  const int t = threadIdx.x;
  acc* dz2 = smem;
  for (int64_t e = t; e < p.n * kTile; e += kThreads) {
    const int64_t n = e / kTile, c = c0 + e % kTile;
    dz2[e] = c < C ? grad_fc2_out<acc>(p, partials, n, c) : acc(0);
  }
  __syncthreads();
  const acc* hidden = static_cast<const acc*>(p.hidden);
  store_fc_grads<T>(p, dz2, c0, C, R, [&](int64_t n, int64_t j) { return act_forward<acc>(p.act, hidden[n * R + j]); },
                    p.dw2, p.db2);
}

// dw1[j, c] = sum_n dz1[n, j] pooled[n, c], db1[j] = sum_n dz1[n, j] for kTile reduced channels from j0,
// with dz1[n, j] = act'(hidden[n, j]) * sum_c w2[c, j] dz2[n, c].
// Shared memory: dz2 of one image [C], partial dots [kWarps][kTile], dz1 [n][kTile].
template <typename T>
__device__ void grad_fc1_block(const SeBackwardParams& p, acc_t<T>* smem, int partials, int64_t j0) {
  using acc = acc_t<T>;
  const int64_t C = p.channels, R = p.reduced;
  const int t = threadIdx.x, warp = t / 32, lane = t % 32;
  acc* dz2 = smem;
  acc* dots = smem + C;
  acc* dz1 = dots + kWarps * kTile;
  // Thread t: reduced channel j0 + t % kTile (kTile consecutive w2 elements per row), channels
  // c = t / kTile, + kThreads / kTile, ...
  const int k = t % kTile;
  const int64_t j = j0 + k;
  constexpr int kGroups = kThreads / kTile;
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t c = t; c < C; c += kThreads) dz2[c] = grad_fc2_out<acc>(p, partials, n, c);
    __syncthreads();
    acc d = 0;
    if (j < R) {
      for (int64_t c = t / kTile; c < C; c += kGroups) d += load_w<T>(p.w2, c * R + j, p.weights_acc) * dz2[c];
    }
    // Lanes with equal lane % kTile hold the same j: sum them, then across warps.
    for (int offset = kTile; offset < 32; offset <<= 1) d += __shfl_xor_sync(0xffffffffu, d, offset);
    if (lane < kTile) dots[warp * kTile + lane] = d;
    __syncthreads();
    if (t < kTile) {
      acc sum = 0;
      for (int w = 0; w < kWarps; ++w) sum += dots[w * kTile + t];
      const int64_t jt = j0 + t;
      dz1[n * kTile + t] =
          jt < R ? act_backward<acc>(p.act, sum, static_cast<const acc*>(p.hidden)[n * R + jt]) : acc(0);
    }
    // The next image's dz2 is written after this barrier, dots after the next one.
    __syncthreads();
  }
  const acc* pooled = static_cast<const acc*>(p.pooled);
  store_fc_grads<T>(p, dz1, j0, R, C, [&](int64_t n, int64_t c) { return pooled[n * C + c]; }, p.dw1, p.db1);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 8 ? 2 : 3)  // double: 2 blocks per SM, no spills
    se_backward_kernel(SeBackwardParams p, int64_t cols, int tx, int partials, int chunks, int64_t chunk) {
  using acc = acc_t<T>;
  PYCNN_DYNAMIC_SMEM(acc, smem);
  const int64_t b = blockIdx.x;
  const int64_t input_blocks = static_cast<int64_t>(chunks) * p.n;
  const int64_t fc2_blocks = ceil_div(p.channels, kTile);
  if (b < input_blocks) {
    grad_input_block<T, VEC>(p, smem, b / chunks, b % chunks, cols, tx, partials, chunk);
  } else if (b < input_blocks + fc2_blocks) {
    grad_fc2_block<T>(p, smem, partials, (b - input_blocks) * kTile);
  } else {
    grad_fc1_block<T>(p, smem, partials, (b - input_blocks - fc2_blocks) * kTile);
  }
}

// ---------------------------------------------------------------------------------- launchers ----

size_t forward_excite_smem(int64_t channels, int64_t reduced, DType dtype) {
  return acc_size(dtype) * static_cast<size_t>(2 * channels + reduced);
}

size_t backward_smem(int64_t n, int64_t channels, int64_t reduced, DType dtype) {
  const int64_t input = 2 * channels + reduced + kWarps * 32;
  const int64_t fc2 = n * kTile;
  const int64_t fc1 = channels + kWarps * kTile + n * kTile;
  return acc_size(dtype) * static_cast<size_t>(std::max(input, std::max(fc2, fc1)));
}

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > kSeMaxSmemBytes) return cudaErrorInvalidValue;
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

Plan forward_plan(const SeForwardParams& p) {
  return make_plan(p.n, p.hw, p.channels, p.reduced, p.dtype, p.num_sms,
                   aligned16(p.x) && aligned16(p.residual) && aligned16(p.y));
}

Plan backward_plan(const SeBackwardParams& p) {
  return make_plan(p.n, p.hw, p.channels, p.reduced, p.dtype, p.num_sms,
                   aligned16(p.dy) && aligned16(p.x) && aligned16(p.residual) && aligned16(p.dx) &&
                       aligned16(p.dresidual));
}

template <typename T, int VEC>
cudaError_t forward_impl(const SeForwardParams& p, const Plan& plan, cudaStream_t stream) {
  using acc = acc_t<T>;
  PYCNN_LAUNCH(dim3(plan.gx, plan.partials, static_cast<unsigned>(p.n)), dim3(plan.tx, plan.ty),
               sizeof(acc) * VEC * kThreads, stream, se_pool_kernel<T, VEC>)(p, plan.cols, plan.chunk1);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  const size_t smem = forward_excite_smem(p.channels, p.reduced, p.dtype);
  PYCNN_RETURN_IF_ERROR(allow_smem(se_excite_scale_kernel<T, VEC>, smem));
  PYCNN_LAUNCH(dim3(plan.chunks, static_cast<unsigned>(p.n)), kThreads, smem, stream,
               se_excite_scale_kernel<T, VEC>)(p, plan.cols, plan.tx, plan.partials, plan.chunk2);
  return cudaGetLastError();
}

template <typename T, int VEC>
cudaError_t backward_impl(const SeBackwardParams& p, const Plan& plan, cudaStream_t stream) {
  using acc = acc_t<T>;
  PYCNN_LAUNCH(dim3(plan.gx, plan.partials, static_cast<unsigned>(p.n)), dim3(plan.tx, plan.ty),
               sizeof(acc) * VEC * kThreads, stream, se_grad_gate_kernel<T, VEC>)(p, plan.cols, plan.chunk1);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  const size_t smem = backward_smem(p.n, p.channels, p.reduced, p.dtype);
  PYCNN_RETURN_IF_ERROR(allow_smem(se_backward_kernel<T, VEC>, smem));
  const int64_t blocks = static_cast<int64_t>(plan.chunks) * p.n + ceil_div(p.channels, kTile) + ceil_div(p.reduced, kTile);
  PYCNN_LAUNCH(static_cast<unsigned>(blocks), kThreads, smem, stream, se_backward_kernel<T, VEC>)(
      p, plan.cols, plan.tx, plan.partials, plan.chunks, plan.chunk2);
  return cudaGetLastError();
}

struct ForwardLaunch {
  const SeForwardParams& p;
  const Plan& plan;
  cudaStream_t stream;
  template <typename T, int VEC> cudaError_t run() const { return forward_impl<T, VEC>(p, plan, stream); }
};

struct BackwardLaunch {
  const SeBackwardParams& p;
  const Plan& plan;
  cudaStream_t stream;
  template <typename T, int VEC> cudaError_t run() const { return backward_impl<T, VEC>(p, plan, stream); }
};

bool empty(int64_t n, int64_t hw, int64_t channels, int64_t reduced) {
  return n == 0 || hw == 0 || channels == 0 || reduced == 0;
}

}  // namespace se_detail
}  // namespace

size_t se_forward_smem_bytes(const SeForwardParams& p) {
  return se_detail::forward_excite_smem(p.channels, p.reduced, p.dtype);
}

size_t se_backward_smem_bytes(const SeBackwardParams& p) {
  return se_detail::backward_smem(p.n, p.channels, p.reduced, p.dtype);
}

size_t se_forward_workspace_bytes(const SeForwardParams& p) {
  const se_detail::Plan plan = se_detail::forward_plan(p);
  return acc_size(p.dtype) * static_cast<size_t>(p.n * plan.partials * p.channels);
}

size_t se_backward_workspace_bytes(const SeBackwardParams& p) {
  const se_detail::Plan plan = se_detail::backward_plan(p);
  return acc_size(p.dtype) * static_cast<size_t>(p.n * plan.partials * p.channels);
}

cudaError_t se_forward(const SeForwardParams& p, cudaStream_t stream) {
  if (se_detail::empty(p.n, p.hw, p.channels, p.reduced)) return cudaSuccess;
  if (p.n > kSeMaxBatch) return cudaErrorInvalidValue;
  const se_detail::Plan plan = se_detail::forward_plan(p);
  return dispatch_dtype_vec(p.dtype, plan.vec, se_detail::ForwardLaunch{p, plan, stream});
}

cudaError_t se_backward(const SeBackwardParams& p, cudaStream_t stream) {
  if (se_detail::empty(p.n, p.hw, p.channels, p.reduced)) return cudaSuccess;
  if (p.n > kSeMaxBatch) return cudaErrorInvalidValue;
  const se_detail::Plan plan = se_detail::backward_plan(p);
  return dispatch_dtype_vec(p.dtype, plan.vec, se_detail::BackwardLaunch{p, plan, stream});
}

}  // namespace cuda
}  // namespace pycnn
