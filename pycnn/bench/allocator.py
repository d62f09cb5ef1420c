"""What glibc's page faults cost a CPU training step, and what pycnn's caching CPU allocator gives back:
torchvision eager and pycnn eager, each with glibc's malloc and with `pycnn.allocator.enable_cpu_cache()`,
all four timed interleaved in one run (the cache switched on and off between calls, its blocks kept meanwhile;
each timed call right after an untimed one of the same row, so every row runs warm in its own allocator).

    PYTHONPATH=$PWD python -m pycnn.bench.allocator
        [--networks mobilenet_v2,efficientnet_b0,regnet_x_400mf[,resnext50_32x4d]]
        [--size 224] [--batch 8] [--threads 2] [--repeats 5] [--eval | --scope [--compiled]] [--out DIR]

Training: one SGD step (zero_grad, forward, cross-entropy, backward, step), model and input channels_last.
--eval adds inference rows (no_grad) at the same batch. First, what a fresh allocation costs: cloning a 36.8 MiB
tensor against copying it into memory in use. Prints and writes (with --out) allocator-<date>.json, .md and .png:
ms per row, the cache's speedup per variant, and pycnn against torchvision under each allocator.

--scope instead: inference only, as fresh processes run it (glibc's mmap threshold still low: training rows or
another variant's frees would have raised it), pycnn with and without its forward's cache scope (pycnn.allocator)
and torchvision, each in a process of its own, called in turn; ms and page faults per call
(scope-<date>-b<batch>.json/.md). --compiled adds torch.compile of each (pycnn's graph with and without the
scope it holds), so compiled and eager are compared as fresh processes run them rather than after each other's
heap history.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from .. import allocator
from ..timing import compare
from .train_step import DEFAULT_NETWORKS, NETWORKS, _models

ALLOCATORS = ("glibc", "cpu cache")


def _use(which: str) -> None:
    """glibc: also pycnn's forwards (their cache scope off); cpu cache: on for everything."""
    allocator.set_network_cache(which == "cpu cache")
    if which == "cpu cache":
        allocator.enable_cpu_cache()
    else:
        allocator.disable_cpu_cache(keep_cached=True)


def _restore(network_cache: bool) -> None:
    allocator.disable_cpu_cache()
    allocator.set_network_cache(network_cache)


