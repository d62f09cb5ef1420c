// pycnn CUDA emulation (test-only): compile the CUDA kernel sources of csrc/cuda/ with the host C++ compiler
// (-DPYCNN_EMU, C++17, g++/clang) and execute their launches on the CPU. See docs/emulation.md.
//
// Included by csrc/cuda/common.cuh under PYCNN_EMU. Torch-free. One launch runs at a time (a global lock);
// blocks run one after another; the threads of a block are fibers scheduled between barriers in a selectable
// order (pycnn_emu::set_schedule). Errors are reported through cudaGetLastError() with details in
// pycnn_emu::last_error_message().
#pragma once

#if !defined(PYCNN_EMU)
#error "csrc/emu/cuda_emu.h is the CPU emulation of CUDA: compile with -DPYCNN_EMU"
#endif

#include "emu_core.h"
#include "emu_fp16.h"
#include "emu_sched.h"
#include "emu_intrinsics.h"
#include "emu_wmma.h"
