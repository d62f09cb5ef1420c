// pycnn::gconv CUDA kernels (torch-free; compiled by nvcc and, for tests, by the host compiler against
// csrc/emu/). All tensors NHWC. Per group g the convolution is a GEMM with M = output pixels,
// N = cog output channels, K = k*k*cg (tap-major, then input channel), on the weight layouts of gconv.cuh.
//
// forward, two kernels selected per shape (gconv_forward_uses_tensor_cores):
//   SIMT    one thread per (output pixel, V consecutive output channels of one group): float32, and any
//           dtype when a group is narrow (cg or cog <= 8) or the device has no bf16 tensor cores.
//   wmma    implicit GEMM on tensor cores (nvcuda::wmma m16n16k16, float16/bfloat16 in, float32
//           accumulate): a block computes 64 pixels x BN (16/32/64) channels of one group; per K step
//           the A tile (64 pixels x 32 input channels of one tap, zero outside the image) and the B tile
//           (32 x BN weights) are staged in shared memory; 4 warps each own 16 rows x BN columns.
//   Both apply the epilogue (scale, bias, residual, activation; the raw conv saved for backward) from
//   float accumulators.
// backward (SIMT, float accumulation):
//   (dgrad runs the wmma kernel above in its input-gradient mode for float16/bfloat16, wide groups)
//   epilogue  dz = dy * act'(z) (z recomputed from the saved conv), dconv = dz * scale, dresidual = dz,
//             and per-(row block, channel) partial sums of dz * conv and dz -> finalize: dscale, dbias.
//             Skipped, dconv = dy, when there is no epilogue at all.
//   dgrad     one thread per (input pixel, V input channels): sum over taps and the group's cog channels.
//   wgrad     one thread per (group, tap, input channel, V output channels), a slice of the output rows
//             per blockIdx.y; partial sums per slice in the workspace -> finalize (no atomics).
#include <mma.h>

#include <initializer_list>
#include <type_traits>

#include "gconv.cuh"

namespace pycnn {
namespace cuda {
namespace {
namespace gconv_impl {

constexpr int kThreads = 256;

size_t elem_size(DType t) { return t == DType::Float32 ? 4 : (t == DType::Float64 ? 8 : 2); }

bool aligned_to(const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The widest vector (elements, at most 16 bytes) that divides `channels` with every pointer aligned to it.
int vector_width(DType dtype, int64_t channels, std::initializer_list<const void*> ptrs) {
  const int es = static_cast<int>(elem_size(dtype));
  for (int v = 16 / es; v > 1; v /= 2) {
    if (channels % v != 0) continue;
    bool ok = true;
    for (const void* p : ptrs) ok = ok && aligned_to(p, static_cast<size_t>(v) * es);
    if (ok) return v;
  }
  return 1;
}

// The shape in 32-bit ints for index arithmetic in the kernels (64-bit division is a slow subroutine call
// whose calling convention spills registers); the launchers require every tensor to have < 2^31 elements,
// and offsets into tensors are formed in 64 bits.
struct Dims {
  int n, h, w, c_in, oh, ow, c_out, groups, cg, cog, k, sh, sw, ph, pw;
};

__host__ __device__ __forceinline__ Dims dims_of(const GConvShape& s) {
  return Dims{static_cast<int>(s.n),  static_cast<int>(s.h),      static_cast<int>(s.w),  static_cast<int>(s.c_in),
              static_cast<int>(s.oh), static_cast<int>(s.ow),     static_cast<int>(s.c_out),
              static_cast<int>(s.groups), static_cast<int>(s.cg), static_cast<int>(s.cog), static_cast<int>(s.k),
              static_cast<int>(s.sh), static_cast<int>(s.sw),     static_cast<int>(s.ph), static_cast<int>(s.pw)};
}

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, acc_t<T> (&out)[V]) {
  const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = to_acc(v.v[k]);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const acc_t<T> (&in)[V]) {
  Vec<T, V> v;
#pragma unroll
  for (int k = 0; k < V; ++k) v.v[k] = from_acc<T>(in[k]);
  *reinterpret_cast<Vec<T, V>*>(p) = v;
}

// y = act(conv * scale + bias + residual) for V channels starting at channel o of output row `pix`.
template <typename T, int V>
__device__ __forceinline__ void forward_epilogue(const GConvForwardParams& p, int64_t pix, int64_t o,
                                                 float (&conv)[V]) {
  const int64_t off = pix * p.s.c_out + o;
  if (p.saved != nullptr) store_vec<T, V>(static_cast<T*>(p.saved) + off, conv);
  float r[V];
  if (p.residual != nullptr) {
    load_vec<T, V>(static_cast<const T*>(p.residual) + off, r);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) r[k] = 0.f;
  }
  const float* scale = static_cast<const float*>(p.scale);
  const float* bias = static_cast<const float*>(p.bias);
#pragma unroll
  for (int k = 0; k < V; ++k) {
    float z = scale != nullptr ? conv[k] * scale[o + k] : conv[k];
    if (bias != nullptr) z += bias[o + k];
    r[k] = act_forward<float>(p.act, z + r[k]);
  }
  store_vec<T, V>(static_cast<T*>(p.y) + off, r);
}

// ------------------------------------------------------------------------------ SIMT forward ----

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) gconv_forward_simt_kernel(GConvForwardParams p) {
  const Dims d = dims_of(p.s);
  const unsigned cols = d.c_out / V;
  const unsigned total = static_cast<unsigned>(d.n * d.oh * d.ow) * cols;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const int taps = d.k * d.k;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned col = idx % cols, pix = idx / cols;
    const int o = static_cast<int>(col) * V, g = o / d.cog, co = o - g * d.cog;
    const int ow = static_cast<int>(pix % d.ow), t = static_cast<int>(pix / d.ow), oh = t % d.oh, n = t / d.oh;
    float a[V];
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] = 0.f;
    for (int kh = 0; kh < d.k; ++kh) {
      const int ih = oh * d.sh - d.ph + kh;
      if (ih < 0 || ih >= d.h) continue;
      for (int kw = 0; kw < d.k; ++kw) {
        const int iw = ow * d.sw - d.pw + kw;
        if (iw < 0 || iw >= d.w) continue;
        const T* xp = x + (static_cast<int64_t>(n * d.h + ih) * d.w + iw) * d.c_in + g * d.cg;
        const T* wp = w + static_cast<int64_t>((g * taps + kh * d.k + kw) * d.cg) * d.cog + co;
        for (int ci = 0; ci < d.cg; ++ci, wp += d.cog) {
          const float xv = to_acc(xp[ci]);
          float wv[V];
          load_vec<T, V>(wp, wv);
#pragma unroll
          for (int k = 0; k < V; ++k) a[k] += xv * wv[k];
        }
      }
    }
    forward_epilogue<T, V>(p, pix, o, a);
  }
}

