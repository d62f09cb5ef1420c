#!/usr/bin/env bash
# Why the emulator crashes on a machine where it does not crash here (bench/results/NVIDIA-H200-2026-12-04):
# the machine's CPU, signal-stack and toolchain facts; the emulator's own tests with a native crash report
# (tools/segv_report.c) whose frames are resolved to function names; then the same tests under variations
# that each rule one cause in or out. Prints everything; exit status 0 when the default run passes.
#   tools/emu_crash_probe.sh            (PYTHON: the interpreter, default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
tmp=$(mktemp -d)
tests=tests/emu/test_emu_selftest.py
grep -m1 "model name" /proc/cpuinfo
grep -o -w -E "amx_tile|avx512f|user_shstk|shstk|ibt" /proc/cpuinfo | sort | uniq -c
grep -i -E "x86|shstk|ibt" /proc/self/status
LD_SHOW_AUXV=1 /bin/true | grep -i -E "SIGSTKSZ|HWCAP2"
uname -r; ldd --version | head -1; c++ --version | head -1
"$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.get_num_threads(), 'threads')"
cc -O1 -shared -fPIC -o "$tmp/segv_report.so" tools/segv_report.c || exit 2

# run LABEL [ENV=VALUE...] -- [PYTHON OPTIONS]: the selftests (stop at the first failure) with the crash report.
run() {
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "=== $label: ${envs[*]} $*"
  env "${envs[@]}" "$py" "$@" -c "import ctypes, sys; ctypes.CDLL('$tmp/segv_report.so'); import pytest
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:faulthandler', '-s', '-x', '$tests']))" > "$tmp/log" 2>&1
  local rc=$?
  grep -v "^  File\|^Extension modules\|^$" "$tmp/log" | tail -60
  grep -o "segv_report: \(ip\|frame\) 0x[0-9a-f]* [^ ]* +0x[0-9a-f]*" "$tmp/log" | while read -r _ _ _ so off; do
    echo "  $so $off: $(addr2line -Cf -e "$so" "$off" 2>/dev/null | head -1)"
  done
  local ipline
  ipline=$(grep -m1 "segv_report: ip 0x" "$tmp/log")
  if [ -n "$ipline" ]; then
    set -- $ipline
    objdump -d --no-show-raw-insn --start-address=$(($5 - 48)) --stop-address=$(($5 + 16)) "$4" 2>/dev/null | tail -20
  fi
  echo "=== $label: exit $rc"
  return $rc
}

# Python's faulthandler stays off: the report is then the only handler after the emulator's own, and its frame
# does not have to fit on Python's small alternate signal stack.
cat /proc/sys/vm/overcommit_memory /proc/sys/vm/max_map_count; ulimit -a | grep -i -E "stack|virtual|locked"
run default PYTHONFAULTHANDLER= PYCNN_EMU_TRACE=100000 -- ; status=$?
dmesg 2>/dev/null | tail -5
if command -v gdb >/dev/null; then
  echo "=== gdb"
  timeout 120 gdb -q -batch -ex run -ex bt -ex "info registers rip rsp" -ex "x/8i \$pc-16" --args "$("$py" -c 'import sys; print(sys.executable)')" -m pytest -q \
    -p no:cacheprovider -p no:faulthandler -x "$tests" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -60
fi
run ucontext PYCNN_EMU_TRACE=100000 PYCNN_EMU_OPT="-O1 -DPYCNN_EMU_UCONTEXT" PYCNN_EMU_BUILD_DIR="$tmp/emu-uc" --
exit $status
