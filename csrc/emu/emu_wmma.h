// pycnn CUDA emulation: nvcuda::wmma (warp matrix multiply-accumulate) as warp-collective operations.
//
// A fragment's element-to-lane mapping is opaque in CUDA, so any fixed mapping is valid: here lane l holds
// the elements whose row-major index within the tile is i * 32 + l (i < num_elements). load/store/mma are
// warp collectives over all 32 lanes (every lane must call them with the same pointer, ldm and layout, as
// CUDA requires); mma_sync gathers the whole tiles, computes D = A * B + C in float with k ascending, and
// scatters D back. Alignment rules of the API are checked: the pointer 32-byte aligned, ldm a multiple of
// 16 bytes. Supported: m16n16k16, m32n8k16, m8n32k16 with __half / __nv_bfloat16 inputs and float / __half
// accumulators.
#pragma once

#include <cstdint>
#include <sstream>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K> struct tile_shape;
template <int M, int N, int K> struct tile_shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct tile_shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct tile_shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

inline float to_f(float v) { return v; }
inline float to_f(double v) { return float(v); }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> inline T from_f(float v);
template <> inline float from_f<float>(float v) { return v; }
template <> inline double from_f<double>(float v) { return v; }
template <> inline __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename L> struct layout_of { static constexpr layout_t value = mem_row_major; };
template <> struct layout_of<col_major> { static constexpr layout_t value = mem_col_major; };
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
 public:
  static constexpr int rows = detail::tile_shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::tile_shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  using element_type = T;
  using storage_element_type = T;
  T x[num_elements];
};

namespace detail {

using pycnn_emu::WarpCall;
using pycnn_emu::WarpResolve;

// One lane's part in a wmma collective. For load/store: the lane's fragment, pointer, ldm and layout.
struct WmmaArgs {
  void* frag;
  const void* ptr;
  unsigned ldm;
  int layout;
  const void* a;
  const void* b;
  const void* c;
  bool error;
};

template <typename Frag>
inline void check_all_lanes(WarpCall* const* calls, unsigned present) {
  const WmmaArgs* first = nullptr;
  for (int l = 0; l < 32; ++l) {
    if (!((present >> l) & 1u)) continue;
    const auto* w = static_cast<WmmaArgs*>(calls[l]->payload);
    if (!first) first = w;
    if (w->ptr != first->ptr || w->ldm != first->ldm || w->layout != first->layout) {
      for (int k = 0; k < 32; ++k)
        if ((present >> k) & 1u) static_cast<WmmaArgs*>(calls[k]->payload)->error = true;
      return;
    }
  }
  if (present != 0xffffffffu)
    for (int k = 0; k < 32; ++k)
      if ((present >> k) & 1u) static_cast<WmmaArgs*>(calls[k]->payload)->error = true;
}

// Element (r, c) of a tile in memory.
inline size_t mem_index(int r, int c, unsigned ldm, int layout) {
  return layout == mem_row_major ? size_t(r) * ldm + c : size_t(c) * ldm + r;
}

template <typename Frag, typename T>
inline void load_resolve(WarpCall* const* calls, unsigned present) {
  check_all_lanes<Frag>(calls, present);
  for (int l = 0; l < 32; ++l) {
    if (!((present >> l) & 1u)) continue;
    auto* w = static_cast<WmmaArgs*>(calls[l]->payload);
    if (w->error) continue;
    auto* f = static_cast<Frag*>(w->frag);
    const T* p = static_cast<const T*>(w->ptr);
    for (int i = 0; i < Frag::num_elements; ++i) {
      const int e = i * 32 + l;
      f->x[i] = p[mem_index(e / Frag::cols, e % Frag::cols, w->ldm, w->layout)];
    }
  }
}

template <typename Frag, typename T>
inline void store_resolve(WarpCall* const* calls, unsigned present) {
  check_all_lanes<Frag>(calls, present);
  for (int l = 0; l < 32; ++l) {
    if (!((present >> l) & 1u)) continue;
    auto* w = static_cast<WmmaArgs*>(calls[l]->payload);
    if (w->error) continue;
    const auto* f = static_cast<const Frag*>(w->frag);
    T* p = const_cast<T*>(static_cast<const T*>(w->ptr));
    for (int i = 0; i < Frag::num_elements; ++i) {
      const int e = i * 32 + l;
      p[mem_index(e / Frag::cols, e % Frag::cols, w->ldm, w->layout)] = f->x[i];
    }
  }
}

template <typename FD, typename FA, typename FB, typename FC, int M, int N, int K>
inline void mma_resolve(WarpCall* const* calls, unsigned present) {
  if (present != 0xffffffffu) {
    for (int k = 0; k < 32; ++k)
      if ((present >> k) & 1u) static_cast<WmmaArgs*>(calls[k]->payload)->error = true;
    return;
  }
  float A[M * K], B[K * N], C[M * N];
  for (int l = 0; l < 32; ++l) {
    const auto* w = static_cast<WmmaArgs*>(calls[l]->payload);
    const auto* a = static_cast<const FA*>(w->a);
    const auto* b = static_cast<const FB*>(w->b);
    const auto* c = static_cast<const FC*>(w->c);
    for (int i = 0; i < FA::num_elements; ++i) A[i * 32 + l] = to_f(a->x[i]);
    for (int i = 0; i < FB::num_elements; ++i) B[i * 32 + l] = to_f(b->x[i]);
    for (int i = 0; i < FC::num_elements; ++i) C[i * 32 + l] = to_f(c->x[i]);
  }
  float D[M * N];
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      float acc = C[r * N + c];
      for (int k = 0; k < K; ++k) acc += A[r * K + k] * B[k * N + c];
      D[r * N + c] = acc;
    }
  for (int l = 0; l < 32; ++l) {
    auto* d = static_cast<FD*>(static_cast<WmmaArgs*>(calls[l]->payload)->frag);
    for (int i = 0; i < FD::num_elements; ++i) d->x[i] = from_f<typename FD::element_type>(D[i * 32 + l]);
  }
}

