"""The depthwise convolution alone, without epilogue: pycnn.dwconv against F.conv2d(groups=C) (oneDNN on
the CPU, cuDNN on CUDA), forward and backward (grad input + grad weight), over the depthwise layer shapes
of the default benchmark networks, in one layout. `pycnn bench ops dwconv` measures the fused layer
(conv + BN + act) instead; this isolates the convolution kernels.

    python tools/dwconv_vs_onednn.py [--layout channels_last|nchw] [--batch 8] [--threads 1] [--repeats 5]
        [--network mobilenet_v2 efficientnet_b0]

with pycnn installed (README), or with PYTHONPATH=. from the repository root for a tools/dev_build.sh build.
"""
import argparse

import torch
import torch.nn.functional as F

import pycnn.ops as ops
from pycnn.bench.ops import geomean, load_shapes, parse_network_specs
from pycnn.timing import compare


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--network", nargs="+", default=["mobilenet_v2", "efficientnet_b0"])
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    fmt = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    ratios = {"forward": [], "backward": []}
    for s in load_shapes(parse_network_specs(None, a.network))["dwconv"]:
        x = torch.randn(a.batch, s.c, s.h, s.w, device=device).contiguous(memory_format=fmt)
        w = torch.randn(s.c, 1, s.k, s.k, device=device)
        conv = dict(stride=s.stride, padding=s.padding, dilation=s.dilation)
        dy = torch.randn_like(F.conv2d(x, w, None, groups=s.c, **conv))
        geo = [[s.stride] * 2, [s.padding] * 2, [s.dilation] * 2]
        runs = {
            "pycnn forward": lambda: ops.dwconv(x, w, None, None, act="none", **conv),
            "torch forward": lambda: F.conv2d(x, w, None, groups=s.c, **conv),
            "pycnn backward": lambda: torch.ops.pycnn.dwconv_backward(dy, x, w, None, None, None, *geo, "none"),
            "torch backward": lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, *geo, False, [0, 0], s.c, [True, True, False]),
        }
        with torch.no_grad():
            t = {k: v.median_s * 1e3 for k, v in compare(runs, device, repeats=a.repeats).items()}
        line = f"{a.batch}x{s.c}x{s.h}x{s.w} k{s.k}s{s.stride}d{s.dilation} {a.layout:13s}"
        for mode in ratios:
            ratio = t[f"torch {mode}"] / t[f"pycnn {mode}"]
            ratios[mode].append(ratio)
            line += f"  {mode} pycnn {t[f'pycnn {mode}']:8.3f} ms torch {t[f'torch {mode}']:8.3f} ms x{ratio:.2f}"
        print(line, flush=True)
    print("geomean torch/pycnn: " + ", ".join(f"{m} x{geomean(r):.2f}" for m, r in ratios.items()))


if __name__ == "__main__":
    main()
