// pycnn::bn_act CUDA kernels (torch-free; compiled by nvcc and, for tests, by the host compiler
// against csrc/emu/). NHWC tensors are [rows, channels]; a block is (tx, ty) threads: tx across
// vectors of VEC channels (one 128-bit load each when VEC * sizeof(T) == 16), ty across rows.
//
// update_stats (1 launch, one block): the running statistics after a training forward (running_stats.h).
// forward  (3 launches): Welford partial moments per (row-block, channel) in one pass over x ->
//          merge partials, per-channel scale -> y = act((x - mean) * scale + bias [+ residual]).
// backward (3 launches): partial sums of dz and dz * (x - mean) together (dz = dy * act'(z), z recomputed)
//          -> dweight, dbias and per-channel dx coefficients -> dx (and dresidual = dz).
#include "bn_act.cuh"
#include "../running_stats.h"

namespace pycnn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridY = 65535;

struct Plan : RowVectors {  // vec, block shape tx x ty, cols
  int grid_x;      // blocks across channel vectors
  int reduce_rows; // blocks across rows for the reductions (= partial results per channel)
  int apply_rows;  // blocks across rows for the elementwise passes
};


Plan make_plan(int64_t rows, int64_t channels, DType dtype, int num_sms, bool all_aligned) {
  Plan p;
  static_cast<RowVectors&>(p) = row_vectors(dtype, channels, all_aligned, kThreads);
  const int64_t gx = (p.cols + p.tx - 1) / p.tx;
  p.grid_x = static_cast<int>(gx);
  const int64_t row_blocks = (rows + p.ty - 1) / p.ty;
  const int64_t sms = num_sms > 0 ? num_sms : 1;
  // Enough blocks to fill the device a few times over; fewer partials keep the merge cheap.
  const int64_t reduce = std::max<int64_t>(1, std::min<int64_t>(4 * sms / gx, row_blocks));
  const int64_t apply = std::max<int64_t>(1, std::min<int64_t>(16 * sms / gx, row_blocks));
  p.reduce_rows = static_cast<int>(std::min<int64_t>(reduce, 1024));
  p.apply_rows = static_cast<int>(std::min<int64_t>(apply, kMaxGridY));
  return p;
}

// Per-thread state for VEC channels, merged across the rows of a block through shared memory.
template <typename acc, int VEC>
struct Moments {  // Welford count, mean, sum of squared deviations
  acc n, mean[VEC], m2[VEC];
  __device__ void merge(const Moments& o) {
    if (o.n == acc(0)) return;
    const acc total = n + o.n;
    for (int k = 0; k < VEC; ++k) {
      const acc delta = o.mean[k] - mean[k];
      mean[k] += delta * o.n / total;
      m2[k] += o.m2[k] + delta * delta * n * o.n / total;
    }
    n = total;
  }
};

template <typename acc, int VEC>
struct GradSums {  // sum dz, sum dz * (x - mean)
  acc dz[VEC], dz_xc[VEC];
  __device__ void merge(const GradSums& o) {
    for (int k = 0; k < VEC; ++k) {
      dz[k] += o.dz[k];
      dz_xc[k] += o.dz_xc[k];
    }
  }
};

