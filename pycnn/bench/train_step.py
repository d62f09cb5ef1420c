"""Training step and eval layouts, interleaved: torchvision eager, torch.compile(torchvision), pycnn eager and
torch.compile(pycnn), and pycnn in eval with NCHW input (the default) against its best layout.

    PYTHONPATH=$PWD python -m pycnn.bench.train_step
        [--networks mobilenet_v2,efficientnet_b0,regnet_x_400mf[,resnext50_32x4d]]
        [--size 224] [--batch 8] [--threads 2] [--repeats 10] [--train-layouts nchw,channels_last]
        [--skip-train] [--skip-eval] [--cpu-cache] [--out FILE.json]

Training: one SGD step (zero_grad, forward, cross-entropy, backward, step) at --batch, each variant in both
layouts (model and input NCHW, or both channels_last); the best layout per variant is reported. Eval (no_grad):
pycnn at batch 1 and --batch with an NCHW input and the model as compiled (`default`: it converts at its
entry), against the model with input_layout None fed NCHW (`nchw`) and the model moved to channels_last fed
channels_last (`channels_last`). All rows of one table are timed interleaved in one run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

from ..timing import compare
from . import add_cpu_cache_argument, apply_cpu_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETWORKS = {"mobilenet_v2": ("archs/mobilenet_v2.arch", "mobilenet_v2"),
            "efficientnet_b0": ("archs/efficientnet.arch", "efficientnet_b0"),
            "regnet_x_400mf": ("archs/regnet.arch", "regnet_x_400mf"),
            "resnext50_32x4d": ("archs/resnext.arch", "resnext50_32x4d")}
DEFAULT_NETWORKS = "mobilenet_v2,efficientnet_b0,regnet_x_400mf"  # ResNeXt-50 when asked: 10x their time
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _models(name: str, size: int):
    import pycnn
    from .model import torchvision_baseline
    path, network = NETWORKS[name]
    torch.manual_seed(0)
    model = pycnn.compile(os.path.join(ROOT, path), network, input=(3, size, size))
    return model, torchvision_baseline(model, name)


def train_rows(name: str, size: int, batch: int, repeats: int, layouts=tuple(LAYOUTS)) -> List[Dict[str, object]]:
    pycnn_model, tv = _models(name, size)
    variants = {}
    for layout in layouts:
        fmt = LAYOUTS[layout]
        for label, base, compiled in (("torchvision", tv, False), ("torch.compile(torchvision)", tv, True),
                                      ("pycnn", pycnn_model, False), ("torch.compile(pycnn)", pycnn_model, True)):
            m = copy.deepcopy(base).to(memory_format=fmt).train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            variants[(label, layout)] = (torch.compile(m) if compiled else m, opt)
    x = {layout: torch.randn(batch, 3, size, size).contiguous(memory_format=LAYOUTS[layout]) for layout in layouts}
    target = torch.randint(0, 1000, (batch,))

    def step(m, opt, layout):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x[layout]), target).backward()
        opt.step()
    fns = {}
    for (label, layout), (m, opt) in variants.items():
        started = time.perf_counter()
        step(m, opt, layout)  # compiles
        print(f"  {name} {label} {layout}: first step {time.perf_counter() - started:.1f} s", flush=True)
        fns[(label, layout)] = lambda m=m, opt=opt, layout=layout: step(m, opt, layout)
    t = compare(fns, torch.device("cpu"), repeats=repeats, warmup=2)
    return [dict(network=name, mode="train", batch=batch, size=size, variant=label, layout=layout,
                 ms=t[(label, layout)].median_s * 1e3, min_ms=t[(label, layout)].min_s * 1e3)
            for label, layout in fns]


def eval_rows(name: str, size: int, batches, repeats: int) -> List[Dict[str, object]]:
    model, _ = _models(name, size)
    model.eval()
    nchw = copy.deepcopy(model)
    nchw.input_layout = None
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        xcl = x.contiguous(memory_format=torch.channels_last)
        fns = {"default (NCHW input)": lambda: model(x), "nchw": lambda: nchw(x), "channels_last": lambda: cl(xcl)}
        with torch.no_grad():
            for fn in fns.values():
                fn()  # measures the auto kernel choices
            t = compare(fns, x.device, repeats=repeats, warmup=2)
        rows += [dict(network=name, mode="eval", batch=batch, size=size, variant="pycnn", layout=k,
                      ms=v.median_s * 1e3, min_ms=v.min_s * 1e3) for k, v in t.items()]
    return rows


def summarize(rows):
    """Per (network, mode, batch): each variant's best layout, ratios against the best torchvision eager."""
    out = []
    for key in sorted({(r["network"], r["mode"], r["batch"]) for r in rows}):
        group = [r for r in rows if (r["network"], r["mode"], r["batch"]) == key]
        if key[1] == "train":
            best = {}
            for r in group:
                if r["variant"] not in best or r["ms"] < best[r["variant"]]["ms"]:
                    best[r["variant"]] = r
            base = best["torchvision"]["ms"]
            out += [dict(network=key[0], mode="train", batch=key[2], variant=v, layout=r["layout"], ms=r["ms"],
                         speedup_vs_torchvision=base / r["ms"]) for v, r in best.items()]
        else:
            best = min(r["ms"] for r in group if not r["layout"].startswith("default"))
            out += [dict(network=key[0], mode="eval", batch=key[2], variant="pycnn", layout=r["layout"], ms=r["ms"],
                         time_vs_best_layout=r["ms"] / best) for r in group]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=DEFAULT_NETWORKS)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-layouts", default="nchw,channels_last",
                        help="layouts the training step is timed in (each variant's best is reported)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    add_cpu_cache_argument(parser)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.allocator = apply_cpu_cache(args)
    names, layouts = args.networks.split(","), args.train_layouts.split(",")
    for name in names:
        if name not in NETWORKS:
            parser.error(f"unknown network {name!r}; expected some of {', '.join(NETWORKS)}")
    if not set(layouts) <= set(LAYOUTS):
        parser.error(f"--train-layouts: expected some of {', '.join(LAYOUTS)}")
    rows = []
    for name in names:
        if not args.skip_eval:
            rows += eval_rows(name, args.size, sorted({1, args.batch}), args.repeats)
            write(args, argv, rows)  # what is measured so far: compiling takes minutes on a busy machine
        if not args.skip_train:
            rows += train_rows(name, args.size, args.batch, args.repeats, layouts)
            write(args, argv, rows)
    summary = summarize(rows)
    for r in summary:
        ratio = (f"x{r['speedup_vs_torchvision']:.2f} vs torchvision eager" if r["mode"] == "train"
                 else f"{r['time_vs_best_layout']:.3f} x best layout's time")
        print(f"{r['network']:16} {r['mode']:5} b{r['batch']:<3} {r['variant']:28} {r['layout']:22} "
              f"{r['ms']:9.1f} ms  {ratio}")
    write(args, argv, rows)
    return 0


def write(args, argv, rows) -> None:
    if args.out:
        meta = dict(command="python -m pycnn.bench.train_step " + " ".join(argv if argv is not None else
                                                                          os.sys.argv[1:]),
                    torch=torch.__version__, machine=platform.processor() or platform.machine(),
                    threads=args.threads, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                    allocator=args.allocator,
                    note="machine shared with other jobs: compare ratios within one run")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows, summary=summarize(rows)), f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
