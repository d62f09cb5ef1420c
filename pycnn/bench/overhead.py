"""Python overhead per layer in eval at batch 1 on tiny inputs (kernels near free), pycnn against eager.

    PYTHONPATH=$PWD python -m pycnn.bench.overhead [--size 8] [--repeats 200] [--threads 1] [--train] [--out FILE.json]

For each network (narrowed so that every kernel is trivial) the compiled model runs in eval under no_grad at
1x3xSxS: pycnn's fused backend (kernels "pycnn", and "auto" after its first call measured the choices), the
reference backend (every layer its own eager PyTorch module: the same layers, eager's overhead) and, for
MobileNetV2, torchvision's model of the same width. per-layer us = median time / the network's layer count
(the IR's layers; torchvision: its leaf modules). All variants are timed interleaved in one run.
--train: the same in training mode at batch 2 (BatchNorm needs two values per channel), forward and backward
of the output's sum: the per-layer cost of recording and running autograd.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Dict, List

import torch

from ..timing import compare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETWORKS = [("archs/mobilenet_v2.arch", "mobilenet_v2", dict(width_mult=0.25)),
            ("archs/efficientnet.arch", "efficientnet_b0", dict(width=0.25)),
            ("archs/regnet.arch", "regnetx_400mf", {})]


def _leaf_modules(model: torch.nn.Module) -> int:
    return sum(1 for m in model.modules() if not list(m.children()))


def variants(path: str, network: str, overrides: dict, size: int, train: bool = False):
    """{name: (model, layer count)} for one network, in training or eval mode."""
    import pycnn
    from ..lower import to_backend
    fused = pycnn.compile(os.path.join(ROOT, path), network, input=(3, size, size), kernels="pycnn", **overrides)
    layers = len(list(fused.ir.layers()))
    out = {"pycnn": (fused, layers),
           "pycnn-auto": (to_backend(fused, "fused", kernels="auto"), layers),
           "reference": (to_backend(fused, "reference"), layers)}
    if network == "mobilenet_v2":
        import torchvision
        tv = torchvision.models.mobilenet_v2(width_mult=overrides.get("width_mult", 1.0))
        out["torchvision"] = (tv, _leaf_modules(tv))
    return {name: (m.train(train), layers) for name, (m, layers) in out.items()}


def measure(size: int, repeats: int, train: bool = False) -> List[Dict[str, object]]:
    rows = []
    for path, network, overrides in NETWORKS:
        models = variants(path, network, overrides, size, train)
        x = torch.randn(2 if train else 1, 3, size, size)

        def call(m):
            if train:
                m.zero_grad(set_to_none=True)
                m(x).sum().backward()
                return
            with torch.no_grad():
                m(x)
        for m, _ in models.values():
            call(m)  # warm-up; "auto" measures its choices here
        t = compare({name: (lambda m=m: call(m)) for name, (m, _) in models.items()}, x.device, repeats=repeats,
                    warmup=5)
        base = t["reference"].median_s / models["reference"][1]
        for name, (m, layers) in models.items():
            per_layer = t[name].median_s / layers
            rows.append(dict(network=network, overrides=overrides, mode="train" if train else "eval", variant=name,
                             layers=layers, ms=t[name].median_s * 1e3, min_ms=t[name].min_s * 1e3,
                             us_per_layer=per_layer * 1e6, us_per_layer_over_reference=(per_layer - base) * 1e6))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8, help="input height and width (default 8)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", action="store_true", help="training mode: forward and backward at batch 2")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.size, args.repeats, args.train)
    print(f"{'network':16} {'variant':12} {'layers':>6} {'ms':>8} {'us/layer':>9} {'vs reference':>13}")
    for r in rows:
        print(f"{r['network']:16} {r['variant']:12} {r['layers']:6d} {r['ms']:8.3f} {r['us_per_layer']:9.2f} "
              f"{r['us_per_layer_over_reference']:+13.2f}")
    if args.out:
        meta = dict(command="python -m pycnn.bench.overhead " + " ".join(argv or []), torch=torch.__version__,
                    machine=platform.processor() or platform.machine(), threads=args.threads, size=args.size,
                    train=args.train, date=time.strftime("%Y-%m-%d %H:%M:%S"))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