// Tree reduction over threadIdx.y (blockDim.y is a power of two); row 0 ends with the block's result.
template <typename State>
__device__ void reduce_over_rows(State& s, State* smem) {
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  smem[t] = s;
  __syncthreads();
  for (int stride = blockDim.y / 2; stride > 0; stride >>= 1) {
    if (threadIdx.y < stride) {
      s.merge(smem[t + stride * blockDim.x]);
      smem[t] = s;
    }
    __syncthreads();
  }
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

// Workspace layout of the forward pass (accumulation type):
//   partial mean [reduce_rows][channels], partial m2 [reduce_rows][channels], partial count [reduce_rows],
//   scale [channels].
__host__ __device__ __forceinline__ int64_t scale_offset(int64_t channels, int partials) {
  return 2 * static_cast<int64_t>(partials) * channels + partials;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) bn_act_moments_kernel(BnActForwardParams p, int64_t cols) {
  using acc = acc_t<T>;
  using State = Moments<acc, VEC>;
  PYCNN_DYNAMIC_SMEM(State, smem);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  State s;
  s.n = 0;
  for (int k = 0; k < VEC; ++k) s.mean[k] = s.m2[k] = 0;
  if (col < cols) {
    const T* x = static_cast<const T*>(p.x);
    for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < p.rows;
         row += static_cast<int64_t>(gridDim.y) * blockDim.y) {
      acc v[VEC];
      load_acc<T, VEC>(x, row * cols + col, v);
      s.n += acc(1);
      const acc inv = acc(1) / s.n;
      for (int k = 0; k < VEC; ++k) {
        const acc d = v[k] - s.mean[k];
        s.mean[k] += d * inv;
        s.m2[k] += d * (v[k] - s.mean[k]);
      }
    }
  }
  reduce_over_rows(s, smem);
  if (threadIdx.y == 0 && col < cols) {
    acc* ws = static_cast<acc*>(p.workspace);
    const int64_t base = static_cast<int64_t>(blockIdx.y) * p.channels + col * VEC;
    for (int k = 0; k < VEC; ++k) {
      ws[base + k] = s.mean[k];
      ws[static_cast<int64_t>(gridDim.y) * p.channels + base + k] = s.m2[k];
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) ws[2 * static_cast<int64_t>(gridDim.y) * p.channels + blockIdx.y] = s.n;
  }
}

// One thread per channel: merge the partial moments (training), then the scale w * invstd.
// The apply computes (x - mean) * scale + bias: subtracting the mean first keeps digits that
// x * scale + (bias - mean * scale) would cancel when |mean| >> std.
template <typename acc>
__global__ void bn_act_scale_kernel(BnActForwardParams p, int partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.channels) return;
  acc* ws = static_cast<acc*>(p.workspace);
  acc* mean = static_cast<acc*>(p.mean);
  acc* var = static_cast<acc*>(p.var);
  if (p.training) {
    acc n = 0, m = 0, m2 = 0;
    for (int g = 0; g < partials; ++g) {
      const acc nb = ws[2 * static_cast<int64_t>(partials) * p.channels + g];
      if (nb == acc(0)) continue;
      const acc mb = ws[static_cast<int64_t>(g) * p.channels + c];
      const acc m2b = ws[static_cast<int64_t>(partials + g) * p.channels + c];
      const acc total = n + nb, delta = mb - m;
      m += delta * nb / total;
      m2 += m2b + delta * delta * n * nb / total;
      n = total;
    }
    mean[c] = m;
    var[c] = m2 / n;
  }
  const acc invstd = acc(1) / std::sqrt(var[c] + static_cast<acc>(p.eps));
  const acc scale = static_cast<const acc*>(p.weight)[c] * invstd;
  ws[scale_offset(p.channels, partials) + c] = scale;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) bn_act_apply_kernel(BnActForwardParams p, int64_t cols, int partials) {
  using acc = acc_t<T>;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  const acc* scale_of = static_cast<const acc*>(p.workspace) + scale_offset(p.channels, partials);
  acc scale[VEC], mean[VEC], bias[VEC];
  for (int k = 0; k < VEC; ++k) {
    scale[k] = scale_of[col * VEC + k];
    mean[k] = static_cast<const acc*>(p.mean)[col * VEC + k];
    bias[k] = static_cast<const acc*>(p.bias)[col * VEC + k];
  }
  const T* x = static_cast<const T*>(p.x);
  const T* r = static_cast<const T*>(p.residual);
  T* y = static_cast<T*>(p.y);
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < p.rows;
       row += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const int64_t i = row * cols + col;
    acc v[VEC], rv[VEC];
    load_acc<T, VEC>(x, i, v);
    if (r != nullptr) {
      load_acc<T, VEC>(r, i, rv);
    } else {
      for (int k = 0; k < VEC; ++k) rv[k] = 0;
    }
    for (int k = 0; k < VEC; ++k) v[k] = act_forward<acc>(p.act, (v[k] - mean[k]) * scale[k] + bias[k] + rv[k]);
    store_acc<T, VEC>(y, i, v);
  }
}

