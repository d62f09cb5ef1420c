#!/usr/bin/env python3
"""CMake compiler launcher that records each compile's CPU time: `cpu_time.py LOG cmd...` runs cmd and
appends "user_s<TAB>sys_s<TAB>wall_s<TAB>output" to LOG. On a machine shared with other work, wall times
stretch with the load but CPU times hardly do, so they are what tools/build_times.py compares.
Used by tools/time_build.sh (-DCMAKE_CXX_COMPILER_LAUNCHER / CMAKE_CUDA_COMPILER_LAUNCHER)."""
import os
import resource
import subprocess
import sys
import time

log, cmd = sys.argv[1], sys.argv[2:]
start = time.monotonic()
rc = subprocess.call(cmd)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
output = next((cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i] == "-o"), cmd[-1])
with open(log, "a") as f:  # one short write per line: concurrent jobs do not interleave
    f.write(f"{usage.ru_utime:.2f}\t{usage.ru_stime:.2f}\t{wall:.2f}\t{os.path.relpath(output)}\n")
sys.exit(rc)
