"""The `pycnn` command: summary, check, bench, export, train, eval and explore.

    pycnn summary FILE.arch [--network NAME] [--input 3x224x224] [--classes N] [--kernels auto|pycnn|torch]
    pycnn check FILE.arch ...
    pycnn bench ops [--op dwconv|gconv|se|bn_act|all] [--arch FILE.arch[:NETWORK] ...] [--network NAME ...]
                    [--device ...] [--batch N ...] [--repeats N] [--threads N] [--compile] [--quick] [--out DIR]
    pycnn bench model FILE.arch [--batch 64] [--dtype fp16] [--channels-last] [--train] [--compile] [--out DIR]
    pycnn bench model FILE.arch --engines [torch,compile,pycnn,pycnn-compile,onnxruntime,openvino] [--threads N]
    pycnn export FILE.arch|NAME|CKPT.safetensors [--network NAME] (--onnx OUT.onnx | --aoti OUT.pt2)
    pycnn train FILE.arch [--network N] [--data digits] [--input CxHxW] [--out RUN_DIR] [--resume RUN_DIR] [recipe]
    pycnn eval RUN_DIR|CHECKPOINT [--data SPEC]
    pycnn explore SPACE.arch [--space NAME] --samples N [--epochs E] [--flops LO:HI] [--executor local|ray] | --compare A.jsonl ...
    every network command: --set name=value (network parameters) and its shortcuts --input CxHxW, --classes N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .argtypes import arch_file as _arch_file, device as _device, out_dir as _out_dir
from .argtypes import positive_int as _positive_int, shape as _shape

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2 (argparse's usage block is for --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> int:
    """A bad argument found after parsing (a device that is not there, an unknown model): one line, status 2."""
    print(f"pycnn: error: {message}", file=sys.stderr)
    return 2


def _kernel_mode_error(args) -> Optional[str]:
    """The error in --kernels / $PYCNN_KERNELS, if any (checked before any work starts)."""
    from .dispatch import resolve_kernels
    try:
        resolve_kernels(getattr(args, "kernels", None))
    except ValueError as e:
        return str(e)
    return None


def _assignment(text: str):
    from .dsl.errors import ArchError
    from .dsl.literal import parse_assignment
    try:
        return parse_assignment(text)
    except ArchError as e:
        raise argparse.ArgumentTypeError(str(e))


def _add_overrides(p, shortcuts: bool = True) -> None:
    """--set name=value (repeatable) and the shortcuts --input, --classes: network parameter overrides."""
    p.add_argument("--set", action="append", default=[], type=_assignment, metavar="NAME=VALUE",
                   help="override a network parameter (the language's values: 10, 1.25, true, 3x160x160, "
                        "\"pycls\", xblock); repeatable")
    if shortcuts:
        p.add_argument("--input", type=_shape, help="input shape, e.g. 3x224x224 (same as --set input=...)")
        p.add_argument("--classes", type=_positive_int, help="number of classes (same as --set classes=N)")


def _overrides(args) -> dict:
    out = dict(getattr(args, "set", None) or [])
    if getattr(args, "input", None):
        out["input"] = args.input
    if getattr(args, "classes", None) is not None:
        out["classes"] = args.classes
    return out


def cmd_summary(args) -> int:
    import torch

    import pycnn
    if (error := _kernel_mode_error(args)):
        return _fail(error)
    try:
        _zoo_name(args)
    except pycnn.ArchError as e:
        return _fail(str(e))
    if not Path(args.file).is_file():
        return _fail(f"no such file: {args.file[:200]}")
    args.file = Path(args.file)  # a path, never parsed as source text
    try:
        s = pycnn.summary(args.file, args.network, show=False, **_overrides(args))
        with torch.device("meta"):
            # the inference plan (a model in training runs "folded" convs as the conv, then pycnn's BatchNorm+act)
            kernels = pycnn.compile(args.file, args.network, kernels=args.kernels, **_overrides(args)).eval().kernels()
    except pycnn.ArchError as e:
        print(e, file=sys.stderr)
        return 1
    if args.plot:
        from .summary import plot
        try:
            plot(s, args.plot)
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    s.kernels = kernels
    if not args.full:
        print(s.table(args.depth))
    elif sys.stdout.isatty() and _print_rich_table(s):
        pass
    else:
        print(s)
    if args.kernels:  # which build of pycnn's CPU kernels those layers run on this machine (a note on stderr)
        info = pycnn.build_info()
        print(f"CPU kernels: {info['cpu_isa']} variant (best on this CPU: {info['cpu_isa_best']}; "
              "PYCNN_CPU_ISA=baseline|avx2|avx512 caps it)", file=sys.stderr)  # stdout stays the table
    return 0


def _print_rich_table(s) -> bool:
    """The full summary table drawn by rich (False without rich)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    title, header, rows, total = s.full_table()
    table = Table(title=title, caption=total)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if i in s.NUMERIC else "left")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    return True