def network_rows(name: str, size: int, batch: int, repeats: int, modes) -> List[Dict[str, object]]:
    pycnn_model, tv = _models(name, size)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,))
    fns = {}
    for label, base in (("torchvision", tv), ("pycnn", pycnn_model)):
        for mode in modes:
            m = copy.deepcopy(base).to(memory_format=torch.channels_last).train(mode == "train")
            if mode == "train":
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

                def run(m=m, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(m(x), target).backward()
                    opt.step()
            else:
                def run(m=m):
                    with torch.no_grad():
                        m(x)
            for which in ALLOCATORS:
                fns[(label, mode, which)] = lambda run=run, which=which: (_use(which), run())
    network_cache = allocator.network_cache()
    try:
        t = compare(fns, torch.device("cpu"), repeats=repeats, warmup=2, warm_each=True)
        faults = {key: faults_per_call(fn) for key, fn in fns.items()}
    finally:
        _restore(network_cache)
    return [dict(network=name, variant=label, mode=mode, allocator=which, batch=batch, size=size,
                 ms=timing.median_s * 1e3, min_ms=timing.min_s * 1e3, faults=faults[(label, mode, which)])
            for (label, mode, which), timing in t.items()]


def minor_faults() -> int:
    """The process's minor page faults so far: each a fresh page the kernel had to map on first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_per_call(fn, calls: int = 3) -> float:
    """Minor page faults per call of fn (after one call), untimed: the cost the allocators' timings differ by."""
    fn()
    before = minor_faults()
    for _ in range(calls):
        fn()
    return (minor_faults() - before) / calls


SCOPE_VARIANTS = (("pycnn", "scope"), ("pycnn", "no scope"), ("torchvision", "glibc"))
COMPILED_VARIANTS = (("torch.compile(pycnn)", "scope"), ("torch.compile(pycnn)", "no scope"),
                     ("torch.compile(torchvision)", "glibc"))
WORKER_TIMEOUT_S = 600  # one call of a worker, its model's construction included


def _scope_worker(conn, name: str, size: int, batch: int, variant, threads: int,
                  compiled_scope_min_bytes: Optional[int] = None) -> None:
    """One variant of scope_rows in a process of its own: on each request an untimed call, then a timed one;
    replies (seconds, minor page faults of the timed call, the cache's hits so far)."""
    torch.set_num_threads(threads)
    label, which = variant
    compiled = label.startswith("torch.compile(")
    base = label[len("torch.compile("):-1] if compiled else label
    pycnn_model, tv = _models(name, size)
    model = (pycnn_model if base == "pycnn" else tv.to(memory_format=torch.channels_last)).eval()
    if compiled:
        model = torch.compile(model)  # compiled on the first (untimed) call
    allocator.set_network_cache(which == "scope")
    if compiled_scope_min_bytes is not None:
        allocator.COMPILED_SCOPE_MIN_ACTIVATION_BYTES = compiled_scope_min_bytes
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        while conn.recv():
            model(x)
            faults = minor_faults()
            start = time.perf_counter()
            model(x)
            elapsed = time.perf_counter() - start
            conn.send((elapsed, minor_faults() - faults, allocator.cpu_cache_stats()["hits"]))


def scope_rows(name: str, size: int, batch: int, repeats: int, threads: int, variants=SCOPE_VARIANTS,
               compiled_scope_min_bytes: Optional[int] = None) -> List[Dict[str, object]]:
    """Inference as fresh processes run it: pycnn eval with its forward's cache scope (the default) and without it
    (PYCNN_CPU_CACHE=0), torchvision eval (glibc) and any other `variants` (COMPILED_VARIANTS), each in a process
    of its own (glibc's heap state is the process's: another variant's frees would raise its mmap threshold),
    called in turn round by round (one process runs at a time); medians of ms and page faults per call, and the
    cache's hits in all (0: nothing went through a scope; a compiled graph holds one where the network's first
    activation has allocator.COMPILED_SCOPE_MIN_ACTIVATION_BYTES and more, or `compiled_scope_min_bytes`)."""
    import multiprocessing
    import multiprocessing.connection
    ctx = multiprocessing.get_context("spawn")
    workers = {}
    try:
        for variant in variants:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_scope_worker, args=(child, name, size, batch, variant, threads,
                                                           compiled_scope_min_bytes), daemon=True)
            proc.start()
            child.close()  # the worker's end: its death then reads as EOF here
            workers[variant] = (parent, proc)
        samples = {variant: [] for variant in variants}
        hits = {}
        for round_ in range(repeats + 2):  # two warm-up rounds
            for variant, (conn, proc) in workers.items():
                conn.send(True)
                if not multiprocessing.connection.wait([conn, proc.sentinel], timeout=WORKER_TIMEOUT_S) \
                        or not conn.poll():
                    raise RuntimeError(f"the {' '.join(variant)} worker for {name} stopped answering "
                                       f"(exit code {proc.exitcode})")
                elapsed, faults, hits[variant] = conn.recv()
                if round_ >= 2:
                    samples[variant].append((elapsed, faults))
    finally:
        for conn, proc in workers.values():
            try:
                conn.send(False)
            except OSError:
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return [dict(network=name, variant=label, allocator=which, batch=batch, size=size,
                 ms=statistics.median_low([e for e, _ in samples[(label, which)]]) * 1e3,
                 faults=statistics.median_low([f for _, f in samples[(label, which)]]),
                 cache_hits=hits[(label, which)])
            for label, which in variants]