// ------------------------------------------------------------------------- tensor-core forward ----

constexpr int kTcThreads = 128;  // 4 warps
constexpr int kBM = 64;          // output pixels per block
constexpr int kBK = 32;          // K (input channels of one tap) per shared-memory stage
constexpr int kLdA = kBK + 8;    // padded leading dimensions (elements); 16-byte multiples as wmma needs

// 16 bytes moved as one vector (8 float16/bfloat16 elements; all-zero bits are +0 in both).
struct alignas(16) Raw16 {
  unsigned int a, b, c, d;
};

template <int BN> struct TcTile {
  static constexpr int ldb = BN + 8;
  static constexpr int ldc = BN + 4;
  static constexpr int a_bytes = kBM * kLdA * 2;
  static constexpr int b_bytes = kBK * ldb * 2;
  static constexpr int c_bytes = kBM * ldc * 4;
  static constexpr int bytes = a_bytes + b_bytes + c_bytes;  // each part a multiple of 32 bytes
};

// The implicit GEMM of one tensor-core launch, per group g: C[M pixels][N] = sum over taps of
// A_tap[M][K] * B[g][tap][K][N], A_tap gathered from an NHWC tensor (zero where the tap falls outside).
//   forward: M = output pixels, A = x (K = cg), B = wk (N = cog), epilogue into y (and saved)
//   dgrad:   M = input pixels, A = dconv at the output pixel the tap maps to (K = cog), B = wt (N = cg),
//            stored into dx.
struct TcGemm {
  const void* a;   // NHWC source
  const void* b;   // [groups, taps, kdim, ndim]
  void* out;       // dgrad: dx; forward: unused (the epilogue writes p.y / p.saved)
  int a_h, a_w, a_c;  // source spatial size and channels per pixel
  int m_h, m_w;       // spatial size of the M pixels
  int out_c;          // channels per pixel of the result
  int kdim, ndim;     // per group and tap
};

