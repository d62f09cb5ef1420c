#!/usr/bin/env bash
# The CPU benchmark results committed under bench/results/cpu-<date>/: the fused ops over the layer shapes of
# the default networks (pycnn bench ops --op all), and the networks themselves (pycnn bench model): eval, pycnn
# (backend fused, kernels chosen per shape) against the torchvision model with the same weights and against
# torch.compile of it, each in its best layout; training: speed and the memory kept for backward against the
# reference backend. About 30 minutes on 2 cores; run it on an otherwise idle machine.
#   tools/cpu_bench.sh [OUT_DIR]      env: OPS_THREADS (default 1), REPEATS (default 3), BATCH (default 8)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu-$(date +%Y-%m-%d)}
mkdir -p "$out"
source tools/bench_log.sh
batch=${BATCH:-8}
for spec in "mobilenet_v2.arch mobilenet_v2" "efficientnet.arch efficientnet_b0" "regnet.arch regnet_x_400mf" \
            "resnext.arch resnext50_32x4d"; do
  set -- $spec
  run python -m pycnn bench model "archs/$1" --network "$2" --torchvision "$2" --batch "$batch" --layout both \
      --compile --repeats "${REPEATS:-3}" --out "$out"
  run python -m pycnn bench model "archs/$1" --network "$2" --batch "$batch" --layout channels_last --train \
      --repeats "${REPEATS:-3}" --out "$out"
done
# RegNetX-32GF: 32 GFLOPs per image; batch 1 keeps it to minutes
run python -m pycnn bench model archs/regnet.arch --network regnet_x_32gf --torchvision regnet_x_32gf --batch 1 \
    --layout both --repeats "${REPEATS:-3}" --out "$out"
run python -m pycnn bench ops --op all --threads "${OPS_THREADS:-1}" --repeats "${REPEATS:-3}" --out "$out"
echo "results in $out (exit $status)"
exit $status
