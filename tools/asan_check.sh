#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer: builds pycnn._C (CPU only) with
# -fsanitize=address,undefined into build/asan, puts it beside a copy of the Python package and tests (the
# checkout's own extension is left alone) and runs the op tests on it with the sanitizer runtimes preloaded
# (Python itself is not instrumented). Any out-of-bounds access, use after free or undefined behaviour in a
# kernel stops the run with the sanitizer's report.
#   tools/asan_check.sh [PYTEST ARGS...]     (default: the ops' tests, the mbconv pass, every CPU ISA variant, the CPU cache)
# About 10 minutes to build on 2 cores; the default tests then take about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
link="-fsanitize=address,undefined"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYCNN_CUDA=OFF -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_MODULE_LINKER_FLAGS="$link" -DCMAKE_SHARED_LINKER_FLAGS="$link" \
  -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
cmake --build build/asan
# A copy of the checkout's Python side with the instrumented extension: tests/conftest.py imports pycnn from
# the tree the tests sit in, so the tests (and the architectures they compile) are copied too.
pkg=build/asan/site
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r pycnn tests archs grammar pyproject.toml "$pkg/"
rm -f "$pkg"/pycnn/_C*.so && cp build/asan/_C*.so "$pkg/pycnn/"
[ $# -gt 0 ] || set -- tests/test_mbconv.py tests/test_mbconv_pass.py tests/test_bn_act.py tests/test_dwconv.py \
  tests/test_gconv.py tests/test_se.py tests/test_cpu_isa.py tests/test_allocator.py
cd "$pkg"
# The sanitizer runtimes the instrumented module was linked against (the compiler CMake chose).
runtimes=$(ldd pycnn/_C*.so | awk '/lib(a|ub)san/ {print $3}' | paste -sd: -)
[ -n "$runtimes" ] || { echo "asan_check: build/asan's module links no sanitizer runtime" >&2; exit 2; }
# detect_leaks=0: CPython and torch keep allocations alive at exit by design.
LD_PRELOAD="$runtimes" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$py" -m pytest -q -p no:cacheprovider -x --capture=sys "$@" \
  --deselect tests/test_bn_act.py::test_build_info_and_cuda_registration  # fd 2: the sanitizers; a CPU-only build
