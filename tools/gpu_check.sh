#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and the CUDA build of torch: build pycnn for that GPU, run the CUDA tests,
# the GPU-vs-emulation comparison, compute-sanitizer and the benchmarks, writing everything into one folder.
#   tools/gpu_check.sh [--quick] [OUT_DIR]        (default OUT_DIR: bench/results/<gpu>-<date>)
# --quick is sized for the device budget (9 minutes on an H200; docs/gpu.md): every step gets a time limit,
# the benchmarks are compact, and a step that runs out is recorded and the next one starts.
# steps.tsv in OUT_DIR gives each step's seconds and exit status (124: ran out of time).
# PYTHON (default python3) is the interpreter with the CUDA build of torch; lark, which the GPU machine lacks,
# is installed from a wheel in .whl/ when one is there (docs/gpu.md says how to bring it).
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
py=${PYTHON:-python3}
export PYTHON=$py PYTHONUNBUFFERED=1
jobs=$(nproc)
export MAX_JOBS=$jobs CMAKE_BUILD_PARALLEL_LEVEL=$jobs  # the emulator's and pycnn's builds: every core

if ! "$py" -c "import lark" 2>/dev/null; then
  wheel=$(ls .whl/lark-*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { echo "lark is not installed and there is no .whl/lark-*.whl (docs/gpu.md)" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pycnn-site "$wheel" || exit 2
  export PYTHONPATH=/tmp/pycnn-site${PYTHONPATH:+:$PYTHONPATH}
fi
gpu=$("$py" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))") || { echo "no CUDA GPU" >&2; exit 2; }
cap=$("$py" -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability(0))))")
out=${1:-bench/results/${gpu}-$(date +%Y-%m-%d)}
mkdir -p "$out"
printf 'step\tseconds\tstatus\n' > "$out/steps.tsv"
: > "$out/log.txt"  # a rerun into the same folder starts a fresh log
status=0

# step NAME LIMIT_S (0: none) COMMAND...: run, log, time; a failure or timeout is recorded and the script goes on.
step() {
  local name=$1 limit=$2; shift 2
  echo "+ [$name] $*" | tee -a "$out/log.txt"
  local start=$SECONDS rc
  if [ "$limit" = 0 ] || [ $quick = 0 ]; then "$@" 2>&1 | tee -a "$out/log.txt"; rc=${PIPESTATUS[0]}
  else timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/log.txt"; rc=${PIPESTATUS[0]}; fi
  printf '%s\t%d\t%s\n' "$name" $((SECONDS - start)) "$rc" >> "$out/steps.tsv"
  [ "$rc" = 0 ] || status=$rc
  return "$rc"
}

step build 0 env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$cap}" tools/dev_build.sh || { cat "$out/steps.tsv"; exit 1; }
step pytest-cuda 100 "$py" -m pytest -m cuda -q -p no:cacheprovider tests --junitxml="$out/pytest-cuda.xml"
if ! step emu-vs-gpu 90 "$py" -X faulthandler tools/emu_vs_gpu.py --require-gpu; then
  # The machine's facts and a native crash report of the emulator's own tests (docs/emulation.md).
  step emu-crash-probe 150 tools/emu_crash_probe.sh
fi
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "sanitize-$tool" 60 compute-sanitizer --tool "$tool" --kernel-name kns=pycnn --error-exitcode 1 \
      "$py" tools/gpu_sanitize.py
  done
else
  echo "compute-sanitizer not found: skipped" | tee -a "$out/log.txt"
fi
if [ $quick = 1 ]; then
  # a dozen layer shapes per op from MobileNetV2, RegNetX-400MF and EfficientNet-B0 (the one with SE layers),
  # fp16 channels_last, forward and forward+backward, against cuDNN (eager); MobileNetV2 and RegNetX-400MF at
  # batch 64 and 256 against torchvision.
  step bench-ops 90 "$py" -m pycnn bench ops --op all --dtype fp16 --layout channels_last --max-shapes 12 \
    --network mobilenet_v2 regnet_x_400mf efficientnet_b0 --batch 64 --repeats 10 --out "$out"
  for spec in "archs/mobilenet_v2.arch mobilenet_v2" "archs/regnet.arch regnet_x_400mf"; do
    set -- $spec
    for batch in 64 256; do
      step "bench-$2-b$batch" 45 "$py" -m pycnn bench model "$1" --network "$2" --torchvision "$2" --batch $batch \
        --dtype fp16 --layout channels_last --repeats 10 --out "$out"
    done
  done
  step bench-compile 60 "$py" -m pycnn bench model archs/mobilenet_v2.arch --network mobilenet_v2 \
    --torchvision mobilenet_v2 --batch 64 --dtype fp16 --layout channels_last --compile --repeats 10 --out "$out"
  # the fused inverted-residual block per distinct block shape against cuDNN's layer sequence (fp16, batch 64)
  for net in mobilenet_v2 efficientnet_b0; do
    step "bench-mbconv-$net" 40 "$py" -m pycnn.bench.mbconv --device cuda --network $net --batch 64 --repeats 10
  done
else
  step bench-ops 0 "$py" -m pycnn bench ops --op all --dtype fp16 fp32 --compile --out "$out"
  for spec in "archs/regnet.arch regnet_x_32gf" "archs/efficientnet.arch efficientnet_b0" "archs/resnext.arch resnext50_32x4d"; do
    set -- $spec
    step "bench-$2" 0 "$py" -m pycnn bench model "$1" --network "$2" --torchvision "$2" --batch 64 --dtype fp16 \
      --layout both --compile --out "$out"
    step "bench-$2-train" 0 "$py" -m pycnn bench model "$1" --network "$2" --batch 64 --dtype fp16 --channels-last \
      --train --out "$out"
  done
  for net in mobilenet_v2 efficientnet_b0; do
    step "bench-mbconv-$net" 0 "$py" -m pycnn.bench.mbconv --device cuda --network $net --batch 64 256
  done
fi
cat "$out/steps.tsv"
echo "results in $out (exit $status)"
exit $status