// Per-channel constants the backward kernels recompute z and dx with.
template <typename acc>
struct ChannelAffine {
  acc mean, invstd, scale, bias;
};

template <typename acc>
__device__ __forceinline__ ChannelAffine<acc> channel_affine(const BnActBackwardParams& p, int64_t c) {
  ChannelAffine<acc> a;
  a.mean = static_cast<const acc*>(p.mean)[c];
  a.invstd = acc(1) / std::sqrt(static_cast<const acc*>(p.var)[c] + static_cast<acc>(p.eps));
  a.scale = static_cast<const acc*>(p.weight)[c] * a.invstd;
  a.bias = static_cast<const acc*>(p.bias)[c];
  return a;
}

// dz = dy * act'(z) for one vector of channels of one row.
template <typename T, int VEC>
__device__ __forceinline__ void grad_z(const BnActBackwardParams& p, int64_t i, const ChannelAffine<acc_t<T>> (&a)[VEC],
                                       acc_t<T> (&x)[VEC], acc_t<T> (&dz)[VEC]) {
  using acc = acc_t<T>;
  acc dy[VEC], r[VEC];
  load_acc<T, VEC>(static_cast<const T*>(p.x), i, x);
  load_acc<T, VEC>(static_cast<const T*>(p.dy), i, dy);
  if (p.residual != nullptr) {
    load_acc<T, VEC>(static_cast<const T*>(p.residual), i, r);
  } else {
    for (int k = 0; k < VEC; ++k) r[k] = 0;
  }
  for (int k = 0; k < VEC; ++k) dz[k] = act_backward<acc>(p.act, dy[k], (x[k] - a[k].mean) * a[k].scale + a[k].bias + r[k]);
}

// Backward workspace (accumulation type): partial sum dz [reduce_rows][channels],
// partial sum dz * (x - mean) [reduce_rows][channels], then dx coefficients k_dz, k_x, k_0 [channels] each.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) bn_act_grad_sums_kernel(BnActBackwardParams p, int64_t cols) {
  using acc = acc_t<T>;
  using State = GradSums<acc, VEC>;
  PYCNN_DYNAMIC_SMEM(State, smem);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  State s;
  for (int k = 0; k < VEC; ++k) s.dz[k] = s.dz_xc[k] = 0;
  if (col < cols) {
    ChannelAffine<acc> a[VEC];
    for (int k = 0; k < VEC; ++k) a[k] = channel_affine<acc>(p, col * VEC + k);
    for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < p.rows;
         row += static_cast<int64_t>(gridDim.y) * blockDim.y) {
      acc x[VEC], dz[VEC];
      grad_z<T, VEC>(p, row * cols + col, a, x, dz);
      for (int k = 0; k < VEC; ++k) {
        s.dz[k] += dz[k];
        s.dz_xc[k] += dz[k] * (x[k] - a[k].mean);
      }
    }
  }
  reduce_over_rows(s, smem);
  if (threadIdx.y == 0 && col < cols) {
    acc* ws = static_cast<acc*>(p.workspace);
    const int64_t base = static_cast<int64_t>(blockIdx.y) * p.channels + col * VEC;
    for (int k = 0; k < VEC; ++k) {
      ws[base + k] = s.dz[k];
      ws[static_cast<int64_t>(gridDim.y) * p.channels + base + k] = s.dz_xc[k];
    }
  }
}

