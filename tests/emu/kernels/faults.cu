// Emulator self-test kernels (not product code): what the emulator must report instead of hanging, and
// the block-level barrier variants. Each fault is switched on by a runtime argument.
#include "common.cuh"

namespace emu_selftest {

// mode 0: correct; 1: thread `who` returns before the barrier; 2: threads < who use another __syncthreads;
// 3: lane `who` waits at __syncthreads while its warp shuffles; 4: lanes < who shuffle while the others vote.
__global__ void faults_kernel(float* out, int mode, int who) {
  const int t = threadIdx.x;
  if (mode == 1 && t == who) return;
  if (mode == 2 && t < who) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  float v = float(t);
  if (mode == 3 && t == who) {
    __syncthreads();
  } else if (mode == 4 && t < who) {
    v = __shfl_sync(0xffffffffu, v, 0);
  } else if (mode == 4) {
    v = float(__ballot_sync(0xffffffffu, 1));
  } else {
    v = __shfl_sync(0xffffffffu, v, 0);
  }
  out[t] = v;
}

inline cudaError_t launch_faults(float* out, int threads, int mode, int who) {
  PYCNN_LAUNCH(1, threads, 0, nullptr, faults_kernel)(out, mode, who);
  return cudaGetLastError();
}

// Lanes >= n exit first; the others shuffle down by one with the full mask: lane n-1 reads an exited lane,
// which the emulator answers with a poison value (NaN) -- undefined on the GPU.
__global__ void exited_lane_kernel(float* out, int n) {
  const int t = threadIdx.x;
  if (t >= n) return;
  out[t] = __shfl_down_sync(0xffffffffu, float(t), 1);
}

inline cudaError_t launch_exited_lane(float* out, int n) {
  PYCNN_LAUNCH(1, 32, 0, nullptr, exited_lane_kernel)(out, n);
  return cudaGetLastError();
}

// out[0..2] = __syncthreads_count / _and / _or of (t % 3 == 0), (t < n), (t == n).
__global__ void sync_vote_kernel(int* out, int n) {
  const int t = threadIdx.x;
  const int c = __syncthreads_count(t % 3 == 0);
  const int a = __syncthreads_and(t < n);
  const int o = __syncthreads_or(t == n);
  if (t == 0) {
    out[0] = c;
    out[1] = a;
    out[2] = o;
  }
}

inline cudaError_t launch_sync_vote(int* out, int threads, int n) {
  PYCNN_LAUNCH(2, threads, 0, nullptr, sync_vote_kernel)(out, n);
  return cudaGetLastError();
}

// Dynamic shared memory of `bytes`: each block writes it, then reads it back reversed; out[b] = checksum.
__global__ void big_smem_kernel(unsigned* out, int words) {
  PYCNN_DYNAMIC_SMEM(unsigned, buf);
  if (reinterpret_cast<uintptr_t>(buf) % 16 != 0) {
    out[blockIdx.x] = 0xdeadu;
    return;
  }
  for (int i = threadIdx.x; i < words; i += blockDim.x) buf[i] = unsigned(i) * 2654435761u + blockIdx.x;
  __syncthreads();
  unsigned acc = 0;
  if (threadIdx.x == 0)
    for (int i = words - 1; i >= 0; --i) acc = acc * 31u + buf[i];
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

inline cudaError_t launch_big_smem(unsigned* out, int words, bool set_attribute) {
  const size_t bytes = size_t(words) * sizeof(unsigned);
  if (set_attribute)
    PYCNN_RETURN_IF_ERROR(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  PYCNN_LAUNCH(2, 128, bytes, nullptr, big_smem_kernel)(out, words);
  return cudaGetLastError();
}

// A C++ exception escaping a kernel (possible only in emulation) is reported, not propagated across fibers.
__global__ void throwing_kernel(int who) {
#ifdef PYCNN_EMU
  if (int(threadIdx.x) == who) throw std::runtime_error("thrown by a kernel thread");
#endif
  __syncthreads();
}

inline cudaError_t launch_throwing(int who) {
  PYCNN_LAUNCH(1, 64, 0, nullptr, throwing_kernel)(who);
  return cudaGetLastError();
}

// Faults that kill the process (tested in a subprocess): mode 1 touches `kb` KiB of stack in thread 3 of
// block 1, mode 2 writes through a wild pointer in the same thread.
__global__ void crash_kernel(int mode, int kb) {
  if (blockIdx.x != 1 || threadIdx.x != 3) return;
  if (mode == 1) {
    volatile char* big = static_cast<volatile char*>(__builtin_alloca(size_t(kb) * 1024));
    for (int i = 0; i < kb * 1024; i += 4096) big[i] = 1;
  } else {
    *reinterpret_cast<volatile int*>(uintptr_t(16)) = 1;
  }
}

inline cudaError_t launch_crash(int mode, int kb) {
  PYCNN_LAUNCH(2, 32, 0, nullptr, crash_kernel)(mode, kb);
  return cudaGetLastError();
}

// Thread 0 spins on a flag that nobody sets: the emulator's watchdog must end the process (subprocess test).
__global__ void spin_kernel(volatile int* flag) {
  if (threadIdx.x == 0)
    while (*flag == 0) {
    }
}

inline cudaError_t launch_spin(int* flag) {
  PYCNN_LAUNCH(1, 32, 0, nullptr, spin_kernel)(flag);
  return cudaGetLastError();
}

// Launch configuration errors.
__global__ void noop_kernel() {}

inline cudaError_t launch_noop(dim3 grid, dim3 block) {
  PYCNN_LAUNCH(grid, block, 0, nullptr, noop_kernel)();
  return cudaGetLastError();
}

}  // namespace emu_selftest