inline void run(const char* op, WmmaArgs& w, WarpResolve resolve, const char* file, int line) {
  using namespace pycnn_emu::detail;
  if (!g_run) return;
  pycnn_emu::WarpCall c{op, 0xffffffffu, file, line, &w, resolve};
  warp_collective(c);
  if (w.error) {
    std::ostringstream m;
    m << where(*g_run, g_run->cur) << ": " << op << " at " << site(file, line)
      << ": all 32 lanes of the warp must call it with the same pointer, ldm and layout";
    fail_in_fiber(cudaErrorLaunchFailure, m.str());
  }
}

inline void check_alignment(const char* op, const void* p, unsigned ldm, size_t elem, const char* file, int line) {
  using namespace pycnn_emu::detail;
  if (!g_run) return;
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * elem) % 16 != 0) {
    std::ostringstream m;
    m << where(*g_run, g_run->cur) << ": " << op << " at " << site(file, line) << ": pointer " << p
      << " must be 32-byte aligned and ldm (" << ldm << " elements) a multiple of 16 bytes";
    fail_in_fiber(cudaErrorLaunchFailure, m.str());
  }
}

}  // namespace detail

#define PYCNN_EMU_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = T(v);
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm, PYCNN_EMU_SITE) {
  using Frag = fragment<Use, M, N, K, T, L>;
  detail::check_alignment("wmma::load_matrix_sync", p, ldm, sizeof(T), file, line);
  detail::WmmaArgs w{&f, p, ldm, detail::layout_of<L>::value, nullptr, nullptr, nullptr, false};
  detail::run("wmma::load_matrix_sync", w, &detail::load_resolve<Frag, T>, file, line);
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout,
                             PYCNN_EMU_SITE) {
  using Frag = fragment<accumulator, M, N, K, T>;
  detail::check_alignment("wmma::load_matrix_sync", p, ldm, sizeof(T), file, line);
  detail::WmmaArgs w{&f, p, ldm, int(layout), nullptr, nullptr, nullptr, false};
  detail::run("wmma::load_matrix_sync", w, &detail::load_resolve<Frag, T>, file, line);
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout,
                              PYCNN_EMU_SITE) {
  using Frag = fragment<accumulator, M, N, K, T>;
  detail::check_alignment("wmma::store_matrix_sync", p, ldm, sizeof(T), file, line);
  detail::WmmaArgs w{const_cast<Frag*>(&f), p, ldm, int(layout), nullptr, nullptr, nullptr, false};
  detail::run("wmma::store_matrix_sync", w, &detail::store_resolve<Frag, T>, file, line);
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC, typename TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
                     bool /*satf*/ = false, PYCNN_EMU_SITE) {
  using FD = fragment<accumulator, M, N, K, TD>;
  using FA = fragment<matrix_a, M, N, K, TA, LA>;
  using FB = fragment<matrix_b, M, N, K, TB, LB>;
  using FC = fragment<accumulator, M, N, K, TC>;
  detail::WmmaArgs w{&d, nullptr, 0, 0, &a, &b, &c, false};
  detail::run("wmma::mma_sync", w, &detail::mma_resolve<FD, FA, FB, FC, M, N, K>, file, line);
}

#undef PYCNN_EMU_SITE

}  // namespace wmma
}  // namespace nvcuda
