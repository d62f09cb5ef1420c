"""The three candidates `kernels="auto"` races for a grouped conv + BatchNorm + relu in eval, interleaved:
the eager composition ("torch"), PyTorch's conv with the BatchNorm folded in (oneDNN, packed weights, relu fused:
"folded") and pycnn::gconv ("pycnn"), on RegNetX-400MF's grouped shapes (group width 16) and one ResNeXt shape.
pycnn::gconv runs as in a network's eval: inside the scope that keeps its weight's tap layout between calls (a
direct op call reorders the weight on every call, which no network does; pycnn.bench.ops.keeping_layouts).

    PYTHONPATH=$PWD python tools/gconv_folded_bench.py [--threads 1] [--batch 1 8] [--repeats 15]
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

import pycnn  # noqa: F401  (registers torch.ops.pycnn)
from pycnn.bench.ops import keeping_layouts
from pycnn.fused import fold_bn
from pycnn.timing import compare

SHAPES = [(32, 16, 56), (64, 16, 28), (160, 16, 14), (400, 16, 7), (256, 32, 14)]  # channels, group width, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for batch in args.batch:
        for c, gw, hw in SHAPES:
            conv = nn.Conv2d(c, c, 3, 1, 1, groups=c // gw, bias=False).eval()
            bn = nn.BatchNorm2d(c).eval()
            with torch.no_grad():
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                scale, shift = fold_bn(conv, bn)
                w = conv.weight * scale.view(-1, 1, 1, 1)
            x = torch.randn(batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
            packed = torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], conv.groups, list(x.shape))
            gconv = keeping_layouts(lambda: torch.ops.pycnn.gconv_forward(
                x, conv.weight, scale, shift, None, [1, 1], [1, 1], conv.groups, "relu", False)[0])
            fns = {"torch": lambda: F.relu(bn(conv(x))),
                   "folded": lambda: torch.ops.mkldnn._convolution_pointwise(
                       x, packed, shift, [1, 1], [1, 1], [1, 1], conv.groups, "relu", [], ""),
                   "pycnn": gconv}
            with torch.no_grad():
                ref = fns["torch"]()
                for f in fns.values():
                    torch.testing.assert_close(f(), ref, rtol=1e-4, atol=1e-4)
                t = compare(fns, torch.device("cpu"), repeats=args.repeats, warmup=3)
            us = {k: t[k].median_s * 1e6 for k in fns}
            print(f"batch {batch} {c}ch gw{gw} {hw}x{hw}: " + "  ".join(f"{k} {v:8.1f} us" for k, v in us.items())
                  + f"   vs torch: folded {us['torch'] / us['folded']:.2f}x, pycnn {us['torch'] / us['pycnn']:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
