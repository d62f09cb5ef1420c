"""How many fused-op shapes kernels="auto" gives pycnn's kernel, per CPU kernel variant cap: each network is
compiled with kernels="auto" and run once in eval (no_grad, channels_last input) under each cap
(pycnn._C._set_cpu_isa), each run with a fresh kernel-choice cache of its own, so that the dispatch measures
every distinct (signature, input shape) of the network with its own timing (pycnn.dispatch.measure: best of
5, interleaved); the choices are then read back from that cache. The caps alternate per network and batch,
so drift of a shared machine's load falls on both. Prints a markdown table (counts of distinct shapes).

    PYTHONPATH=$PWD python tools/dispatch_counts.py [--caps avx2 avx512] [--batch 1 8] [--threads 2] [--networks ...]
"""
import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import torch

import pycnn
from pycnn import _C, dispatch

ARCHS = Path(__file__).resolve().parents[1] / "archs"
NETWORKS = [("mobilenet_v2.arch", "mobilenet_v2"), ("efficientnet.arch", "efficientnet_b0"),
            ("regnet.arch", "regnet_x_400mf"), ("resnext.arch", "resnext50_32x4d")]
INPUT = (3, 224, 224)  # the four networks' input


def choices(file: str, network: str, batch: int, cap: str, cache_dir: str) -> dict:
    """{cache key without the device: choice} of one eval run of the network under `cap`."""
    os.environ[dispatch.ENV_CACHE] = cache_dir  # a fresh cache: every shape is measured in this run
    if _C._set_cpu_isa(cap) != cap:
        raise SystemExit(f"this CPU does not run the {cap} kernels (best: {pycnn.build_info()['cpu_isa_best']})")
    torch.manual_seed(0)
    model = pycnn.compile(str(ARCHS / file), network, input=INPUT, kernels="auto").eval()
    x = torch.randn(batch, *INPUT)
    with torch.no_grad():
        model(x.contiguous(memory_format=torch.channels_last))
    device = dispatch._device_name(x.device)
    return {key.replace(f"|{device}|", "|"): e["choice"] for key, e in dispatch.kernel_cache().entries.items()}


def op_of(key: str) -> str:
    """The fused op of a cache key: its kind, and for conv_bn_act the conv (dense, depthwise, grouped)."""
    signature = key.split("|")[0]
    kind = signature.split(":")[0]
    conv = [a.split("=")[1] for a in signature.split(":")[-1].split(",") if a.startswith("conv=")]
    return f"{kind} ({conv[0]})" if kind == "conv_bn_act" and conv else kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caps", nargs="+", default=["avx2", "avx512"], choices=["baseline", "avx2", "avx512"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--networks", nargs="+", default=[n for _, n in NETWORKS], choices=[n for _, n in NETWORKS])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    previous = _C._cpu_isa()
    started = time.perf_counter()
    rows, total = [], {cap: collections.Counter() for cap in args.caps}
    moved = collections.Counter()  # (from, to) between the first and the last cap, per shape
    by_op = {cap: collections.defaultdict(collections.Counter) for cap in args.caps}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (file, network) in enumerate([(f, n) for f, n in NETWORKS if n in args.networks]):
            for j, batch in enumerate(args.batch):
                order = args.caps if (i + j) % 2 == 0 else args.caps[::-1]
                got = {cap: choices(file, network, batch, cap, f"{tmp}/{network}-{batch}-{cap}") for cap in order}
                for cap in args.caps:
                    n = collections.Counter(got[cap].values())
                    total[cap] += n
                    for key, choice in got[cap].items():
                        by_op[cap][op_of(key)][choice] += 1
                    rows.append((network, batch, cap, len(got[cap]), n["pycnn"], n["folded"], n["torch"]))
                first, last = got[args.caps[0]], got[args.caps[-1]]
                moved.update((first[k], last[k]) for k in first.keys() & last.keys() if first[k] != last[k])
                print(f"# {network} batch {batch} done ({time.perf_counter() - started:.0f} s)", flush=True)
    _C._set_cpu_isa(previous)
    print(f"\nkernels=auto, eval, channels_last, {args.threads} threads; distinct fused-op shapes per choice\n")
    print("| network | batch | cap | shapes | pycnn | folded | torch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    for cap in args.caps:
        n = total[cap]
        print(f"| all | {'+'.join(map(str, args.batch))} | {cap} | {sum(n.values())} | {n['pycnn']} | {n['folded']} "
              f"| {n['torch']} |")
    print("\n| op | " + " | ".join(f"{cap}: pycnn / folded / torch" for cap in args.caps) + " |")
    print("|---|" + "---|" * len(args.caps))
    for op in sorted(by_op[args.caps[0]]):
        print(f"| {op} | " + " | ".join("{pycnn} / {folded} / {torch}".format_map(collections.Counter(by_op[cap][op]))
                                         for cap in args.caps) + " |")
    if len(args.caps) > 1:
        print(f"\nshapes whose choice differs, {args.caps[0]} -> {args.caps[-1]}: "
              + (", ".join(f"{a} -> {b}: {c}" for (a, b), c in sorted(moved.items())) or "none"))


if __name__ == "__main__":
    main()