def cmd_check(args) -> int:
    import pycnn
    failed = 0
    for path in args.files:
        try:
            net = pycnn.parse(Path(path), args.network, **_overrides(args))  # a path, never parsed as text
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
    args.overrides = _overrides(args)
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
                                 s["shapes"], s["with_compile"], s["layouts"], s["cpu_isas"]):
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
        if any("folded_ms" in r for r in rows):  # gconv's forward rows: against the BatchNorm folded into the conv
            columns += ["folded_ms", "speedup_vs_folded"]
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


def _engine_list(text: str) -> List[str]:
    """--engines: comma-separated variants of pycnn.deploy.VARIANTS, or all (every installed one)."""
    from .deploy import VARIANTS
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return names
    for n in names:
        if n not in VARIANTS:
            from .dsl.errors import did_you_mean
            raise argparse.ArgumentTypeError(f"unknown engine {n[:40]!r}{did_you_mean(n, VARIANTS)} "
                                             f"(choose from all, {', '.join(VARIANTS)})")
    if not names:
        raise argparse.ArgumentTypeError("expected engines like torch,pycnn,onnxruntime")
    return list(dict.fromkeys(names))


def cmd_bench_engines(args) -> int:
    """pycnn bench model --engines: every engine at batch 1 and --batch, interleaved in one run."""
    import torch

    import pycnn
    from . import deploy
    from .bench import report
    from .bench.model import ENGINE_COLUMNS, bench_engines, write_engine_results
    if args.train:
        return _fail("--engines measures inference; drop --train (training speed: without --engines)")
    if args.device is not None and args.device.type != "cpu":
        return _fail("--engines runs on the CPU (ONNX Runtime and OpenVINO CPU engines); drop --device")
    if args.dtype not in ("fp32", "float32", "bf16", "bfloat16"):
        return _fail("--engines: --dtype is fp32, or bf16 (adds OpenVINO's bf16 row)")
    if (error := _kernel_mode_error(args)):
        return _fail(error)
    threads = args.threads or torch.get_num_threads()
    variants = args.engines
    if variants == ["all"]:  # every installed engine; the others get their one line
        variants = list(deploy.VARIANTS)
        for v in [v for v in variants if not deploy.installed(deploy.VARIANTS[v][1])]:
            print(deploy.install_hint(deploy.VARIANTS[v][1]), file=sys.stderr)
            variants.remove(v)
    if args.freeze and not any(deploy.VARIANTS[v][1] == "compile" for v in variants):
        return _fail("--freeze applies to the torch.compile rows: add compile or pycnn-compile to --engines")
    batches = sorted({1, args.batch})
    bf16 = DTYPES[args.dtype] == "bfloat16"
    rows: List[dict] = []
    baseline = None
    for path in args.files:
        try:
            model = pycnn.compile(path, args.network, kernels=args.kernels, **_overrides(args)).eval()
        except pycnn.ArchError as e:
            print(e, file=sys.stderr)
            return 1
        if args.torchvision:
            from .bench.model import torchvision_baseline
            from .weights import WeightMismatchError
            try:
                baseline = (torchvision_baseline(model, args.torchvision).eval(), f"torchvision.{args.torchvision}")
            except WeightMismatchError as e:
                return _fail(f"--torchvision {args.torchvision} does not have {model.ir.name}'s structure: "
                             + str(e).splitlines()[1].strip())
        jobs = len(variants) + (1 if bf16 and "openvino" in variants else 0)
        progress, task = _progress(jobs * len(batches) + args.repeats, f"{model.ir.name}: engines")
        if progress:
            progress.start()
        try:
            measured = bench_engines(model, variants, batches, threads, args.repeats, bf16=bf16, freeze=args.freeze,
                                     baseline=baseline,
                                     log=lambda line: print(line, file=sys.stderr),
                                     advance=(lambda: progress.advance(task)) if progress else (lambda: None))
        except KeyboardInterrupt:
            print("interrupted: nothing measured for " + model.ir.name, file=sys.stderr)
            return 130
        finally:
            if progress:
                progress.stop()
        rows += measured
        for r in measured:
            timed = r["ms"] is not None
            print(f"{r['network']:>16} {r['engine']:>14} batch {r['batch']:<4} {r['layout']:<28} "
                  + (f"{r['ms']:9.2f} ms {r['images_per_s']:8.1f} img/s  x{r['vs_best']:.2f} of best"
                     + (f"  x{r['vs_torch']:.2f} vs torch" if r["vs_torch"] else "") if timed
                     else f"{'-':>9}          {r['note']}"), flush=True)
    if args.out and rows:
        env = report.environment(torch.device("cpu"))
        env["threads"] = threads
        env["compile_freezing"] = args.freeze
        env["engines"] = {e: deploy.engine_version(e) for e in ("onnxruntime", "openvino") if deploy.installed(e)}
        env["baselines"] = sorted({r["runs"] for r in rows if r["engine"] in ("torch", "compile")})
        name = "-".join(["engines"] + sorted({r["network"] for r in rows}))
        paths = write_engine_results(Path(args.out), name, env, rows)
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_bench_model(args) -> int:
    import torch

    import pycnn
    from .bench import report
    from .bench.model import bench_model, best_layout_summary
    from .weights import WeightMismatchError
    if args.engines is not None:
        return cmd_bench_engines(args)
    if args.freeze:
        return _fail("--freeze goes with --engines (it compiles the torch.compile rows with inductor's freezing)")
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, DTYPES[args.dtype])
    if (error := _kernel_mode_error(args)):
        return _fail(error)
    if args.torchvision:
        import torchvision
        if args.torchvision not in torchvision.models.list_models():
            from .dsl.errors import did_you_mean
            return _fail(f"--torchvision {args.torchvision[:60]}: no such torchvision model"
                         + did_you_mean(args.torchvision, torchvision.models.list_models()))
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
            try:
                measured = bench_model(model, model.ir.input_shape, args.batch, device, dtype, layouts, args.train,
                                       args.compile, args.repeats, torchvision=args.torchvision)
            except WeightMismatchError as e:
                return _fail(f"--torchvision {args.torchvision} does not have {name}'s structure: "
                             + str(e).splitlines()[1].strip())
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


