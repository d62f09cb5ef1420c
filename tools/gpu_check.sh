#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and the CUDA build of torch: build pycnn, run the CUDA tests, the
# GPU-vs-emulation comparison and the benchmarks, writing everything into one folder.
#   tools/gpu_check.sh [OUT_DIR]        (default: bench/results/<gpu>-<date>)
set -uo pipefail
cd "$(dirname "$0")/.."
gpu=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))") || { echo "no CUDA GPU" >&2; exit 2; }
out=${1:-bench/results/${gpu}-$(date +%Y-%m-%d)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
run() { echo "+ $*" | tee -a "$out/log.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || status=$rc; }
run env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(python -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability(0))))")}" tools/dev_build.sh
run python -m pytest -m cuda -q tests --junitxml="$out/pytest-cuda.xml"
run python tools/emu_vs_gpu.py --require-gpu
run python -m pycnn bench ops --op all --dtype fp16 fp32 --out "$out"
for spec in "archs/regnet.arch regnet_x_32gf" "archs/efficientnet.arch efficientnet_b0" "archs/resnext.arch resnext50_32x4d"; do
  set -- $spec
  run python -m pycnn bench model "$1" --network "$2" --torchvision "$2" --batch 64 --dtype fp16 --layout both --compile --out "$out"
  run python -m pycnn bench model "$1" --network "$2" --batch 64 --dtype fp16 --channels-last --train --out "$out"
done
echo "results in $out (exit $status)"
exit $status