// grid: x = ceil(M / 64) pixel tiles, y = groups * ceil(ndim / BN) channel tiles. VA / VB: the A / B tiles
// are loaded as 16-byte vectors (kdim % 8 == 0 and a_c % 8 == 0, resp. ndim % 8 == 0, aligned pointers).
// Only p.s (and, forward, the epilogue fields of p) are read from p.
template <typename T, int BN, bool VA, bool VB, bool DGRAD>
__global__ void __launch_bounds__(kTcThreads) gconv_wmma_kernel(GConvForwardParams p, TcGemm q) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using Tile = TcTile<BN>;
  __shared__ __align__(32) unsigned char smem[Tile::bytes];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = reinterpret_cast<T*>(smem + Tile::a_bytes);
  float* Cs = reinterpret_cast<float*>(smem + Tile::a_bytes + Tile::b_bytes);

  const Dims s = dims_of(p.s);
  const int rows = s.n * q.m_h * q.m_w;
  const int taps = s.k * s.k;
  const int n_tiles = (q.ndim + BN - 1) / BN;
  const int g = blockIdx.y / n_tiles;
  const int co0 = (blockIdx.y % n_tiles) * BN;
  const int m0 = blockIdx.x * kBM;
  const T* x = static_cast<const T*>(q.a);
  const T* w = static_cast<const T*>(q.b);
  const int tid = threadIdx.x, warp = tid / 32;
  const T zero = from_acc<T>(0.f);

  // A loads: thread tid fills 16 consecutive k of row tid / 2; its pixel is decoded once.
  const int a_row = tid / 2, a_k = (tid % 2) * 16;
  const int a_pix = m0 + a_row;
  const bool a_in = a_pix < rows;
  const int a_mw = a_pix % q.m_w, a_t = a_pix / q.m_w, a_mh = a_t % q.m_h, a_n = a_t / q.m_h;
  // B loads: thread tid fills BN / 4 consecutive columns of row tid / 4.
  constexpr int kBCols = BN / 4;
  const int b_row = tid / 4, b_col = (tid % 4) * kBCols;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[BN / 16];
#pragma unroll
  for (int j = 0; j < BN / 16; ++j) wmma::fill_fragment(acc[j], 0.f);

  for (int tap = 0; tap < taps; ++tap) {
    const int kh = tap / s.k, kw = tap % s.k;
    int ih, iw;
    bool a_valid;
    if constexpr (DGRAD) {  // the output pixel this input pixel feeds through tap (kh, kw), if any
      const int th = a_mh + s.ph - kh, tw = a_mw + s.pw - kw;
      a_valid = a_in && th >= 0 && tw >= 0 && th % s.sh == 0 && tw % s.sw == 0;
      ih = th / s.sh;
      iw = tw / s.sw;
      a_valid = a_valid && ih < q.a_h && iw < q.a_w;
    } else {
      ih = a_mh * s.sh - s.ph + kh;
      iw = a_mw * s.sw - s.pw + kw;
      a_valid = a_in && ih >= 0 && ih < q.a_h && iw >= 0 && iw < q.a_w;
    }
    const T* xp = a_valid ? x + (static_cast<int64_t>(a_n * q.a_h + ih) * q.a_w + iw) * q.a_c + g * q.kdim : x;
    const T* wp = w + static_cast<int64_t>(g * taps + tap) * q.kdim * q.ndim;
    for (int ci0 = 0; ci0 < q.kdim; ci0 += kBK) {
      // Stage A: 64 pixels x 32 channels of this tap (zeros outside the image and past kdim).
      T* arow = As + a_row * kLdA + a_k;
      if constexpr (VA) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int ci = ci0 + a_k + 8 * h;
          Raw16 v = {0u, 0u, 0u, 0u};  // 8 zeros in float16 and bfloat16
          if (a_valid && ci < q.kdim) v = *reinterpret_cast<const Raw16*>(xp + ci);
          *reinterpret_cast<Raw16*>(arow + 8 * h) = v;
        }
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          const int ci = ci0 + a_k + e;
          arow[e] = (a_valid && ci < q.kdim) ? xp[ci] : zero;
        }
      }
      // Stage B: 32 rows of K x BN columns (zeros past kdim / ndim).
      {
        const int ci = ci0 + b_row;
        T* brow = Bs + b_row * Tile::ldb + b_col;
        const T* src = wp + static_cast<int64_t>(ci) * q.ndim + co0 + b_col;
        if constexpr (VB && kBCols % 8 == 0) {
#pragma unroll
          for (int h = 0; h < kBCols / 8; ++h) {
            Raw16 v = {0u, 0u, 0u, 0u};
            if (ci < q.kdim && co0 + b_col + 8 * h < q.ndim) v = *reinterpret_cast<const Raw16*>(src + 8 * h);
            *reinterpret_cast<Raw16*>(brow + 8 * h) = v;
          }
        } else {
#pragma unroll
          for (int e = 0; e < kBCols; ++e)
            brow[e] = (ci < q.kdim && co0 + b_col + e < q.ndim) ? src[e] : zero;
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag;
        wmma::load_matrix_sync(a_frag, As + warp * 16 * kLdA + kk, kLdA);
#pragma unroll
        for (int j = 0; j < BN / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag;
          wmma::load_matrix_sync(b_frag, Bs + kk * Tile::ldb + j * 16, Tile::ldb);
          wmma::mma_sync(acc[j], a_frag, b_frag, acc[j]);
        }
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int j = 0; j < BN / 16; ++j)
    wmma::store_matrix_sync(Cs + warp * 16 * Tile::ldc + j * 16, acc[j], Tile::ldc, wmma::mem_row_major);
  __syncthreads();
  // Epilogue: consecutive threads take consecutive groups of 4 channels of a pixel.
  constexpr int kGroupsPerRow = BN / 4;
#pragma unroll 1
  for (int e = tid; e < kBM * kGroupsPerRow; e += kTcThreads) {
    const int m = e / kGroupsPerRow, c4 = (e % kGroupsPerRow) * 4;
    const int pix = m0 + m;
    if (pix >= rows) continue;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int co = co0 + c4 + r;
      if (co >= q.ndim) continue;
      const float v = Cs[m * Tile::ldc + c4 + r];
      if constexpr (DGRAD) {
        static_cast<T*>(q.out)[static_cast<int64_t>(pix) * q.out_c + g * q.ndim + co] = from_acc<T>(v);
      } else {
        float vv[1] = {v};
        forward_epilogue<T, 1>(p, pix, g * q.ndim + co, vv);
      }
    }
  }
