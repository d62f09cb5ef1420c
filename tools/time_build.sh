#!/usr/bin/env bash
# Times a from-scratch build of pycnn._C the way `pip install --no-build-isolation .` runs it (scikit-build-core:
# CMake with Ninja, Release, this Python, site-packages as the prefix path; pyproject.toml [tool.scikit-build])
# in a fresh build directory, installing nothing, with each compile's CPU time recorded (tools/cpu_time.py);
# then prints the report of tools/build_times.py.
#   tools/time_build.sh [BUILD_DIR]        (default /tmp/pycnn-time-build; emptied first)
#   env: JOBS (ninja -j; default ninja's own, as pip runs it), TORCH_CUDA_ARCH_LIST, PYCNN_CUDA (ON|OFF)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/pycnn-time-build}
py=${PYTHON:-python}
rm -rf "$dir" && mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
launcher="$py;$src/tools/cpu_time.py;$dir/cpu_times.tsv"
t0=$(date +%s.%N)
cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPYCNN_CUDA="${PYCNN_CUDA:-ON}" \
  -DPython_EXECUTABLE="$(command -v "$py")" \
  -DCMAKE_PREFIX_PATH="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$launcher" -DCMAKE_CUDA_COMPILER_LAUNCHER="$launcher" | grep 'pycnn:' || true
t1=$(date +%s.%N)
ninja -C "$dir" ${JOBS:+-j "$JOBS"} >/dev/null
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:])
print(f"configure {t1 - t0:.1f} s, build {t2 - t1:.1f} s, total {t2 - t0:.1f} s (load average at the end: {open('/proc/loadavg').read().split()[0]})")
PY
"$py" "$src/tools/build_times.py" "$dir" --top "${TOP:-12}"
