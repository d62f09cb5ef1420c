"""Operator benchmarks: pycnn's fused kernels against the eager PyTorch composition they replace.

    python -m pycnn.bench.ops bn_act [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N]
    python -m pycnn.bench.ops se [--device cpu|cuda] [--batch N ...] [--only efficientnet_b0,regnety_400mf,...]
    python -m pycnn.bench.ops dwconv [--device cpu|cuda] [--dtype ...] [--batch N ...] [--repeats N]
    python -m pycnn.bench.ops gconv [--batch 1 8] [--model regnetx400mf|regnetx32gf|resnext50] [...]

Prints, per layer shape and layout, the median time of each side measured side by side (interleaved),
the speedup (eager / pycnn), and on CUDA the achieved GB/s and % of the measured copy bandwidth
(gconv: also GFLOP/s on the CPU, TFLOP/s on CUDA).
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

# BatchNorm+ReLU layers of ResNet-50 (batch 8, 224x224), BatchNorm+ReLU6 of MobileNetV2 and BatchNorm+SiLU
# of EfficientNet-B0.
BN_ACT_SHAPES = [
    ((8, 64, 112, 112), "relu"),
    ((8, 256, 56, 56), "relu"),
    ((8, 512, 28, 28), "relu"),
    ((8, 1024, 14, 14), "relu"),
    ((8, 2048, 7, 7), "relu"),
    ((8, 96, 112, 112), "relu6"),
    ((8, 144, 56, 56), "relu6"),
    ((8, 960, 7, 7), "relu6"),
    ((8, 96, 112, 112), "silu"),
    ((8, 672, 14, 14), "silu"),
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


# Grouped 3x3 convolutions (+ folded BN + ReLU) of the three networks at 224x224, one row per distinct
# layer shape: (model, input H = W, channels (in = out), groups, stride). RegNetX: torchvision's
# regnet_x_400mf (widths 32/64/160/400, group width 16) and regnet_x_32gf (336/672/1344/2520, group width
# 168); ResNeXt-50 32x4d: 32 groups, widths 128/256/512/1024, stride on the 3x3 (REFERENCES.md 3-4).
GCONV_LAYERS = [
    ("regnetx400mf", 112, 32, 2, 2), ("regnetx400mf", 56, 64, 4, 2), ("regnetx400mf", 28, 64, 4, 1),
    ("regnetx400mf", 28, 160, 10, 2), ("regnetx400mf", 14, 160, 10, 1), ("regnetx400mf", 14, 400, 25, 2),
    ("regnetx400mf", 7, 400, 25, 1),
    ("regnetx32gf", 112, 336, 2, 2), ("regnetx32gf", 56, 336, 2, 1), ("regnetx32gf", 56, 672, 4, 2),
    ("regnetx32gf", 28, 672, 4, 1), ("regnetx32gf", 28, 1344, 8, 2), ("regnetx32gf", 14, 1344, 8, 1),
    ("regnetx32gf", 14, 2520, 15, 2), ("regnetx32gf", 7, 2520, 15, 1),
    ("resnext50", 56, 128, 32, 1), ("resnext50", 56, 256, 32, 2), ("resnext50", 28, 256, 32, 1),
    ("resnext50", 28, 512, 32, 2), ("resnext50", 14, 512, 32, 1), ("resnext50", 14, 1024, 32, 2),
    ("resnext50", 7, 1024, 32, 1),
]


def bench_gconv(device: torch.device, dtype: torch.dtype, repeats: int, batches, layers=GCONV_LAYERS):
    """pycnn.gconv (conv + folded-BN scale/bias + ReLU in one op) against eager
    relu(conv2d(x, w, groups) * scale + bias), in NCHW and channels_last, forward (no grad) and
    forward+backward (grads of x, w, scale, bias). Rows also give the ratio of the best runs
    (robust to preemption on a loaded machine) and pycnn's GFLOP/s (TFLOP/s on CUDA) of its best run."""
    from pycnn import ops

    peak = peak_bandwidth_gbs(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for model, size, channels, groups, stride in layers:
        for batch in batches:
            shape = (batch, channels, size, size)
            out = (size + 2 - 3) // stride + 1
            flops = 2 * batch * channels * out * out * (channels // groups) * 9
            for layout in ("nchw", "channels_last"):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                w = (torch.randn(channels, channels // groups, 3, 3, device=device, dtype=dtype) * 0.1)
                scale = torch.rand(channels, device=device) + 0.5
                bias = torch.randn(channels, device=device) * 0.1
                grad = torch.randn(batch, channels, out, out, device=device, dtype=dtype).contiguous(memory_format=fmt)

                def ours(x, w, scale, bias):
                    return ops.gconv(x, w, scale, bias, stride=stride, padding=1, groups=groups, act="relu")

                def eager(x, w, scale, bias):
                    z = F.conv2d(x, w, None, stride, 1, 1, groups)
                    return F.relu(z * scale.to(dtype).view(1, -1, 1, 1) + bias.to(dtype).view(1, -1, 1, 1))

                for mode in ("forward", "forward+backward"):
                    if mode == "forward":
                        def run_ours():
                            with torch.no_grad():
                                ours(x, w, scale, bias)

                        def run_eager():
                            with torch.no_grad():
                                eager(x, w, scale, bias)
                    else:
                        leaves = [t.detach().requires_grad_() for t in (x, w, scale, bias)]

                        def run_ours():
                            ours(*leaves).backward(grad)

                        def run_eager():
                            eager(*leaves).backward(grad)
                    t = compare({"pycnn": run_ours, "eager": run_eager}, device, repeats=repeats, warmup=2)
                    total_flops = flops * (1 if mode == "forward" else 3)
                    row = dict(shape=f"{model} {'x'.join(map(str, shape))} g{groups} s{stride}", act="relu",
                               layout=layout, mode=mode, pycnn_ms=t["pycnn"].median_s * 1e3,
                               eager_ms=t["eager"].median_s * 1e3,
                               speedup=t["eager"].median_s / t["pycnn"].median_s,
                               speedup_best=t["eager"].min_s / t["pycnn"].min_s,
                               gflops=total_flops / t["pycnn"].min_s / 1e9)
                    if peak:
                        # Minimum traffic: forward reads x and w, writes y; backward also reads dy, x and
                        # the saved conv, writes dx and dw.
                        el = x.element_size()
                        act_bytes = x.numel() * el + grad.numel() * el
                        traffic = act_bytes if mode == "forward" else 3 * act_bytes + 2 * x.numel() * el
                        gbs = traffic / t["pycnn"].median_s / 1e9
                        row.update(gbs=gbs, peak_pct=100 * gbs / peak)
                    rows.append(row)
                    print_row(row)
    return rows


def print_row(row):
    extra = f"  {row['gbs']:8.1f} GB/s {row['peak_pct']:5.1f}% of peak" if "gbs" in row else ""
    if "speedup_best" in row:
        extra += f"  best-of x{row['speedup_best']:5.2f}"
    if "gflops" in row:
        extra += (f"  {row['gflops'] / 1e3:7.2f} TFLOP/s" if "gbs" in row else f"  {row['gflops']:6.1f} GFLOP/s")
    print(f"{row['shape']:>16} {row['act']:>8} {row['layout']:>13} {row['mode']:>16}  "
          f"pycnn {row['pycnn_ms']:8.3f} ms  eager {row['eager_ms']:8.3f} ms  x{row['speedup']:5.2f}{extra}",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("op", choices=["bn_act", "dwconv", "gconv", "se"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="two small shapes, few repeats (smoke run)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="dwconv, gconv, se: batch sizes (default 1 and 8 on the CPU, 64 on CUDA)")
    parser.add_argument("--model", nargs="+", default=None, choices=["regnetx400mf", "regnetx32gf", "resnext50"],
                        help="gconv: only these networks' layers")
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
    elif args.op == "gconv":
        batches = args.batch or ([64] if device.type == "cuda" else [1, 8])
        layers = [l for l in GCONV_LAYERS if args.model is None or l[0] in args.model]
        if args.quick:
            layers, batches = [("quick", 8, 32, 4, 1), ("quick", 9, 24, 3, 2)], [2]
        rows = bench_gconv(device, dtype, repeats, batches, layers)
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
    if rows and "speedup_best" in rows[0]:
        best = torch.tensor([r["speedup_best"] for r in rows]).log().mean().exp().item()
        print(f"geometric mean speedup of the best runs: x{best:.2f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