def scope_markdown(rows, meta) -> str:
    lines = ["# Inference in a fresh process: pycnn's forward scope", "", f"`{meta['command']}`", "",
             f"{meta['machine']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}; medians of calls "
             "interleaved across the rows of a network.", "",
             "| network | batch | variant | allocator | ms | page faults a call | cache hits | torchvision / this |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tv = next(q["ms"] for q in rows if q["network"] == r["network"] and q["variant"] == "torchvision")
        lines.append(f"| {r['network']} | {r['batch']} | {r['variant']} | {r['allocator']} | {r['ms']:.2f} | "
                     f"{r['faults']:.0f} | {r['cache_hits']} | {tv / r['ms']:.2f}x |")
    return "\n".join(lines) + "\n"


def fresh_allocation_rows(repeats: int, shape=(8, 96, 112, 112)) -> List[Dict[str, object]]:
    """What a fresh allocation costs: cloning a tensor (new memory, first written by the copy) against copying
    it into memory written before, under each allocator. The default shape is MobileNetV2's expanded activation
    at batch 8, 224x224 (36.8 MiB, above glibc's largest mmap threshold)."""
    x = torch.randn(shape)
    out = torch.empty_like(x)
    fns = {(op, which): (lambda fn=fn, which=which: (_use(which), fn()))
           for op, fn in (("clone (new memory)", x.clone), ("copy_ (memory in use)", lambda: out.copy_(x)))
           for which in ALLOCATORS}
    network_cache = allocator.network_cache()
    try:
        t = compare(fns, torch.device("cpu"), repeats=max(repeats, 5), warmup=2, warm_each=True)
    finally:
        _restore(network_cache)
    mib = x.numel() * x.element_size() / 2**20
    return [dict(op=op, allocator=which, mib=mib, ms=t[(op, which)].median_s * 1e3) for op, which in fns]


def summarize(rows) -> List[Dict[str, object]]:
    """Per network, mode and variant: glibc ms, cache ms, the cache's speedup; pycnn's speedup over torchvision
    under each allocator."""
    ms = {(r["network"], r["mode"], r["variant"], r["allocator"]): r["ms"] for r in rows}
    faults = {(r["network"], r["mode"], r["variant"], r["allocator"]): r["faults"] for r in rows}
    out = []
    for network, mode, variant in sorted({k[:3] for k in ms}):
        glibc, cached = ms[(network, mode, variant, "glibc")], ms[(network, mode, variant, "cpu cache")]
        tv = {a: ms.get((network, mode, "torchvision", a)) for a in ALLOCATORS}
        out.append(dict(network=network, mode=mode, variant=variant, glibc_ms=glibc, cache_ms=cached,
                        glibc_faults=faults[(network, mode, variant, "glibc")],
                        cache_faults=faults[(network, mode, variant, "cpu cache")],
                        cache_speedup=glibc / cached,
                        vs_torchvision_glibc=tv["glibc"] / glibc if tv["glibc"] else None,
                        vs_torchvision_cache=tv["cpu cache"] / cached if tv["cpu cache"] else None))
    return out


def markdown(summary, fresh_allocation, meta) -> str:
    lines = [f"# CPU allocator: glibc vs pycnn's cache", "", f"`{meta['command']}`", "",
             f"{meta['machine']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}; medians of "
             "calls interleaved across all rows of a table.", "",
             f"One {fresh_allocation[0]['mib']:.1f} MiB tensor:", "", "| op | glibc ms | cache ms |", "|---|---|---|"]
    for op in dict.fromkeys(r["op"] for r in fresh_allocation):
        ms = {r["allocator"]: r["ms"] for r in fresh_allocation if r["op"] == op}
        lines.append(f"| {op} | {ms['glibc']:.2f} | {ms['cpu cache']:.2f} |")
    lines += ["", "Networks, batch and size as in the command:", "",
              "| network | mode | variant | glibc ms | cache ms | page faults a call (glibc / cache) | cache speedup | "
              "vs torchvision (glibc) | vs torchvision (cache) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['network']} | {r['mode']} | {r['variant']} | {r['glibc_ms']:.1f} | {r['cache_ms']:.1f} | "
                     f"{r['glibc_faults']:.0f} / {r['cache_faults']:.0f} | "
                     f"{r['cache_speedup']:.2f}x | {r['vs_torchvision_glibc']:.2f}x | "
                     f"{r['vs_torchvision_cache']:.2f}x |")
    return "\n".join(lines) + "\n"


def chart(summary, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['network']}\n{r['mode']} {r['variant']}" for r in summary]
    xs = range(len(summary))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(summary)), 4))
    ax.bar([x - 0.2 for x in xs], [r["glibc_ms"] for r in summary], width=0.4, label="glibc malloc")
    ax.bar([x + 0.2 for x in xs], [r["cache_ms"] for r in summary], width=0.4, label="pycnn CPU cache")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ms per call (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write(out: str, name: str, data, text: str) -> str:
    """out/name.json and out/name.md; returns out/name."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, name)
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)
    return stem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.allocator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=DEFAULT_NETWORKS)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--eval", action="store_true", help="also time inference (no_grad) at --batch")
    mode.add_argument("--scope", action="store_true",
                      help="only inference with and without pycnn's forward scope, each variant in a fresh process")
    parser.add_argument("--compiled", action="store_true",
                        help="with --scope: add torch.compile of pycnn (with and without its scope) and of "
                             "torchvision, each in its own process")
    parser.add_argument("--compiled-scope-min-bytes", type=int, metavar="N",
                        help="with --compiled: the first activation's size from which pycnn's compiled graph holds "
                             "the scope (default: pycnn.allocator.COMPILED_SCOPE_MIN_ACTIVATION_BYTES)")
    parser.add_argument("--out", help="folder for allocator-<date>.json/.md/.png")
    args = parser.parse_args(argv)
    names = args.networks.split(",")
    for name in names:
        if name not in NETWORKS:
            parser.error(f"unknown network {name!r}; expected some of {', '.join(NETWORKS)}")
    if min(args.size, args.batch, args.threads, args.repeats) < 1:
        parser.error("--size, --batch, --threads and --repeats must be positive")
    if args.compiled and not args.scope:
        parser.error("--compiled goes with --scope")
    if args.compiled_scope_min_bytes is not None and not args.compiled:
        parser.error("--compiled-scope-min-bytes goes with --compiled")
    torch.set_num_threads(args.threads)
    meta = dict(command="python -m pycnn.bench.allocator " + " ".join(argv if argv is not None else os.sys.argv[1:]),
                torch=torch.__version__, machine=platform.processor() or platform.machine(), threads=args.threads,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if args.scope:
        variants = SCOPE_VARIANTS + (COMPILED_VARIANTS if args.compiled else ())
        rows = [r for name in names
                for r in scope_rows(name, args.size, args.batch, args.repeats, args.threads, variants,
                                    args.compiled_scope_min_bytes)]
        text = scope_markdown(rows, meta)
        print(text)
        if args.out:
            _write(args.out, f"scope-{time.strftime('%Y-%m-%d')}-b{args.batch}", dict(meta=meta, rows=rows), text)
        return 0
    modes = ("train", "eval") if args.eval else ("train",)
    fresh_allocation = fresh_allocation_rows(args.repeats)
    rows = []
    for name in names:
        rows += network_rows(name, args.size, args.batch, args.repeats, modes)
    summary = summarize(rows)
    text = markdown(summary, fresh_allocation, meta)
    print(text)
    if args.out:
        stem = _write(args.out, f"allocator-{time.strftime('%Y-%m-%d')}",
                      dict(meta=meta, page_faults=fresh_allocation, rows=rows, summary=summary), text)
        chart(summary, stem + ".png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
