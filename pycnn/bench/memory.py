"""Activations kept for backward, pycnn against the reference, and what keeping less costs in time.

    python -m pycnn.bench.memory [--input 3x224x224] [--batch 1] [--time] [--time-batch 8] [--repeats 5]
        [--cpu-cache]

For MobileNetV2, EfficientNet-B0, RegNetX-400MF and ResNet-50 (archs/): the bytes autograd keeps during one
training forward (pycnn.memory.saved_activation_bytes: exact, device-independent) for the reference backend
(PyTorch's own modules), the fused backend keeping every epilogue's output, and the fused backend recomputing
them (the default); with --time, one training step (forward, loss, backward) of the fused backend with and
without recomputation, interleaved in one run.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

import pycnn
from pycnn import argtypes
from pycnn.timing import compare
from pycnn.memory import saved_activation_bytes
from pycnn.bench import add_cpu_cache_argument, apply_cpu_cache

ARCHS = Path(__file__).resolve().parents[2] / "archs"
NETWORKS = [("mobilenet_v2.arch", "mobilenet_v2"), ("efficientnet.arch", "efficientnet_b0"),
            ("regnet.arch", "regnet_x_400mf"), ("resnet.arch", "resnet50")]


def measure(file: str, network: str, input_shape, batch: int) -> dict:
    """Saved-activation bytes of the three variants (each after one warm-up forward)."""
    torch.manual_seed(0)
    text = "x".join(map(str, input_shape))
    reference = pycnn.compile(ARCHS / file, network, backend="reference", input=text).train()
    fused = pycnn.compile(ARCHS / file, network, kernels="pycnn", input=text).train()
    keeping = copy.deepcopy(fused)
    keeping.recompute_epilogues = False
    x = torch.randn(batch, *input_shape)
    row = {"network": network}
    for name, model in (("reference", reference), ("fused_keep", keeping), ("fused", fused)):
        model(x)
        row[name] = saved_activation_bytes(model, x)
    return row


def time_steps(file: str, network: str, input_shape, batch: int, repeats: int) -> dict:
    """Median training-step seconds of the fused network with and without recomputation, interleaved."""
    torch.manual_seed(0)
    fused = pycnn.compile(ARCHS / file, network, kernels="pycnn", input="x".join(map(str, input_shape))).train()
    keeping = copy.deepcopy(fused)
    keeping.recompute_epilogues = False
    x = torch.randn(batch, *input_shape)

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(x).logsumexp(1).sum().backward()
        return run

    t = compare({"keep": step(keeping), "recompute": step(fused)}, torch.device("cpu"), repeats=repeats, warmup=2)
    return {"keep_s": t["keep"].median_s, "recompute_s": t["recompute"].median_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=argtypes.shape, default=(3, 224, 224), help="CxHxW (default 3x224x224)")
    parser.add_argument("--batch", type=argtypes.positive_int, default=1)
    parser.add_argument("--network", nargs="+", choices=[n for _, n in NETWORKS], default=None)
    parser.add_argument("--time", action="store_true", help="also time a training step with and without recomputation")
    parser.add_argument("--time-batch", type=argtypes.positive_int, default=8)
    parser.add_argument("--repeats", type=argtypes.positive_int, default=5)
    parser.add_argument("--threads", type=argtypes.positive_int, default=None)
    add_cpu_cache_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = apply_cpu_cache(args)
    chosen = [(f, n) for f, n in NETWORKS if not args.network or n in args.network]
    print(f"activations kept for backward, batch {args.batch}, input {'x'.join(map(str, args.input))} (MiB)")
    print(f"{'network':>16} {'reference':>10} {'pycnn keep':>11} {'pycnn':>8} {'pycnn/ref':>10}"
          + (f" {'step keep':>10} {'step':>8} {'time ratio':>10}  ({allocator})" if args.time else ""))
    for file, network in chosen:
        r = measure(file, network, args.input, args.batch)
        line = (f"{network:>16} {r['reference'] / 2**20:>10.2f} {r['fused_keep'] / 2**20:>11.2f} "
                f"{r['fused'] / 2**20:>8.2f} {r['fused'] / r['reference']:>9.3f}x")
        if args.time:
            t = time_steps(file, network, args.input, args.time_batch, args.repeats)
            line += (f" {t['keep_s'] * 1e3:>8.1f}ms {t['recompute_s'] * 1e3:>6.1f}ms "
                     f"{t['recompute_s'] / t['keep_s']:>9.3f}x")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