#else
  __trap();  // PTX for an architecture below 8.0 run on a tensor-core GPU: fail the launch, never write garbage
#endif
}

// ------------------------------------------------------------------------------- backward -------

// Per-channel partial sums of dz * conv and dz over a slice of rows (blockIdx.y), block (32, 8):
// threadIdx.x across channels, threadIdx.y across rows; also writes dconv and dresidual.
// partial: [gridDim.y][2][c_out].
template <typename T>
__global__ void __launch_bounds__(kThreads) gconv_grad_epilogue_kernel(GConvBackwardParams p, T* dconv,
                                                                       float* partial) {
  __shared__ float red[2][8][33];
  const GConvShape& s = p.s;
  const int64_t rows = s.n * s.oh * s.ow;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const float* scale = static_cast<const float*>(p.scale);
  const float* bias = static_cast<const float*>(p.bias);
  const T* dy = static_cast<const T*>(p.dy);
  const T* saved = static_cast<const T*>(p.saved);
  const T* res = static_cast<const T*>(p.residual);
  T* dres = static_cast<T*>(p.dresidual);
  float sum_dz_conv = 0.f, sum_dz = 0.f;
  if (c < s.c_out) {
    const float sc = scale != nullptr ? scale[c] : 1.f;
    const float b = bias != nullptr ? bias[c] : 0.f;
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * 8 + threadIdx.y; r < rows;
         r += static_cast<int64_t>(gridDim.y) * 8) {
      const int64_t i = r * s.c_out + c;
      float dz = to_acc(dy[i]);
      if (saved != nullptr) {
        const float conv = to_acc(saved[i]);
        float z = conv * sc + b;
        if (res != nullptr) z += to_acc(res[i]);
        dz = act_backward<float>(p.act, dz, z);
        sum_dz_conv += dz * conv;
      }
      sum_dz += dz;
      if (dres != nullptr) dres[i] = from_acc<T>(dz);
      dconv[i] = from_acc<T>(dz * sc);
    }
  }
  red[0][threadIdx.y][threadIdx.x] = sum_dz_conv;
  red[1][threadIdx.y][threadIdx.x] = sum_dz;
  __syncthreads();
  if (threadIdx.y == 0 && c < s.c_out) {
    float a = 0.f, b = 0.f;
    for (int k = 0; k < 8; ++k) {
      a += red[0][k][threadIdx.x];
      b += red[1][k][threadIdx.x];
    }
    partial[(static_cast<int64_t>(blockIdx.y) * 2) * s.c_out + c] = a;
    partial[(static_cast<int64_t>(blockIdx.y) * 2 + 1) * s.c_out + c] = b;
  }
}

// out[i] = sum over `parts` slices of partial[slice * stride + i] for i < count; also used for dscale
// (i < c_out) and dbias (offset c_out) with stride 2 * c_out.
__global__ void __launch_bounds__(kThreads) gconv_sum_partials_kernel(const float* partial, int parts,
                                                                      int64_t stride, int64_t count, float* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float a = 0.f;
    for (int k = 0; k < parts; ++k) a += partial[k * stride + i];
    out[i] = a;
  }
}

