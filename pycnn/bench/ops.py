"""Operator benchmarks: pycnn's fused kernels against the eager PyTorch composition they replace.

    python -m pycnn.bench.ops bn_act [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N]
    python -m pycnn.bench.ops se [--device cpu|cuda] [--batch N ...] [--only efficientnet_b0,regnety_400mf,...]
    python -m pycnn.bench.ops dwconv [--device cpu|cuda] [--dtype ...] [--batch N ...] [--repeats N]

Prints, per layer shape and layout, the median time of each side measured side by side (interleaved),
the speedup (eager / pycnn), and on CUDA the achieved GB/s and % of the measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

import pycnn
from pycnn.nn import BatchNormAct2d, DepthwiseConvBNAct2d, SqueezeExcite

from .timing import compare, peak_bandwidth_gbs

# BatchNorm+ReLU layers of ResNet-50 (batch 8, 224x224) and BatchNorm+ReLU6 of MobileNetV2.
BN_ACT_SHAPES = [
    ((8, 64, 112, 112), "relu"),
    ((8, 256, 56, 56), "relu"),
    ((8, 512, 28, 28), "relu"),
    ((8, 1024, 14, 14), "relu"),
    ((8, 2048, 7, 7), "relu"),
    ((8, 96, 112, 112), "relu6"),
    ((8, 144, 56, 56), "relu6"),
    ((8, 960, 7, 7), "relu6"),
]
EAGER_ACT = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "none": lambda z: z}


def bench_bn_act(device: torch.device, dtype: torch.dtype, repeats: int, shapes=BN_ACT_SHAPES):
    peak = peak_bandwidth_gbs(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for shape, act in shapes:
        for layout in ("nchw", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
            ours = BatchNormAct2d(shape[1], act=act).to(device=device, dtype=dtype)
            ref = nn.BatchNorm2d(shape[1]).to(device=device, dtype=dtype)
            grad = torch.randn_like(x)
            for mode in ("forward", "forward+backward"):
                if mode == "forward":
                    def run_ours():
                        with torch.no_grad():
                            ours(x)

                    def run_eager():
                        with torch.no_grad():
                            EAGER_ACT[act](ref(x))
                else:
                    xg = x.detach().requires_grad_()

                    def run_ours():
                        ours(xg).backward(grad)

                    def run_eager():
                        EAGER_ACT[act](ref(xg)).backward(grad)
                t = compare({"pycnn": run_ours, "eager": run_eager}, device, repeats=repeats)
                row = dict(shape="x".join(map(str, shape)), act=act, layout=layout, mode=mode,
                           pycnn_ms=t["pycnn"].median_s * 1e3, eager_ms=t["eager"].median_s * 1e3,
                           speedup=t["eager"].median_s / t["pycnn"].median_s)
                if peak:
                    # Minimum traffic: forward reads x twice (stats, apply) and writes y; backward
                    # reads x and dy twice and writes dx.
                    passes = 3 if mode == "forward" else 3 + 5
                    gbs = passes * x.numel() * x.element_size() / t["pycnn"].median_s / 1e9
                    row.update(gbs=gbs, peak_pct=100 * gbs / peak)
                rows.append(row)
                print_row(row)
    return rows


# The SE layers of real networks at 224x224: (network, channels, reduced channels, H = W, act, residual + relu).
# EfficientNet-B0: MBConv SE on the expanded width, C_r = block input / 4, SiLU. RegNetY: C_r = round(0.25 *
# block input width), ReLU, followed by a 1x1 conv (no merge). SE-ResNet-50: C_r = C / 16, then the block's
# residual add + ReLU, fused here.
SE_SHAPES = [
    ("efficientnet_b0", 32, 8, 112, "silu", False),
    ("efficientnet_b0", 96, 4, 56, "silu", False),
    ("efficientnet_b0", 144, 6, 28, "silu", False),
    ("efficientnet_b0", 240, 10, 14, "silu", False),
    ("efficientnet_b0", 480, 20, 14, "silu", False),
    ("efficientnet_b0", 672, 28, 7, "silu", False),
    ("efficientnet_b0", 1152, 48, 7, "silu", False),
    ("regnety_400mf", 48, 8, 56, "relu", False),
    ("regnety_400mf", 104, 26, 28, "relu", False),
    ("regnety_400mf", 208, 52, 14, "relu", False),
    ("regnety_400mf", 440, 110, 7, "relu", False),
    ("regnety_32gf", 232, 58, 56, "relu", False),
    ("regnety_32gf", 696, 174, 28, "relu", False),
    ("regnety_32gf", 1392, 348, 14, "relu", False),
    ("regnety_32gf", 3712, 348, 7, "relu", False),
    ("se_resnet50", 256, 16, 56, "relu", True),
    ("se_resnet50", 512, 32, 28, "relu", True),
    ("se_resnet50", 1024, 64, 14, "relu", True),
    ("se_resnet50", 2048, 128, 7, "relu", True),
]


def eager_se(x, fc1, fc2, act, residual=None):
    """The eager composition SqueezeExcite replaces (torchvision.ops.SqueezeExcitation, then the merge)."""
    s = F.adaptive_avg_pool2d(x, 1)
    s = torch.sigmoid(fc2(EAGER_ACT[act](fc1(s))))
    y = x * s
    return F.relu(y + residual) if residual is not None else y


def bench_se(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes=SE_SHAPES):
    peak = peak_bandwidth_gbs(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for batch in batches:
        for net, c, cr, hw, act, with_residual in shapes:
            shape = (batch, c, hw, hw)
            ours = SqueezeExcite(c, cr, act=act, post_act="relu" if with_residual else "none").to(device=device, dtype=dtype)
            fc1, fc2 = ours.fc1, ours.fc2  # the same parameters, run by nn.Conv2d
            for layout in ("nchw", "channels_last"):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                r = torch.randn_like(x) if with_residual else None
                grad = torch.randn_like(x)
                for mode in ("forward", "forward+backward"):
                    if mode == "forward":
                        def run_ours():
                            with torch.no_grad():
                                ours(x, r)

                        def run_eager():
                            with torch.no_grad():
                                eager_se(x, fc1, fc2, act, r)
                    else:
                        xg = x.detach().requires_grad_()

                        def run_ours():
                            ours(xg, r).backward(grad)

                        def run_eager():
                            eager_se(xg, fc1, fc2, act, r).backward(grad)
                    t = compare({"pycnn": run_ours, "eager": run_eager}, device, repeats=repeats)
                    row = dict(shape=f"{net}:{batch}x{c}x{hw}x{hw}/{cr}", act=act + ("+res" if with_residual else ""),
                               layout=layout, mode=mode, pycnn_ms=t["pycnn"].median_s * 1e3,
                               eager_ms=t["eager"].median_s * 1e3,
                               speedup=t["eager"].median_s / t["pycnn"].median_s)
                    if peak:
                        # Minimum traffic: forward reads x twice (pool, scale) [+ residual] and writes y;
                        # backward reads x and dy twice [+ residual twice] and writes dx [+ dresidual].
                        fwd = 3 + (1 if with_residual else 0)
                        passes = fwd if mode == "forward" else fwd + 5 + (3 if with_residual else 0)
                        gbs = passes * x.numel() * x.element_size() / t["pycnn"].median_s / 1e9
                        row.update(gbs=gbs, peak_pct=100 * gbs / peak)
                    rows.append(row)
                    print_row(row)
    return rows


# Depthwise conv + BN + act layers (224x224 input): (channels, input size, kernel, stride, act).
MOBILENET_V2_DW = [
    (32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 1), (192, 28, 3, 2),
    (384, 14, 3, 1), (576, 14, 3, 1), (576, 14, 3, 2), (960, 7, 3, 1),
]
EFFICIENTNET_B0_DW = [
    (32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2), (240, 28, 5, 1), (240, 28, 3, 2),
    (480, 14, 3, 1), (480, 14, 5, 1), (672, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1), (1152, 7, 3, 1),
]
DWCONV_LAYERS = [("mbv2", c, s, k, st, "relu6") for c, s, k, st in MOBILENET_V2_DW] + \
                [("effb0", c, s, k, st, "silu") for c, s, k, st in EFFICIENTNET_B0_DW]


def bench_dwconv(device: torch.device, dtype: torch.dtype, repeats: int, batches, layers=DWCONV_LAYERS):
    """DepthwiseConvBNAct2d against nn.Conv2d(groups=C) + nn.BatchNorm2d + activation. forward: eval
    (pycnn: one fused kernel, BN folded); forward+backward: training (batch statistics)."""
    peak = peak_bandwidth_gbs(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for batch in batches:
        for net, c, size, k, stride, act in layers:
            shape = (batch, c, size, size)
            ours = DepthwiseConvBNAct2d(c, k, stride=stride, act=act).to(device=device, dtype=dtype)
            ref = nn.Sequential(nn.Conv2d(c, c, k, stride, (k - 1) // 2, groups=c, bias=False), nn.BatchNorm2d(c),
                                {"relu6": nn.ReLU6(), "silu": nn.SiLU()}[act]).to(device=device, dtype=dtype)
            ref.load_state_dict({k_.replace("conv.", "0.").replace("bn.", "1."): v
                                 for k_, v in ours.state_dict().items()})
            for layout in ("nchw", "channels_last"):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                ours.to(memory_format=fmt)
                ref.to(memory_format=fmt)
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                for mode in ("forward", "forward+backward"):
                    train = mode != "forward"
                    ours.train(train)
                    ref.train(train)
                    if not train:
                        def run_ours():
                            with torch.no_grad():
                                ours(x)

                        def run_eager():
                            with torch.no_grad():
                                ref(x)
                    else:
                        xg = x.detach().requires_grad_()
                        grad = torch.randn_like(ours(xg))

                        def run_ours():
                            ours(xg).backward(grad)

                        def run_eager():
                            ref(xg).backward(grad)
                    t = compare({"pycnn": run_ours, "eager": run_eager}, device, repeats=repeats)
                    out_numel = grad.numel() if train else batch * c * ((size - 1) // stride + 1) ** 2
                    row = dict(shape=f"{net} {batch}x{c}x{size}x{size} k{k}s{stride}", act=act, layout=layout,
                               mode=mode, pycnn_ms=t["pycnn"].median_s * 1e3, eager_ms=t["eager"].median_s * 1e3,
                               speedup=t["eager"].median_s / t["pycnn"].median_s)
                    if peak:
                        # Minimum traffic of a fused op: forward reads x and writes y; backward also reads
                        # x and dy and writes dx.
                        elems = (x.numel() + out_numel) if not train else (3 * x.numel() + 2 * out_numel)
                        gbs = elems * x.element_size() / t["pycnn"].median_s / 1e9
                        row.update(gbs=gbs, peak_pct=100 * gbs / peak)
                    rows.append(row)
                    print_row(row)
    return rows


def print_row(row):
    extra = f"  {row['gbs']:8.1f} GB/s {row['peak_pct']:5.1f}% of peak" if "gbs" in row else ""
    print(f"{row['shape']:>16} {row['act']:>8} {row['layout']:>13} {row['mode']:>16}  "
          f"pycnn {row['pycnn_ms']:8.3f} ms  eager {row['eager_ms']:8.3f} ms  x{row['speedup']:5.2f}{extra}",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("op", choices=["bn_act", "dwconv", "se"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="two small shapes, few repeats (smoke run)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="dwconv, se: batch sizes (default 1 and 8 on the CPU, 64 on CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 gives steadier figures on a shared machine")
    parser.add_argument("--only", default=None, help="se: comma-separated networks to run (default all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    info = pycnn.build_info()
    print(f"pycnn {pycnn.__version__} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}, {dtype}, CUDA kernels: {info['cuda']}")
    print("speedup = eager median / pycnn median, measured interleaved in this run")
    repeats = 3 if args.quick else args.repeats
    if args.op == "se":
        shapes = SE_SHAPES
        if args.only:
            shapes = [s for s in shapes if s[0] in args.only.split(",")]
        if args.quick:
            shapes = [("quick", 24, 6, 8, "silu", False), ("quick", 40, 10, 5, "relu", True)]
        batches = args.batch or ([64] if device.type == "cuda" else [1, 8])
        rows = bench_se(device, dtype, repeats, batches if not args.quick else [2], shapes)
    elif args.op == "dwconv":
        batches = args.batch or ([2] if args.quick else [64] if device.type == "cuda" else [1, 8])
        layers = [("mbv2", 16, 10, 3, 1, "relu6"), ("effb0", 24, 9, 5, 2, "silu")] if args.quick else DWCONV_LAYERS
        rows = bench_dwconv(device, dtype, repeats, batches, layers)
    else:
        shapes = [((2, 16, 8, 8), "relu"), ((2, 24, 5, 5), "relu6")] if args.quick else BN_ACT_SHAPES
        rows = bench_bn_act(device, dtype, repeats, shapes)
    ratios = [r["speedup"] for r in rows]
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean speedup over {len(rows)} cases: x{geo:.2f} (min x{min(ratios):.2f})")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