// One thread per channel: dweight, dbias and dx = k_dz * dz + k_x * (x - mean) + k_0.
template <typename acc>
__global__ void bn_act_grad_coefficients_kernel(BnActBackwardParams p, int partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.channels) return;
  acc* ws = static_cast<acc*>(p.workspace);
  acc sum_dz = 0, sum_dz_xc = 0;
  for (int g = 0; g < partials; ++g) {
    sum_dz += ws[static_cast<int64_t>(g) * p.channels + c];
    sum_dz_xc += ws[static_cast<int64_t>(partials + g) * p.channels + c];
  }
  const ChannelAffine<acc> a = channel_affine<acc>(p, c);
  static_cast<acc*>(p.dbias)[c] = sum_dz;
  static_cast<acc*>(p.dweight)[c] = sum_dz_xc * a.invstd;
  const acc inv_rows = acc(1) / static_cast<acc>(p.rows);
  acc* k = ws + 2 * static_cast<int64_t>(partials) * p.channels;
  k[c] = a.scale;
  k[p.channels + c] = p.training ? -a.scale * a.invstd * a.invstd * sum_dz_xc * inv_rows : acc(0);
  k[2 * p.channels + c] = p.training ? -a.scale * sum_dz * inv_rows : acc(0);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) bn_act_grad_input_kernel(BnActBackwardParams p, int64_t cols, int partials) {
  using acc = acc_t<T>;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  const acc* k = static_cast<const acc*>(p.workspace) + 2 * static_cast<int64_t>(partials) * p.channels;
  ChannelAffine<acc> a[VEC];
  acc k_dz[VEC], k_x[VEC], k_0[VEC];
  for (int j = 0; j < VEC; ++j) {
    const int64_t c = col * VEC + j;
    a[j] = channel_affine<acc>(p, c);
    k_dz[j] = k[c];
    k_x[j] = k[p.channels + c];
    k_0[j] = k[2 * p.channels + c];
  }
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < p.rows;
       row += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const int64_t i = row * cols + col;
    acc x[VEC], dz[VEC], dx[VEC];
    grad_z<T, VEC>(p, i, a, x, dz);
    // Only training couples x through the batch statistics: in eval, x (NaN or Inf included) is not read here.
    for (int j = 0; j < VEC; ++j)
      dx[j] = p.training ? k_dz[j] * dz[j] + k_x[j] * (x[j] - a[j].mean) + k_0[j] : k_dz[j] * dz[j];
    store_acc<T, VEC>(static_cast<T*>(p.dx), i, dx);
    if (p.dresidual != nullptr) store_acc<T, VEC>(static_cast<T*>(p.dresidual), i, dz);
  }
}

Plan forward_plan(const BnActForwardParams& p) {
  return make_plan(p.rows, p.channels, p.dtype, p.num_sms, aligned16(p.x) && aligned16(p.residual) && aligned16(p.y));
}

Plan backward_plan(const BnActBackwardParams& p) {
  return make_plan(p.rows, p.channels, p.dtype, p.num_sms,
                   aligned16(p.dy) && aligned16(p.x) && aligned16(p.residual) && aligned16(p.dx) &&
                       aligned16(p.dresidual));
}

template <typename T, int VEC>
cudaError_t forward_impl(const BnActForwardParams& p, const Plan& plan, cudaStream_t stream) {
  using acc = acc_t<T>;
  const dim3 block(plan.tx, plan.ty);
  const int channel_blocks = static_cast<int>((p.channels + kThreads - 1) / kThreads);
  if (p.training) {
    PYCNN_LAUNCH(dim3(plan.grid_x, plan.reduce_rows), block, sizeof(Moments<acc, VEC>) * kThreads, stream,
                 bn_act_moments_kernel<T, VEC>)(p, plan.cols);
    PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  }
  PYCNN_LAUNCH(channel_blocks, kThreads, 0, stream, bn_act_scale_kernel<acc>)(p, plan.reduce_rows);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  PYCNN_LAUNCH(dim3(plan.grid_x, plan.apply_rows), block, 0, stream, bn_act_apply_kernel<T, VEC>)(p, plan.cols, plan.reduce_rows);
  return cudaGetLastError();
}

template <typename T, int VEC>
cudaError_t backward_impl(const BnActBackwardParams& p, const Plan& plan, cudaStream_t stream) {
  using acc = acc_t<T>;
  const dim3 block(plan.tx, plan.ty);
  const int channel_blocks = static_cast<int>((p.channels + kThreads - 1) / kThreads);
  PYCNN_LAUNCH(dim3(plan.grid_x, plan.reduce_rows), block, sizeof(GradSums<acc, VEC>) * kThreads, stream,
               bn_act_grad_sums_kernel<T, VEC>)(p, plan.cols);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  PYCNN_LAUNCH(channel_blocks, kThreads, 0, stream, bn_act_grad_coefficients_kernel<acc>)(p, plan.reduce_rows);
  PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  PYCNN_LAUNCH(dim3(plan.grid_x, plan.apply_rows), block, 0, stream, bn_act_grad_input_kernel<T, VEC>)(p, plan.cols, plan.reduce_rows);
  return cudaGetLastError();
}

