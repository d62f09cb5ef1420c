#!/usr/bin/env bash
# CMake compiler launcher for the CUDA kernels: runs nvcc and keeps its ptxas report (-Xptxas=-v:
# registers, spills, shared memory per kernel) in LOGDIR/<source>.log, one file per .cu source.
logdir=$1; shift
src=unknown
for arg in "$@"; do case $arg in *.cu) src=$(basename "$arg");; esac; done
mkdir -p "$logdir"
"$@" 2> >(tee "$logdir/$src.log" >&2)
rc=$?
wait
exit $rc
