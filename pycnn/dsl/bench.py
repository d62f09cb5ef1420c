"""Parse and elaboration speed of every network in archs/, and what building RegNetX-32GF costs.

    python -m pycnn.dsl.bench [--repeat 20] [--no-build]

Parsing is measured without the per-file syntax-tree cache (the Lark parser itself is built once and cached,
as in normal use); times are medians over the repeats.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

from . import parse as parse_module
from .elaborate import Elaborator, library_dirs, load_program


def _median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
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

        parse_ms = _median_ms(parse_only, repeat)
        program = load_program(path)
        for name in names:
            elab_ms = _median_ms(lambda: Elaborator(program).network(name), repeat)
            rows.append((os.path.relpath(path), name, parse_ms, elab_ms, parse_ms + elab_ms))
    return build_ms, rows


def bench_build(repeat: int = 1):
    import torch
    import pycnn
    from ..lower import lower
    path = os.path.join(str(library_dirs()[1]), "regnetx32.arch")
    net = pycnn.parse(path, "regnetx_32gf")
    elab_ms = _median_ms(lambda: pycnn.parse(path, "regnetx_32gf"), max(repeat, 3))

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
    print(f"{'file':32s} {'network':22s} {'parse ms':>9s} {'elab ms':>9s} {'total ms':>9s}")
    for path, name, p, e, t in rows:
        print(f"{path:32s} {name:22s} {p:9.2f} {e:9.2f} {t:9.2f}")
    worst = max(rows, key=lambda r: r[4])
    print(f"slowest: {worst[1]} ({worst[0]}) {worst[4]:.2f} ms; median {statistics.median(r[4] for r in rows):.2f} ms "
          f"over {len(rows)} networks")
    if not args.no_build:
        params, elab_ms, meta_ms, full_ms = bench_build()
        print(f"RegNetX-32GF ({params:,} parameters): parse+elaborate {elab_ms:.1f} ms, module construction "
              f"without tensors (meta device) {meta_ms:.0f} ms, build with weight initialization {full_ms:.0f} ms "
              f"({100 * (full_ms - meta_ms) / full_ms:.0f}% of it allocating and initializing weights)")


if __name__ == "__main__":
    main()