def _zoo_name(args) -> None:
    """FILE may be a network name of the zoo (pycnn.list_models()): args.file and args.network become its
    .arch file and the name."""
    import pycnn
    if args.file.endswith((".arch", ".safetensors")) or Path(args.file).exists():
        return
    from .zoo import model_file
    try:
        args.file, args.network = str(model_file(args.file)), args.file
    except ValueError as e:
        raise pycnn.ArchError(f"{args.file}: no such file; {e}") from None


def _load_model(args):
    """The model a command works on: FILE.arch [--network] with overrides, a model name of the zoo, or a
    pycnn.save checkpoint (.safetensors)."""
    import pycnn
    source = args.file
    if source.endswith(".safetensors"):
        if _overrides(args) or args.network:
            raise pycnn.ArchError(f"{source}: a checkpoint rebuilds its own network; --network and overrides "
                                  f"do not apply")
        return pycnn.load(source, backend=args.backend)
    _zoo_name(args)
    return pycnn.compile(args.file, args.network, backend=args.backend, **_overrides(args))


def cmd_export(args) -> int:
    import pycnn
    from .export import ExportError, export_aoti, export_onnx
    if not args.onnx and not args.aoti:
        print("pycnn export: give --onnx OUT.onnx and/or --aoti OUT.pt2", file=sys.stderr)
        return 2
    try:
        model = _load_model(args)
        if args.weights:
            from .zoo import load_pretrained
            load_pretrained(model, args.weights, model.ir.name)
        if args.onnx:
            export_onnx(model, args.onnx, batch=args.batch, dynamic_batch=not args.static_batch, opset=args.opset)
            print(f"wrote {args.onnx} (network {model.ir.name}, {model.backend}, input "
                  f"{'N' if not args.static_batch else args.batch}x{'x'.join(map(str, model.ir.input_shape))})")
        if args.aoti:
            export_aoti(model, args.aoti, batch=args.batch, dynamic_batch=not args.static_batch)
            print(f"wrote {args.aoti} (AOTInductor package; load with pycnn.export.load_aoti)")
    except (pycnn.ArchError, ExportError, ValueError, OSError) as e:
        print(str(e).splitlines()[0] if isinstance(e, ExportError) else e, file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    from . import __version__  # the package is imported anyway: this module is pycnn.cli
    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pycnn", description="CNN architectures as text, on fused kernels.")
    parser.add_argument("--version", action="version", version=f"pycnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="per-layer table: output shape, params, FLOPs, kernel; totals")
    p.add_argument("file", help="an .arch file or a network name of the zoo (pycnn.list_models())")
    p.add_argument("--network", help="which network of the file (default: the first)")
    p.add_argument("--input", type=_shape, help="input shape, e.g. 3x224x224")
    p.add_argument("--classes", type=_positive_int)
    _add_overrides(p, shortcuts=False)
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None,
                   help="who runs the fused ops (default $PYCNN_KERNELS or auto: measured per shape on first run)")
    p.add_argument("--depth", type=_positive_int, default=2,
                   help="rows down to this level: 1 parts, 2 blocks (default), 3 and more the layers inside blocks; "
                        "identical consecutive blocks are grouped")
    p.add_argument("--full", action="store_true",
                   help="every layer, exact integers and the kernels' own names (the table before grouping)")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart of FLOPs and parameters per part")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("check", help="parse and elaborate .arch files; errors as file:line:column with a caret")
    p.add_argument("files", nargs="+")
    p.add_argument("--network", help="which network of each file (default: the first)")
    _add_overrides(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("export", help="ONNX (onnxruntime) or AOTInductor package of a network, batch size dynamic",
                       description="Exports FILE (an .arch file, a model name of pycnn.list_models() or a "
                                   "pycnn.save checkpoint) in eval mode.")
    p.add_argument("file")
    p.add_argument("--network", help="which network of the file (default: the first)")
    _add_overrides(p)
    p.add_argument("--onnx", metavar="OUT.onnx")
    p.add_argument("--aoti", metavar="OUT.pt2", help="torch.export + AOTInductor package (a C++ compile: slow)")
    p.add_argument("--weights", metavar="CKPT", help="load these weights first (a checkpoint path, torchvision or timm)")
    p.add_argument("--backend", choices=["fused", "reference"], default="fused")
    p.add_argument("--batch", type=_positive_int, default=2, help="batch size of the example input (default 2)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic one")
    p.add_argument("--opset", type=_positive_int, help="ONNX opset (default: the exporter's)")
    p.set_defaults(run=cmd_export)

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
    _add_overrides(p)  # applied to every network whose shapes are measured
    p.add_argument("--out", type=_out_dir, help="directory for the JSON, markdown and PNG results")
    p.set_defaults(run=cmd_bench_ops)

    p = bench.add_parser("model", help="images/s and memory: pycnn vs eager [vs torchvision] [vs torch.compile]")
    p.add_argument("files", nargs="+", type=_arch_file)
    p.add_argument("--network")
    p.add_argument("--input", type=_shape)
    p.add_argument("--classes", type=_positive_int)
    _add_overrides(p, shortcuts=False)
    p.add_argument("--batch", type=_positive_int, default=64)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", type=_device, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--layout", choices=["nchw", "channels_last", "both"], default="nchw",
                   help="memory layout(s) of model and input; both: every variant in each, plus its best")
    p.add_argument("--channels-last", action="store_true", help="same as --layout channels_last")
    p.add_argument("--train", action="store_true", help="forward + backward instead of inference")
    p.add_argument("--compile", action="store_true",
                   help="add torch.compile of the baseline (torchvision's model if --torchvision, else eager)")
    p.add_argument("--freeze", action="store_true",
                   help="with --engines: compile the torch.compile rows with inductor's freezing (weights folded and "
                        "prepacked as constants, the usual setting for CPU inference)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (torch.set_num_threads; default torch's)")
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None,
                   help="who runs pycnn's fused ops (default $PYCNN_KERNELS or auto: measured in the warm-up)")
    p.add_argument("--torchvision", metavar="NAME",
                   help="add torchvision.models.NAME with the same weights (e.g. mobilenet_v2, resnext50_32x4d)")
    p.add_argument("--repeats", type=_positive_int, default=10)
    p.add_argument("--engines", nargs="?", const=["all"], type=_engine_list, metavar="LIST",
                   help="deployment engines side by side instead (eval, CPU, at batch 1 and --batch): any of torch "
                        "(torchvision/timm's model, else pycnn's reference), compile (torch.compile of it), pycnn, "
                        "pycnn-compile, onnxruntime, openvino (pycnn's ONNX export), comma-separated; alone or "
                        "'all': every installed one. --dtype bf16 adds OpenVINO bf16 (pip install \"pycnn[deploy]\")")
    p.add_argument("--out", type=_out_dir, help="directory for the JSON, markdown and PNG results")
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