struct ForwardLaunch {
  const BnActForwardParams& p;
  const Plan& plan;
  cudaStream_t stream;
  template <typename T, int VEC> cudaError_t run() const { return forward_impl<T, VEC>(p, plan, stream); }
};

struct BackwardLaunch {
  const BnActBackwardParams& p;
  const Plan& plan;
  cudaStream_t stream;
  template <typename T, int VEC> cudaError_t run() const { return backward_impl<T, VEC>(p, plan, stream); }
};

// One block: every thread reads num_batches_tracked before thread 0 increments it.
template <typename R, typename S>
__global__ void __launch_bounds__(kThreads) bn_act_update_stats_kernel(BnActStatsParams p) {
  using O = acc_t<R>;
  const auto round = [](O v) { return to_acc(from_acc<R>(v)); };
  O factor = static_cast<O>(p.momentum);
  if (p.num_batches_tracked) {
    const int64_t batches = *p.num_batches_tracked + 1;
    if (p.cumulative) factor = cumulative_factor<O>(batches, round);
    __syncthreads();
    if (threadIdx.x == 0) *p.num_batches_tracked = batches;
  }
  R* running_mean = static_cast<R*>(p.running_mean);
  R* running_var = static_cast<R*>(p.running_var);
  const S* save_mean = static_cast<const S*>(p.save_mean);
  const S* save_var = static_cast<const S*>(p.save_var);
  const S unbias = unbias_factor<S>(p.count);
  for (int64_t c = threadIdx.x; c < p.channels; c += blockDim.x) {
    O mean = to_acc(running_mean[c]), var = to_acc(running_var[c]);
    running_stats_update(mean, var, save_mean[c], save_var[c], unbias, factor, round);
    running_mean[c] = from_acc<R>(mean);
    running_var[c] = from_acc<R>(var);
  }
}

template <typename R, typename S>
cudaError_t update_stats_impl(const BnActStatsParams& p, cudaStream_t stream) {
  PYCNN_LAUNCH(1, kThreads, 0, stream, bn_act_update_stats_kernel<R, S>)(p);
  return cudaGetLastError();
}

template <typename R>
cudaError_t update_stats_for(const BnActStatsParams& p, cudaStream_t stream) {
  return p.save_dtype == DType::Float64 ? update_stats_impl<R, double>(p, stream)
                                        : update_stats_impl<R, float>(p, stream);
}

}  // namespace

cudaError_t bn_act_update_stats(const BnActStatsParams& p, cudaStream_t stream) {
  switch (p.running_dtype) {
    case DType::Float16: return update_stats_for<__half>(p, stream);
    case DType::BFloat16: return update_stats_for<__nv_bfloat16>(p, stream);
    case DType::Float64: return update_stats_for<double>(p, stream);
    default: return update_stats_for<float>(p, stream);
  }
}

size_t bn_act_forward_workspace_bytes(const BnActForwardParams& p) {
  const Plan plan = forward_plan(p);
  return acc_size(p.dtype) * ((2 * static_cast<size_t>(plan.reduce_rows) + 1) * p.channels + plan.reduce_rows);
}

size_t bn_act_backward_workspace_bytes(const BnActBackwardParams& p) {
  const Plan plan = backward_plan(p);
  return acc_size(p.dtype) * (2 * static_cast<size_t>(plan.reduce_rows) + 3) * p.channels;
}

cudaError_t bn_act_forward(const BnActForwardParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.channels == 0) return cudaSuccess;
  const Plan plan = forward_plan(p);
  return dispatch_dtype_vec(p.dtype, plan.vec, ForwardLaunch{p, plan, stream});
}

cudaError_t bn_act_backward(const BnActBackwardParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.channels == 0) return cudaSuccess;
  const Plan plan = backward_plan(p);
  return dispatch_dtype_vec(p.dtype, plan.vec, BackwardLaunch{p, plan, stream});
}

}  // namespace cuda
}  // namespace pycnn