// dx for V consecutive input channels of one input pixel per thread.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) gconv_dgrad_simt_kernel(GConvBackwardParams p, const T* dconv) {
  const Dims d = dims_of(p.s);
  const unsigned cols = d.c_in / V;
  const unsigned total = static_cast<unsigned>(d.n * d.h * d.w) * cols;
  const T* wt = static_cast<const T*>(p.wt);
  const int taps = d.k * d.k;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const unsigned col = idx % cols, pix = idx / cols;
    const int c = static_cast<int>(col) * V, g = c / d.cg, ci = c - g * d.cg;
    const int iw = static_cast<int>(pix % d.w), t = static_cast<int>(pix / d.w), ih = t % d.h, n = t / d.h;
    float a[V];
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] = 0.f;
    for (int kh = 0; kh < d.k; ++kh) {
      const int th = ih + d.ph - kh;
      if (th < 0 || th % d.sh != 0 || th / d.sh >= d.oh) continue;
      const int oh = th / d.sh;
      for (int kw = 0; kw < d.k; ++kw) {
        const int tw = iw + d.pw - kw;
        if (tw < 0 || tw % d.sw != 0 || tw / d.sw >= d.ow) continue;
        const int ow = tw / d.sw;
        const T* dp = dconv + (static_cast<int64_t>(n * d.oh + oh) * d.ow + ow) * d.c_out + g * d.cog;
        const T* wp = wt + static_cast<int64_t>((g * taps + kh * d.k + kw) * d.cog) * d.cg + ci;
        for (int co = 0; co < d.cog; ++co, wp += d.cg) {
          const float dv = to_acc(dp[co]);
          float wv[V];
          load_vec<T, V>(wp, wv);
#pragma unroll
          for (int k = 0; k < V; ++k) a[k] += dv * wv[k];
        }
      }
    }
    store_vec<T, V>(static_cast<T*>(p.dx) + static_cast<int64_t>(pix) * d.c_in + c, a);
  }
}

// Partial dw over output rows [blockIdx.y * rows_per_slice, ...) for V consecutive output channels of one
// (group, tap, input channel) per thread. partial: [gridDim.y][groups * k*k * cg * cog] (wk layout).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) gconv_wgrad_simt_kernel(GConvBackwardParams p, const T* dconv,
                                                                    float* partial, int rows_per_slice) {
  const Dims d = dims_of(p.s);
  const int taps = d.k * d.k;
  const int vcols = d.cog / V;
  const int total = d.groups * taps * d.cg * vcols;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int co = (idx % vcols) * V;
  int rest = idx / vcols;
  const int ci = rest % d.cg;
  rest /= d.cg;
  const int tap = rest % taps, g = rest / taps;
  const int kh = tap / d.k, kw = tap % d.k;
  const T* x = static_cast<const T*>(p.x);
  // Output columns whose input column is inside the image for this tap.
  int ow_lo = 0;
  while (ow_lo < d.ow && ow_lo * d.sw - d.pw + kw < 0) ++ow_lo;
  int ow_hi = d.ow;
  while (ow_hi > ow_lo && (ow_hi - 1) * d.sw - d.pw + kw >= d.w) --ow_hi;
  const int64_t x_step = static_cast<int64_t>(d.sw) * d.c_in;
  float a[V];
#pragma unroll
  for (int k = 0; k < V; ++k) a[k] = 0.f;
  const int r0 = blockIdx.y * rows_per_slice;
  const int r1 = r0 + rows_per_slice < d.n * d.oh ? r0 + rows_per_slice : d.n * d.oh;
  for (int r = r0; r < r1; ++r) {
    const int oh = r % d.oh, n = r / d.oh;
    const int ih = oh * d.sh - d.ph + kh;
    if (ih < 0 || ih >= d.h) continue;
    const T* xp = x + (static_cast<int64_t>(n * d.h + ih) * d.w + ow_lo * d.sw - d.pw + kw) * d.c_in + g * d.cg + ci;
    const T* dp = dconv + (static_cast<int64_t>(r) * d.ow + ow_lo) * d.c_out + g * d.cog + co;
    for (int ow = ow_lo; ow < ow_hi; ++ow, xp += x_step, dp += d.c_out) {
      const float xv = to_acc(*xp);
      float dv[V];
      load_vec<T, V>(dp, dv);
#pragma unroll
      for (int k = 0; k < V; ++k) a[k] += xv * dv[k];
    }
  }
  float* out = partial + static_cast<int64_t>(blockIdx.y) * total * V + static_cast<int64_t>((g * taps + tap) * d.cg + ci) * d.cog + co;
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = a[k];
}

