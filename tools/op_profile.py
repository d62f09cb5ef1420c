"""Where a network's time goes, op by op: torch.profiler's table over a few eval forwards (no_grad) or training
steps (zero_grad, forward, cross-entropy, backward, SGD step) of a compiled .arch network, as pycnn runs it, as
its reference backend runs it (every layer its own eager module), or as torchvision's model with the same weights.

    PYTHONPATH=$PWD python tools/op_profile.py ARCH [--network NAME] [--variant pycnn|reference|torchvision]
        [--torchvision NAME] [--train] [--batch 1] [--size 224] [--layout channels_last|nchw] [--threads 2]
        [--steps 10] [--shapes] [--rows 25] [--cpu-cache]

Prints the wall time per call (timed outside the profiler) and the table sorted by self CPU time; --shapes
splits every op by its input shapes (which layer costs what). CPU only. For figures to compare, use the
interleaved benchmarks (`pycnn bench model`, `python -m pycnn.bench.train_step`); this says why.
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F

import pycnn
from pycnn.lower import to_backend


def build(args):
    """(module to profile, input, target)."""
    overrides = {}
    if args.size is not None:
        channels = pycnn.compile(args.arch, args.network, init=False).ir.input_shape[0]  # (no weights drawn)
        overrides["input"] = (channels, args.size, args.size)
    torch.manual_seed(0)
    model = pycnn.compile(args.arch, args.network, **overrides)
    shape, classes = model.ir.input_shape, model.ir.out_shape[0]
    if args.variant == "reference":
        model = to_backend(model, "reference")
    elif args.variant == "torchvision":
        from pycnn.bench.model import torchvision_baseline
        model = torchvision_baseline(model, args.torchvision or args.network)
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    x = torch.randn(args.batch, *shape).contiguous(memory_format=fmt)
    target = torch.randint(0, classes, (args.batch,))
    return model.to(memory_format=fmt).train(args.train), x, target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch")
    ap.add_argument("--network")
    ap.add_argument("--variant", choices=("pycnn", "reference", "torchvision"), default="pycnn")
    ap.add_argument("--torchvision", help="torchvision model name (default: --network)")
    ap.add_argument("--train", action="store_true", help="training steps instead of eval forwards")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, help="input height and width (default: the network's)")
    ap.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--shapes", action="store_true", help="one row per op and input shapes")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--cpu-cache", action="store_true", help="pycnn's caching CPU allocator (pycnn.allocator)")
    args = ap.parse_args(argv)
    if args.variant == "torchvision" and not (args.torchvision or args.network):
        ap.error("--variant torchvision needs --torchvision NAME or --network NAME")
    if args.batch < 1 or args.steps < 1 or (args.size is not None and args.size < 1) or (args.train and args.batch < 2):
        ap.error("--batch, --size and --steps must be positive (--train: --batch of 2 or more, for BatchNorm's "
                 "statistics)")
    torch.set_num_threads(args.threads)
    if args.cpu_cache:
        from pycnn.allocator import enable_cpu_cache
        enable_cpu_cache()
    try:
        model, x, target = build(args)
    except (pycnn.ArchError, OSError, ValueError) as e:  # the file, its network, the size: the user's to fix
        ap.error(str(e).splitlines()[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def call():
        if args.train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), target).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    for _ in range(3):
        call()  # measures the kernel choices ("auto"), warms caches
    started = time.perf_counter()
    for _ in range(args.steps):
        call()
    wall = (time.perf_counter() - started) / args.steps
    with torch.profiler.profile(record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            call()
    what = "training step" if args.train else "eval forward"
    print(f"{args.arch} {args.network or ''} {args.variant} {what}, batch {args.batch}, {args.layout}, "
          f"{args.threads} threads: {wall * 1e3:.2f} ms a call (unprofiled); profiled over {args.steps} calls:")
    print(prof.key_averages(group_by_input_shape=args.shapes).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=50, max_shapes_column_width=80))
    return 0


if __name__ == "__main__":
    sys.exit(main())
