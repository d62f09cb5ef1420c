"""`pycnn explore` (parser and command; pycnn.cli adds it)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import positive_int

_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}


def _amount(text: str) -> float:
    t = text.strip().lower()
    scale = _UNITS.get(t[-1:], 1.0)
    return float(t[:-1] if t[-1:] in _UNITS else t) * scale


def _window(text: str):
    try:
        lo, hi = (_amount(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a window like 1M:3M, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"empty window {text!r}")
    return lo, hi


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a latency in ms > 0, got {text[:20]!r}")
    return value


def cmd_explore(args) -> int:
    from ..training.cli import errors, recipe_from_args
    from . import report
    from .run import explore, read_trials
    from .space import SpaceError
    try:
        if args.compare:
            runs = {Path(p).stem: read_trials(p) for p in args.compare}
            png = Path(args.out or ".") / ("edf-" + "-".join(runs) + ".png") if not str(args.out or "").endswith(".png") \
                else Path(args.out)
            png.parent.mkdir(parents=True, exist_ok=True)
            report.plot_edfs(png, runs)
            for name, trials in runs.items():
                e = report.errors(trials)
                print(f"{name}: n={len(e)}, min={e.min():.2f}, mean={e.mean():.2f}" if len(e) else f"{name}: no trials")
            print(f"wrote {png}")
            return 0
        if not args.space:
            print("pycnn explore: give a design space (.arch) or --compare A.jsonl B.jsonl ...", file=sys.stderr)
            return 2
        recipe = recipe_from_args(args)
        if args.epochs is None:
            recipe.epochs = 1
        out = Path(args.out or "explore")
        jsonl = explore(args.space, args.samples, out, space=args.space_name, data=args.data, data_dir=args.data_dir,
                        recipe=recipe,
                        seed=args.seed, input=args.input, flops=args.flops, params=args.params,
                        executor=args.executor, workers=args.workers, address=args.address,
                        gpus_per_trial=args.gpus_per_trial, backend=args.backend, kernels=args.kernels,
                        threads=args.threads, latency=args.latency, max_latency_ms=args.max_latency_ms,
                        latency_cache=args.latency_cache, latency_repeats=args.latency_repeats,
                        whole_draws=args.whole_draws)
        trials = read_trials(jsonl)
        png = out / f"edf-{jsonl.stem}.png"
        report.plot_edfs(png, {jsonl.stem: trials})
        print(report.table(trials))
        print(report.fit_report(trials))
        written = [str(jsonl), str(png)]
        if any(t.get("latency_ms") is not None for t in trials):
            latency_png = out / f"latency-{jsonl.stem}.png"
            report.plot_latency(latency_png, trials, args.max_latency_ms, jsonl.stem)
            print(report.latency_report(trials, args.max_latency_ms))
            written.append(str(latency_png))
        print(f"wrote {', '.join(written)}")
        return 0
    except errors() + (SpaceError,) as e:
        print(f"pycnn explore: {e}", file=sys.stderr)
        return 2


def add_parsers(sub) -> None:
    from ..training.cli import _shape, add_data_arguments, add_recipe_arguments
    p = sub.add_parser("explore", help="sample networks from a design space, train each briefly, compare error EDFs",
                       description="Samples N networks of a design space (a `space` of an .arch file, archs/spaces/), "
                                   "trains each with "
                                   "`pycnn train`'s machinery, appends each trial to OUT/<space>.jsonl (a rerun "
                                   "skips finished trials) and plots the error EDF. --compare draws several "
                                   "explorations' EDFs on one chart.")
    p.add_argument("space", nargs="?", help="the .arch file of a design space, e.g. archs/spaces/anynetx_a.arch")
    p.add_argument("--space", dest="space_name", metavar="NAME",
                   help="which `space` of the file (default: the first)")
    p.add_argument("--samples", type=positive_int, default=32)
    add_data_arguments(p)
    p.add_argument("--input", type=_shape, help="override the networks' input shape, e.g. 1x16x16")
    p.add_argument("--flops", type=_window, help="FLOPs (multiply-adds) window, e.g. 1M:3M")
    p.add_argument("--params", type=_window, help="parameter-count window, e.g. 50k:500k")
    p.add_argument("--whole-draws", action="store_true",
                   help="refuse whole draws that break a constraint: the samples of pycnn before constraints were "
                        "checked while drawing (the same law, other networks for a seed)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=positive_int, default=1, help="trials at once (processes or Ray tasks)")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--threads", type=int, help="CPU threads per trial (default: the cores / workers)")
    p.add_argument("--backend", choices=["fused", "reference"], default="fused")
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None)
    p.add_argument("--out", help="output folder (default explore/); with --compare: the PNG or its folder")
    p.add_argument("--compare", nargs="+", metavar="JSONL", help="draw these explorations' EDFs on one chart")
    p.add_argument("--latency", metavar="ENGINE[@BATCH]",
                   help="measure every candidate on this engine first (pycnn, pycnn-compile, torch, compile, "
                        "onnxruntime, openvino; batch default 1) and draw error against latency")
    p.add_argument("--max-latency-ms", type=_budget, metavar="MS",
                   help="train only the candidates within this latency (default engine pycnn@1)")
    p.add_argument("--latency-cache", metavar="JSON",
                   help="the latency cache file (default <cache>/latency.json, cache = $PYCNN_CACHE_DIR or "
                        "~/.cache/pycnn)")
    p.add_argument("--latency-repeats", type=positive_int, default=10, help="timed rounds per candidate (default 10)")
    add_recipe_arguments(p)
    p.set_defaults(run=cmd_explore)
