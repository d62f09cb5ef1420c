// Emulation stand-in for <cuda_runtime.h> (csrc/emu/shim is on the include path of emulation builds only).
#pragma once
#include "../cuda_emu.h"
