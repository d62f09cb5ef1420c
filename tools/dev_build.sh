#!/usr/bin/env bash
# Development build in place: compiles pycnn._C with CMake + Ninja into build/dev and copies it into
# pycnn/, so `python -m pytest` from this checkout imports the source tree with its extension. Each
# checkout (git worktree) builds its own; nothing is installed. Users install with pip (README.md).
#   TORCH_CUDA_ARCH_LIST="9.0" tools/dev_build.sh      # one GPU architecture: quicker
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
cmake --build build/dev
# Replace by rename, not by overwriting: a process that has the old extension loaded keeps its copy.
for so in build/dev/_C*.so; do cp "$so" "pycnn/.$(basename "$so").tmp" && mv -f "pycnn/.$(basename "$so").tmp" "pycnn/$(basename "$so")"; done
if [ -d build/dev/ptxas ]; then rm -rf pycnn/ptxas && cp -r build/dev/ptxas pycnn/ptxas; fi