// ---------------------------------------------------------------------------------- planning ----

bool tc_capable(DType dtype, int cc_major) {
  return (dtype == DType::Float16 || dtype == DType::BFloat16) && cc_major >= 8;
}

// The forward kernel, or the backward's input-gradient kernel (the same GEMM shape, transposed).
bool use_tensor_cores(const GConvConfig& p) {
  if (!tc_capable(p.dtype, p.cc_major) || p.path == GConvPath::Simt) return false;
  if (p.path == GConvPath::TensorCore) return true;
  return p.s.cg > 8 && p.s.cog > 8;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int grid_for(int64_t items, int num_sms) {
  const int64_t blocks = ceil_div(items, kThreads);
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 1) * 32;
  return static_cast<int>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

struct BackwardPlan {
  bool epilogue;        // run the epilogue-gradient kernel (else dconv = dy)
  int epi_slices;       // row slices of the epilogue reduction
  int wgrad_v;          // channel vector of the wgrad kernel
  int64_t wgrad_blocks; // blocks across (group, tap, ci, co vector)
  int wgrad_slices;     // row slices of the wgrad reduction
  int64_t rows_per_slice;
  size_t dconv_offset, epi_offset, wgrad_offset, bytes;  // workspace layout
};

size_t align256(size_t v) { return (v + 255) / 256 * 256; }

BackwardPlan backward_plan(const GConvBackwardParams& p) {
  const GConvShape& s = p.s;
  BackwardPlan b{};
  const int64_t rows = s.n * s.oh * s.ow;
  b.epilogue = p.scale != nullptr || p.bias != nullptr || p.residual != nullptr || p.dresidual != nullptr ||
               p.act != Act::None || p.dbias != nullptr || p.dscale != nullptr;
  const int64_t sms = p.num_sms > 0 ? p.num_sms : 1;
  const int64_t cblocks = ceil_div(s.c_out, 32);
  int64_t epi = ceil_div(4 * sms, cblocks);
  epi = epi < 1 ? 1 : epi;
  epi = epi > ceil_div(rows, 8) ? ceil_div(rows, 8) : epi;
  b.epi_slices = static_cast<int>(epi > 1024 ? 1024 : (epi < 1 ? 1 : epi));
  // wgrad reads dconv (the workspace, 256-byte aligned, or dy) in vectors.
  b.wgrad_v = vector_width(p.dtype, s.cog, {p.dy});
  const int64_t total = s.groups * s.k * s.k * s.cg * (s.cog / b.wgrad_v);
  b.wgrad_blocks = ceil_div(total, kThreads);
  const int64_t out_rows = s.n * s.oh > 0 ? s.n * s.oh : 1;
  int64_t sl = ceil_div(4 * sms, b.wgrad_blocks);
  sl = sl < 1 ? 1 : (sl > out_rows ? out_rows : sl);
  sl = sl > 1024 ? 1024 : (sl < 1 ? 1 : sl);
  b.rows_per_slice = ceil_div(out_rows, sl);
  b.wgrad_slices = static_cast<int>(ceil_div(out_rows, b.rows_per_slice));
  if (b.wgrad_slices < 1) b.wgrad_slices = 1;
  size_t off = 0;
  b.dconv_offset = off;
  if (b.epilogue) off = align256(off + static_cast<size_t>(rows * s.c_out) * elem_size(p.dtype));
  b.epi_offset = off;
  off = align256(off + static_cast<size_t>(b.epi_slices) * 2 * s.c_out * sizeof(float));
  b.wgrad_offset = off;
  off = align256(off + static_cast<size_t>(b.wgrad_slices) * s.groups * s.k * s.k * s.cg * s.cog * sizeof(float));
  b.bytes = off;
  return b;
}

// ---------------------------------------------------------------------------------- launchers ----

template <typename T>
cudaError_t forward_simt(const GConvForwardParams& p, cudaStream_t stream) {
  const int v = vector_width(p.dtype, p.s.cog, {p.w, p.residual, p.y, p.saved});
  const int64_t items = p.s.n * p.s.oh * p.s.ow * (p.s.c_out / v);
  const int grid = grid_for(items, p.num_sms);
  switch (v) {
    case 8: if constexpr (sizeof(T) == 2) { PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_forward_simt_kernel<T, 8>)(p); break; }
      [[fallthrough]];
    case 4: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_forward_simt_kernel<T, 4>)(p); break;
    case 2: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_forward_simt_kernel<T, 2>)(p); break;
    default: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_forward_simt_kernel<T, 1>)(p); break;
  }
  return cudaGetLastError();
}

