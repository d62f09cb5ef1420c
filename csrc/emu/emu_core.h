// pycnn CUDA emulation: kernel-side vocabulary, vector types, dim3 and the runtime API subset.
// Part of csrc/emu/cuda_emu.h; see docs/emulation.md. Test-only, torch-free, host C++17.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

// ---- declaration specifiers -------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one after another and all threads of a block are fibers of one OS thread, so a function-local
// static is exactly "one copy per block". `extern __shared__` is not supported: use PYCNN_DYNAMIC_SMEM.
#define __shared__ static
// __restrict__ is a GCC keyword already. __noinline__ is deliberately not defined (libstdc++ uses
// __attribute__((__noinline__)) and a macro would break it).

// ---- vector types ----------------------------------------------------------------------------------------
#define PYCNN_EMU_VEC2(T, N, A)                                                     \
  struct __attribute__((aligned(A))) N##2 { T x, y; };                              \
  inline N##2 make_##N##2(T x, T y) { N##2 r; r.x = x; r.y = y; return r; }
#define PYCNN_EMU_VEC3(T, N)                                                        \
  struct N##3 { T x, y, z; };                                                       \
  inline N##3 make_##N##3(T x, T y, T z) { N##3 r; r.x = x; r.y = y; r.z = z; return r; }
#define PYCNN_EMU_VEC4(T, N, A)                                                     \
  struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };                        \
  inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }

PYCNN_EMU_VEC2(float, float, 8)
PYCNN_EMU_VEC3(float, float)
PYCNN_EMU_VEC4(float, float, 16)
PYCNN_EMU_VEC2(double, double, 16)
PYCNN_EMU_VEC3(double, double)
PYCNN_EMU_VEC4(double, double, 16)  // 32 on recent CUDA (double4_32a); 16 is the classic alignment
PYCNN_EMU_VEC2(int, int, 8)
PYCNN_EMU_VEC3(int, int)
PYCNN_EMU_VEC4(int, int, 16)
PYCNN_EMU_VEC2(unsigned int, uint, 8)
PYCNN_EMU_VEC3(unsigned int, uint)
PYCNN_EMU_VEC4(unsigned int, uint, 16)
PYCNN_EMU_VEC2(short, short, 4)
PYCNN_EMU_VEC4(short, short, 8)
PYCNN_EMU_VEC2(unsigned short, ushort, 4)
PYCNN_EMU_VEC4(unsigned short, ushort, 8)
PYCNN_EMU_VEC2(signed char, char, 2)
PYCNN_EMU_VEC4(signed char, char, 4)
PYCNN_EMU_VEC2(unsigned char, uchar, 2)
PYCNN_EMU_VEC4(unsigned char, uchar, 4)
PYCNN_EMU_VEC2(long long, longlong, 16)
PYCNN_EMU_VEC2(unsigned long long, ulonglong, 16)
#undef PYCNN_EMU_VEC2
#undef PYCNN_EMU_VEC3
#undef PYCNN_EMU_VEC4

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---- runtime API subset ----------------------------------------------------------------------------------
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorAssert = 710,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

struct CUstream_st;
typedef CUstream_st* cudaStream_t;
struct CUevent_st;
typedef CUevent_st* cudaEvent_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int maxThreadsPerMultiProcessor;
  int multiProcessorCount;
  int major;
  int minor;
};

constexpr int warpSize = 32;
