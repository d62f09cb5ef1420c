"""Parse and elaboration speed of every network in archs/, and what building RegNetX-32GF costs.

    python -m pycnn.bench.language [--repeat 20] [--no-build]

Parsing is measured without the per-file syntax-tree cache (the Lark parser itself is built once and cached,
as in normal use); times are medians over the repeats, as wall-clock and as process CPU time (on a shared
machine the wall time includes waiting for a core).
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

from ..dsl import parse as parse_module
from ..dsl.elaborate import Elaborator, library_dirs, load_program


def _median_ms(fn, repeat, clock=time.perf_counter):
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return statistics.median(times)


def bench_parse(arch_dir: str, repeat: int):
    start = time.perf_counter()
    parse_module._parser()
    build_ms = (time.perf_counter() - start) * 1e3
    rows = []
    for path in sorted(glob.glob(os.path.join(arch_dir, "*.arch"))):
        names = load_program(path).main_networks

        def parse_only():
            parse_module._parse_file_cached.cache_clear()
            load_program(path)

        for name in names:
            def both():
                parse_only()
                Elaborator(load_program(path)).network(name)
            total = _median_ms(both, repeat)
            cpu = _median_ms(both, repeat, time.process_time)
            rows.append((os.path.relpath(path), name, total, cpu))
    return build_ms, rows


def bench_build(repeat: int = 1):
    import torch

    from ..build import parse
    from ..lower import lower
    path = os.path.join(str(library_dirs()[1]), "regnetx32.arch")
    net = parse(path, "regnetx_32gf")
    elab_ms = _median_ms(lambda: parse(path, "regnetx_32gf"), max(repeat, 3))

    def on_meta():
        with torch.device("meta"):
            lower(net, init=False)

    meta_ms = _median_ms(on_meta, repeat)
    full_ms = _median_ms(lambda: lower(net, init=True), repeat)
    return net.total_params, elab_ms, meta_ms, full_ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--archs", default=str(library_dirs()[1]))
    ap.add_argument("--no-build", action="store_true", help="skip building RegNetX-32GF with torch")
    args = ap.parse_args(argv)
    build_ms, rows = bench_parse(args.archs, args.repeat)
    print(f"Lark LALR parser construction (once per process): {build_ms:.1f} ms")
    print("parse (no syntax-tree cache; libraries included) + elaborate, median per network")
    print(f"{'file':32s} {'network':22s} {'wall ms':>9s} {'cpu ms':>9s}")
    for path, name, wall, cpu in rows:
        print(f"{path:32s} {name:22s} {wall:9.2f} {cpu:9.2f}")
    for label, k in (("wall", 2), ("cpu", 3)):
        worst = max(rows, key=lambda r: r[k])
        print(f"{label}: slowest {worst[1]} ({worst[0]}) {worst[k]:.2f} ms; median "
              f"{statistics.median(r[k] for r in rows):.2f} ms over {len(rows)} networks")
    if not args.no_build:
        params, elab_ms, meta_ms, full_ms = bench_build()
        print(f"RegNetX-32GF ({params:,} parameters): parse+elaborate {elab_ms:.1f} ms, module construction "
              f"without tensors (meta device) {meta_ms:.0f} ms, build with weight initialization {full_ms:.0f} ms "
              f"({100 * (full_ms - meta_ms) / full_ms:.0f}% of it allocating and initializing weights)")


if __name__ == "__main__":
    main()