template <typename T, int BN, bool DGRAD>
cudaError_t wmma_bn(const GConvForwardParams& p, const TcGemm& q, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(p.s.n * q.m_h * q.m_w, kBM)),
                  static_cast<unsigned>(p.s.groups * ceil_div(q.ndim, BN)));
  const bool va = q.kdim % 8 == 0 && q.a_c % 8 == 0 && aligned_to(q.a, 16);
  const bool vb = q.ndim % 8 == 0 && aligned_to(q.b, 16);
  if (va && vb) PYCNN_LAUNCH(grid, kTcThreads, 0, stream, gconv_wmma_kernel<T, BN, true, true, DGRAD>)(p, q);
  else if (va) PYCNN_LAUNCH(grid, kTcThreads, 0, stream, gconv_wmma_kernel<T, BN, true, false, DGRAD>)(p, q);
  else if (vb) PYCNN_LAUNCH(grid, kTcThreads, 0, stream, gconv_wmma_kernel<T, BN, false, true, DGRAD>)(p, q);
  else PYCNN_LAUNCH(grid, kTcThreads, 0, stream, gconv_wmma_kernel<T, BN, false, false, DGRAD>)(p, q);
  return cudaGetLastError();
}

template <typename T, bool DGRAD>
cudaError_t wmma_gemm(const GConvForwardParams& p, const TcGemm& q, cudaStream_t stream) {
  if (q.ndim <= 16) return wmma_bn<T, 16, DGRAD>(p, q, stream);
  if (q.ndim <= 32) return wmma_bn<T, 32, DGRAD>(p, q, stream);
  return wmma_bn<T, 64, DGRAD>(p, q, stream);
}

template <typename T>
cudaError_t forward_wmma(const GConvForwardParams& p, cudaStream_t stream) {
  const GConvShape& s = p.s;
  TcGemm q{p.x, p.w, nullptr, static_cast<int>(s.h), static_cast<int>(s.w), static_cast<int>(s.c_in),
           static_cast<int>(s.oh), static_cast<int>(s.ow), static_cast<int>(s.c_out), static_cast<int>(s.cg),
           static_cast<int>(s.cog)};
  return wmma_gemm<T, false>(p, q, stream);
}

// dx = the input gradient of the grouped conv of dconv, on tensor cores.
template <typename T>
cudaError_t dgrad_wmma(const GConvBackwardParams& b, const T* dconv, cudaStream_t stream) {
  const GConvShape& s = b.s;
  GConvForwardParams p{};
  p.s = s;
  TcGemm q{dconv, b.wt, b.dx, static_cast<int>(s.oh), static_cast<int>(s.ow), static_cast<int>(s.c_out),
           static_cast<int>(s.h), static_cast<int>(s.w), static_cast<int>(s.c_in), static_cast<int>(s.cog),
           static_cast<int>(s.cg)};
  return wmma_gemm<T, true>(p, q, stream);
}

template <typename T>
cudaError_t forward_impl(const GConvForwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (use_tensor_cores(p)) return forward_wmma<T>(p, stream);
  }
  return forward_simt<T>(p, stream);
}

