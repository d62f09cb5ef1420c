"""`pycnn train` and `pycnn eval` (their parsers and commands; pycnn.cli adds them)."""
from __future__ import annotations

import argparse
import contextlib
import sys

from .recipe import Recipe


def _shape(text: str):
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape like 3x32x32, got {text!r}")
    return shape


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options (defaults from Recipe), shared by `pycnn train` and `pycnn explore`."""
    d = Recipe()
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, help=f"default {d.epochs}; with --resume: train this long in all")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--decay-norm-and-bias", action="store_true", help="weight decay on BN parameters and biases too")
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], default=d.schedule)
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g.add_argument("--step-size", type=int, default=d.step_size, help="step schedule: epochs between decays")
    g.add_argument("--step-gamma", type=float, default=d.step_gamma)
    g.add_argument("--min-lr", type=float, default=d.min_lr)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--crop", choices=["none", "pad", "resized"], default=d.crop,
                   help="random crop with --crop-padding, or random resized crop")
    g.add_argument("--crop-padding", type=int, default=d.crop_padding)
    g.add_argument("--flip", action="store_true", help="random horizontal flip")
    g.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA")
    g.add_argument("--cutmix", type=float, default=d.cutmix, metavar="ALPHA")
    g.add_argument("--val-split", type=float, default=d.val_split, help="fraction of train held out for validation")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better validation loss")
    g.add_argument("--clip-grad", type=float, help="clip the global gradient norm")
    g.add_argument("--agc", type=float, metavar="LAMBDA", help="adaptive gradient clipping (NFNets), e.g. 0.01")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d.amp, help="autocast (bf16 on the CPU)")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--ema", type=float, metavar="DECAY", help="evaluate an EMA of the weights, e.g. 0.999")
    g.add_argument("--seed", type=int, default=d.seed)


def recipe_from_args(args) -> Recipe:
    return Recipe.from_dict({k: v for k, v in vars(args).items() if k in Recipe.__dataclass_fields__ and v is not None})


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="digits (default), mnist, fashion-mnist, cifar10, cifar100 or imagefolder:DIR")
    p.add_argument("--data-dir", help="where mnist/fashion-mnist/cifar live (torchvision's layout)")
    p.add_argument("--download", action="store_true", help="fetch mnist/fashion-mnist/cifar into --data-dir")


def errors():
    import pycnn

    from .checkpoint import CheckpointError
    from .data import DataError
    from .loop import TrainError
    return (TrainError, DataError, CheckpointError, pycnn.ArchError)


def cmd_train(args) -> int:
    from .loop import train
    if args.file is None and args.resume is None:
        print("pycnn train: give an .arch file or --resume RUN_DIR", file=sys.stderr)
        return 2
    options = {}
    if args.resume is None:
        options["recipe"] = recipe_from_args(args)
    elif args.epochs is not None:
        options["epochs"] = args.epochs
    from ..allocator import cpu_cache, without_network_cache
    cache = contextlib.ExitStack()
    if args.cpu_cache:
        try:
            cache.enter_context(cpu_cache())
        except RuntimeError as e:  # another library's CPU allocator came first: train all the same
            print(f"pycnn train: without the CPU cache: {e}", file=sys.stderr)
    else:
        cache.enter_context(without_network_cache())  # the evaluations' forwards too
    try:
        with cache:
            result = train(args.file, args.network, data=args.data, data_dir=args.data_dir, download=args.download,
                           out=args.out, backend=args.backend, kernels=args.kernels, input=args.input,
                           resume=args.resume, overwrite=args.overwrite, device=args.device, threads=args.threads,
                           command=list(sys.argv), progress=True, **options)
    except errors() as e:
        print(f"pycnn train: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_checkpoint
    try:
        r = evaluate_checkpoint(args.checkpoint, args.data, args.data_dir, args.batch_size, args.backend,
                                args.kernels, args.device, args.confusion)
    except errors() as e:
        print(f"pycnn eval: {e}", file=sys.stderr)
        return 2
    print(f"{r.network} on {r.data}: accuracy {r.accuracy:.4f}, loss {r.loss:.4f}, {r.images_per_s:.0f} img/s; "
          f"confusion matrix {r.confusion_png}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a network on a dataset into a run folder (metrics, checkpoints, curves)",
                       description="Train FILE.arch's network. Run folder: network.arch, options.json, metrics.csv/"
                                   "json, last/best safetensors checkpoints, curves.png, result.json.")
    p.add_argument("file", nargs="?", help=".arch file (omit with --resume)")
    p.add_argument("--network", help="which network of the file (default: the first)")
    add_data_arguments(p)
    p.add_argument("--input", type=_shape, help="override the network's input shape, e.g. 1x32x32")
    p.add_argument("--out", help="run folder (default runs/<network>-<data>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last completed epoch")
    p.add_argument("--backend", choices=["fused", "reference"], default="fused")
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--no-cpu-cache", dest="cpu_cache", action="store_false",
                   help="keep glibc's malloc for large CPU tensors instead of pycnn's caching allocator "
                        "(pycnn.allocator: a CPU training step page-faults on its activations without it)")
    add_recipe_arguments(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="accuracy, loss, confusion matrix and img/s of a run folder or checkpoint")
    p.add_argument("checkpoint", help="a run folder (its best.safetensors) or a .safetensors checkpoint")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backend", choices=["fused", "reference"], default="fused")
    p.add_argument("--kernels", choices=["auto", "pycnn", "torch"], default=None)
    p.add_argument("--device")
    p.add_argument("--confusion", help="PNG path for the confusion matrix (default: beside the checkpoint)")
    p.set_defaults(run=cmd_eval)
