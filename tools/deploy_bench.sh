#!/usr/bin/env bash
# The deployment-engine tables committed under bench/results/deploy-<date>/: MobileNetV2, EfficientNet-B0 and
# RegNetX-400MF at 224x224, eval, batch 1 and 8, on every installed engine (torchvision eager and
# torch.compile, pycnn eager and torch.compile, ONNX Runtime, OpenVINO), 2 threads, all rows of a network
# interleaved in one run. About 10 minutes a network on a loaded 2-core machine (the compiles and exports).
#   tools/deploy_bench.sh [OUT_DIR]      env: THREADS (default 2), REPEATS (default 10), BATCH (default 8)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/deploy-$(date +%Y-%m-%d)}
mkdir -p "$out"
source tools/bench_log.sh
for spec in "mobilenet_v2.arch mobilenet_v2" "efficientnet.arch efficientnet_b0" "regnet.arch regnet_x_400mf"; do
  set -- $spec
  run python -m pycnn bench model "archs/$1" --network "$2" --batch "${BATCH:-8}" --engines \
      --threads "${THREADS:-2}" --repeats "${REPEATS:-10}" --out "$out"
done
echo "results in $out (exit $status)"
exit $status