template <typename T>
cudaError_t backward_impl(const GConvBackwardParams& p, cudaStream_t stream) {
  const GConvShape& s = p.s;
  const BackwardPlan b = backward_plan(p);
  unsigned char* ws = static_cast<unsigned char*>(p.workspace);
  const int64_t rows = s.n * s.oh * s.ow;
  const T* dconv = static_cast<const T*>(p.dy);
  // 1. epilogue gradient: dconv, dresidual, dscale, dbias
  if (b.epilogue) {
    T* dc = reinterpret_cast<T*>(ws + b.dconv_offset);
    float* part = reinterpret_cast<float*>(ws + b.epi_offset);
    PYCNN_LAUNCH(dim3(static_cast<unsigned>(ceil_div(s.c_out, 32)), b.epi_slices), dim3(32, 8), 0, stream,
                 gconv_grad_epilogue_kernel<T>)(p, dc, part);
    PYCNN_RETURN_IF_ERROR(cudaGetLastError());
    const int cgrid = grid_for(s.c_out, p.num_sms);
    if (p.dscale != nullptr) {
      PYCNN_LAUNCH(cgrid, kThreads, 0, stream, gconv_sum_partials_kernel)(part, b.epi_slices, 2 * s.c_out, s.c_out,
                                                                          static_cast<float*>(p.dscale));
      PYCNN_RETURN_IF_ERROR(cudaGetLastError());
    }
    if (p.dbias != nullptr) {
      PYCNN_LAUNCH(cgrid, kThreads, 0, stream, gconv_sum_partials_kernel)(part + s.c_out, b.epi_slices, 2 * s.c_out,
                                                                          s.c_out, static_cast<float*>(p.dbias));
      PYCNN_RETURN_IF_ERROR(cudaGetLastError());
    }
    dconv = dc;
  }
  // 2. input gradient
  if (p.dx != nullptr && s.n * s.h * s.w > 0 && sizeof(T) == 2 && use_tensor_cores(p)) {
    if constexpr (sizeof(T) == 2) PYCNN_RETURN_IF_ERROR(dgrad_wmma<T>(p, dconv, stream));
  } else if (p.dx != nullptr && s.n * s.h * s.w > 0) {
    const int v = vector_width(p.dtype, s.cg, {p.wt, p.dx});
    const int grid = grid_for(s.n * s.h * s.w * (s.c_in / v), p.num_sms);
    switch (v) {
      case 8: if constexpr (sizeof(T) == 2) { PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_dgrad_simt_kernel<T, 8>)(p, dconv); break; }
        [[fallthrough]];
      case 4: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_dgrad_simt_kernel<T, 4>)(p, dconv); break;
      case 2: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_dgrad_simt_kernel<T, 2>)(p, dconv); break;
      default: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_dgrad_simt_kernel<T, 1>)(p, dconv); break;
    }
    PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  }
  // 3. weight gradient: partial sums per row slice, then their sum
  if (p.dw != nullptr) {
    float* part = reinterpret_cast<float*>(ws + b.wgrad_offset);
    const dim3 grid(static_cast<unsigned>(b.wgrad_blocks), static_cast<unsigned>(b.wgrad_slices));
    switch (b.wgrad_v) {
      case 8: if constexpr (sizeof(T) == 2) { PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_wgrad_simt_kernel<T, 8>)(p, dconv, part, static_cast<int>(b.rows_per_slice)); break; }
        [[fallthrough]];
      case 4: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_wgrad_simt_kernel<T, 4>)(p, dconv, part, static_cast<int>(b.rows_per_slice)); break;
      case 2: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_wgrad_simt_kernel<T, 2>)(p, dconv, part, static_cast<int>(b.rows_per_slice)); break;
      default: PYCNN_LAUNCH(grid, kThreads, 0, stream, gconv_wgrad_simt_kernel<T, 1>)(p, dconv, part, static_cast<int>(b.rows_per_slice)); break;
    }
    PYCNN_RETURN_IF_ERROR(cudaGetLastError());
    const int64_t count = s.groups * s.k * s.k * s.cg * s.cog;
    PYCNN_LAUNCH(grid_for(count, p.num_sms), kThreads, 0, stream, gconv_sum_partials_kernel)(
        part, b.wgrad_slices, count, count, static_cast<float*>(p.dw));
    PYCNN_RETURN_IF_ERROR(cudaGetLastError());
  }
  (void)rows;
  return cudaSuccess;
}

template <typename F>
cudaError_t dispatch_dtype(DType dtype, F f) {
  switch (dtype) {
    case DType::Float32: return f(static_cast<float*>(nullptr));
    case DType::Float16: return f(static_cast<__half*>(nullptr));
    case DType::BFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gconv_impl
}  // namespace

bool gconv_shape_fits(const GConvShape& s) {
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  return s.n * s.h * s.w * s.c_in <= kMax && s.n * s.oh * s.ow * s.c_out <= kMax &&
         s.groups * s.k * s.k * s.cg * s.cog <= kMax;
}

bool gconv_forward_uses_tensor_cores(const GConvForwardParams& p) { return gconv_impl::use_tensor_cores(p); }

size_t gconv_backward_workspace_bytes(const GConvBackwardParams& p) { return gconv_impl::backward_plan(p).bytes; }

cudaError_t gconv_forward(const GConvForwardParams& p, cudaStream_t stream) {
  if (!gconv_shape_fits(p.s)) return cudaErrorInvalidValue;
  if (p.s.n * p.s.oh * p.s.ow == 0 || p.s.c_out == 0) return cudaSuccess;
  return gconv_impl::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return gconv_impl::forward_impl<T>(p, stream);
  });
}

cudaError_t gconv_backward(const GConvBackwardParams& p, cudaStream_t stream) {
  if (!gconv_shape_fits(p.s)) return cudaErrorInvalidValue;
  return gconv_impl::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return gconv_impl::backward_impl<T>(p, stream);
  });
}

}  // namespace cuda
}  // namespace pycnn
