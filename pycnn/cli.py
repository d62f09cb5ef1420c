"""The `pycnn` command: summary, check and bench.

    pycnn summary FILE.arch [--network NAME] [--input 3x224x224] [--classes N] [--kernels auto|pycnn|torch]
    pycnn check FILE.arch ...
    pycnn bench ops [--op dwconv|gconv|se|bn_act|all] [--arch FILE.arch[:NETWORK] ...] [--network NAME ...]
                    [--device ...] [--batch N ...] [--repeats N] [--threads N] [--compile] [--quick] [--out DIR]
    pycnn bench model FILE.arch [--batch 64] [--dtype fp16] [--channels-last] [--train] [--compile] [--out DIR]
    pycnn train FILE.arch [--network N] [--data digits] [--input CxHxW] [--out RUN_DIR] [--resume RUN_DIR] [recipe]
    pycnn eval RUN_DIR|CHECKPOINT [--data SPEC]
    pycnn explore SPACE.toml --samples N [--epochs E] [--flops LO:HI] [--executor local|ray] | --compare A.jsonl ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _shape(text: str):
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 3x224x224, got {text!r}")


def _overrides(args) -> dict:
    out = {}
    if getattr(args, "input", None):
        out["input"] = args.input
    if getattr(args, "classes", None) is not None:
        out["classes"] = args.classes
    return out


def cmd_summary(args) -> int:
    import torch

    import pycnn
    try:
        s = pycnn.summary(args.file, args.network, show=False, **_overrides(args))
        with torch.device("meta"):
            kernels = pycnn.compile(args.file, args.network, kernels=args.kernels, **_overrides(args)).kernels()
    except pycnn.ArchError as e:
        print(e, file=sys.stderr)
        return 1
    rows = [(name, op, "x".join(map(str, shape)), f"{params:,}", f"{flops:,}", kernels.get(name, "-"))
            for name, op, shape, params, flops in s.rows]
    header = ("layer", "op", "output", "params", "FLOPs", "kernel")
    total = (f"total: {s.total_params:,} parameters, {s.total_flops:,} FLOPs (multiply-adds) = "
             f"{s.total_flops / 1e9:.3f} GFLOPs")
    title = f"network {s.network}, input {'x'.join(map(str, s.input_shape))}"
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
            table = Table(title=title, caption=total)
            for i, h in enumerate(header):
                table.add_column(h, justify="right" if i in (3, 4) else "left")
            for r in rows:
                table.add_row(*r)
            Console().print(table)
            return 0
        except ImportError:
            pass
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) if i in (3, 4) else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    print(title)
    print(line(header))
    for r in rows:
        print(line(r))
    print(total)
    return 0


def cmd_check(args) -> int:
    import pycnn
    failed = 0
    for path in args.files:
        try:
            net = pycnn.parse(path)
            print(f"{path}: ok ({net.name})")
        except pycnn.ArchError as e:
            failed += 1
            print(e, file=sys.stderr)
        except OSError as e:
            failed += 1
            print(f"{path}: {e.strerror}", file=sys.stderr)
    return 1 if failed else 0


def _progress(total: int, label: str):
    try:
        from rich.progress import Progress
        progress = Progress(disable=not sys.stderr.isatty(), transient=True)
        return progress, progress.add_task(label, total=total)
    except ImportError:
        return None, None


def cmd_bench_ops(args) -> int:
    import torch

    from .bench import ops, report
    try:
        s = ops.settings(args)
    except pycnn_errors() as e:
        print(e, file=sys.stderr)
        return 1
    device = s["device"]
    names = ["bn_act", "dwconv", "gconv", "se"] if args.op == "all" else [args.op]
    dtypes = [DTYPES[d] for d in args.dtype] if args.dtype else [None]
    rows: List[dict] = []
    progress, task = _progress(len(names) * len(dtypes), "bench ops")
    try:
        if progress:
            progress.start()
        for name in names:
            for dtype in dtypes:
                for r in ops.run(name, device, getattr(torch, dtype) if dtype else None, s["repeats"], s["batches"],
                                 s["shapes"], s["with_compile"]):
                    rows.append(dict(op=name, dtype=dtype or ("float16" if device.type == "cuda" else "float32"),
                                     **r))
                if progress:
                    progress.advance(task)
    except KeyboardInterrupt:
        print(f"interrupted: keeping the {len(rows)} measured rows", file=sys.stderr)
    finally:
        if progress:
            progress.stop()
    if args.out and rows:
        columns = ["op", "networks", "shape", "act", "layout", "mode", "pycnn_ms", "eager_ms", "speedup"]
        if s["with_compile"]:
            columns[-1:-1] = ["compile_ms"]
            columns += ["speedup_vs_compile", "compile_s"]
        if len(dtypes) > 1:
            columns.insert(1, "dtype")
        env = report.environment(device)
        if s["with_compile"]:
            env["compile_backend"] = ops.compile_backend()
        paths = report.write_results(Path(args.out), f"ops-{'-'.join(names) if len(names) < 4 else 'all'}",
                                     env, rows, columns, ["shape", "act"],
                                     panel_keys=["op", "dtype"], column_key="mode", series_key="layout")
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def pycnn_errors():
    import pycnn
    return (pycnn.ArchError, OSError)


def cmd_bench_model(args) -> int:
    import torch

    import pycnn
    from .bench import report
    from .bench.model import bench_model, best_layout_summary
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, DTYPES[args.dtype])
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: List[dict] = []
    try:
        for path in args.files:
            try:
                model = pycnn.compile(path, args.network, kernels=args.kernels, **_overrides(args))
            except pycnn.ArchError as e:
                print(e, file=sys.stderr)
                return 1
            name = model.ir.name
            layouts = {"both": ["nchw", "channels_last"], "nchw": ["nchw"], "channels_last": ["channels_last"]}[
                "channels_last" if args.channels_last else args.layout]
            measured = bench_model(model, model.ir.input_shape, args.batch, device, dtype, layouts, args.train,
                                   args.compile, args.repeats, torchvision=args.torchvision)
            for r in measured:
                rows.append(dict(network=name, **r))
                memory = "" if r["peak_mib"] is None else f"  peak {r['peak_mib']:.0f} MiB"
                memory += "" if r["saved_mib"] is None else f"  saved for backward {r['saved_mib']:.1f} MiB"
                print(f"{name:>20} {r['variant']:>14} {r['mode']:>5} batch {r['batch']:<4} {r['dtype']:>8} "
                      f"{r['layout']:>13}  {r['ms']:9.2f} ms  {r['images_per_s']:9.1f} img/s  "
                      f"pycnn speedup x{r['speedup']:5.2f}{memory}", flush=True)
            if len(layouts) > 1:
                for variant, r in best_layout_summary(measured).items():
                    print(f"{name:>20} best layout: {variant:>14} {r['layout']:>13} {r['ms']:9.2f} ms  "
                          f"pycnn speedup x{r['vs_pycnn']:.2f}", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted: keeping the {len(rows)} measured rows", file=sys.stderr)
    if args.out and rows:
        name = "-".join(["model"] + sorted({r["network"] for r in rows}) + ["train" if args.train else "eval"])
        paths = report.write_results(Path(args.out), name,
                                     report.environment(device), rows,
                                     ["network", "variant", "mode", "batch", "dtype", "layout", "ms", "images_per_s",
                                      "peak_mib", "saved_mib", "speedup"], ["network", "variant", "mode"],
                                     series_key="layout")
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycnn", description="CNN architectures as text, on fused kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="per-layer table: output shape, params, FLOPs, kernel; totals")
    p.add_argument("file")
    p.add_argument("--network", help="which network of the file (default: the first)")
    p.add_argument("--input", type=_shape, help="input shape, e.g. 3x224x224")
    p.add_argument("--classes", type=int)
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None,
                   help="who runs the fused ops (default $PYCNN_KERNELS or auto: measured per shape on first run)")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("check", help="parse and elaborate .arch files; errors as file:line:column with a caret")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=cmd_check)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("ops", help="fused ops against eager PyTorch (and torch.compile) over the layer shapes of networks",
                         description="Times pycnn's fused ops (bn_act, dwconv, gconv, se) against the eager PyTorch "
                                     "composition they replace and, with --compile, torch.compile of it, over the layer "
                                     "shapes that occur in the given networks (identical shapes once), NCHW and "
                                     "channels_last, forward and forward+backward.")
    p.add_argument("--op", default="all", choices=["all", "bn_act", "dwconv", "gconv", "se"])
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), help="default fp16 on CUDA, fp32 on the CPU")
    from .bench.ops import add_arguments
    add_arguments(p)
    p.add_argument("--out", help="directory for the JSON, markdown and PNG results")
    p.set_defaults(run=cmd_bench_ops)

    p = bench.add_parser("model", help="images/s and memory: pycnn vs eager [vs torchvision] [vs torch.compile]")
    p.add_argument("files", nargs="+")
    p.add_argument("--network")
    p.add_argument("--input", type=_shape)
    p.add_argument("--classes", type=int)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device")
    p.add_argument("--layout", choices=["nchw", "channels_last", "both"], default="nchw",
                   help="memory layout(s) of model and input; both: every variant in each, plus its best")
    p.add_argument("--channels-last", action="store_true", help="same as --layout channels_last")
    p.add_argument("--train", action="store_true", help="forward + backward instead of inference")
    p.add_argument("--compile", action="store_true",
                   help="add torch.compile of the baseline (torchvision's model if --torchvision, else eager)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; default torch's)")
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None,
                   help="who runs pycnn's fused ops (default $PYCNN_KERNELS or auto: measured in the warm-up)")
    p.add_argument("--torchvision", metavar="NAME",
                   help="add torchvision.models.NAME with the same weights (e.g. mobilenet_v2, resnext50_32x4d)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", help="directory for the JSON, markdown and PNG results")
    p.set_defaults(run=cmd_bench_model)

    from .training.cli import add_parsers as add_training_parsers  # train, eval
    add_training_parsers(sub)
    from .explore.cli import add_parsers as add_explore_parsers
    add_explore_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `pycnn summary ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
