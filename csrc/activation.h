// Activations shared by the CPU and CUDA kernels (torch-free). The derivative is taken with respect to
// the pre-activation value z, so backward passes recompute z instead of saving it; each formula matches
// PyTorch's own backward (threshold_backward, hardtanh_backward, silu_backward, hardswish_backward).
#pragma once

#include <cmath>
#include <cstdint>

// nvcc needs the qualifiers; the host compiler (CPU kernels, and the CUDA sources under emulation) not.
#if defined(__CUDACC__)
#define PYCNN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYCNN_HOST_DEVICE inline
#endif

namespace pycnn {

enum class Act : int32_t { None = 0, ReLU = 1, ReLU6 = 2, SiLU = 3, HardSwish = 4 };

template <typename acc>
PYCNN_HOST_DEVICE acc act_forward(Act act, acc z) {
  switch (act) {
    // Comparisons are written so that NaN falls through to z: NaN propagates as in PyTorch (clamp_min, hardtanh).
    case Act::ReLU: return z < acc(0) ? acc(0) : z;
    case Act::ReLU6: return z < acc(0) ? acc(0) : (z > acc(6) ? acc(6) : z);
    case Act::SiLU: return z / (acc(1) + std::exp(-z));
    case Act::HardSwish: {
      acc t = z + acc(3);
      t = t < acc(0) ? acc(0) : (t > acc(6) ? acc(6) : t);
      return z * t / acc(6);
    }
    default: return z;
  }
}

// d act(z) / dz
template <typename acc>
PYCNN_HOST_DEVICE acc act_derivative(Act act, acc z) {
  switch (act) {
    // At NaN and at the corners, as PyTorch's vectorized CPU kernels (threshold_backward, hardtanh_backward,
    // hardswish_backward): relu passes the gradient at NaN, relu6 cuts it, hardswish makes it NaN.
    case Act::ReLU: return z <= acc(0) ? acc(0) : acc(1);
    case Act::ReLU6: return (z > acc(0) && z < acc(6)) ? acc(1) : acc(0);
    case Act::SiLU: {
      acc s = acc(1) / (acc(1) + std::exp(-z));
      return s * (acc(1) + z * (acc(1) - s));
    }
    case Act::HardSwish: return z <= acc(-3) ? acc(0) : (z >= acc(3) ? acc(1) : z / acc(3) + acc(0.5));
    default: return acc(1);
  }
}

// dy * d act(z) / dz, computed as PyTorch's own backward kernels compute it: the piecewise activations select
// (where their derivative is 0 the gradient is 0 even for an infinite dy, as threshold_backward and
// hardtanh_backward give; a multiplication would give NaN), the smooth ones multiply.
template <typename acc>
PYCNN_HOST_DEVICE acc act_backward(Act act, acc dy, acc z) {
  switch (act) {
    case Act::ReLU: return z <= acc(0) ? acc(0) : dy;
    case Act::ReLU6: return (z > acc(0) && z < acc(6)) ? dy : acc(0);
    case Act::HardSwish: return z <= acc(-3) ? acc(0) : (z >= acc(3) ? dy : dy * (z / acc(3) + acc(0.5)));
    case Act::SiLU: return dy * act_derivative<acc>(act, z);
    default: return dy;
  }
}

}  // namespace pycnn
