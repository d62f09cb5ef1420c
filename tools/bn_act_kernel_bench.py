"""pycnn::bn_act's training kernels alone against the ATen kernels of the eager composition they replace,
interleaved: forward (batch statistics, then relu: native_batch_norm + relu_) and backward (threshold_backward +
native_batch_norm_backward), called below autograd so that only the kernels are timed (`pycnn bench ops --op
bn_act` times them through autograd, where per-call overhead dominates small layers). Neither side updates running
statistics (pycnn.ops.bn_act does that after its kernel). Shapes: MobileNetV2's and RegNetX-400MF's at batch 8.
Prints the median time of each, pycnn's speedup (ATen's median / pycnn's) and the same of the best runs.

    PYTHONPATH=$PWD python tools/bn_act_kernel_bench.py [--threads 1] [--layout channels_last] [--repeats 40]
"""
import argparse

import torch

import pycnn  # noqa: F401  (registers torch.ops.pycnn)
from pycnn.timing import compare

SHAPES = [(8, 32, 56, 56), (8, 64, 28, 28), (8, 144, 56, 56), (8, 160, 28, 28), (8, 400, 14, 14), (8, 960, 7, 7)]
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layout", choices=list(LAYOUTS), nargs="+", default=["channels_last"])
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{'shape':>16} {'layout':>13} {'pass':>8} {'pycnn ms':>9} {'ATen ms':>8} {'speedup':>8} (of the best runs)")
    for layout in args.layout:
        for shape in SHAPES:
            c = shape[1]
            x, dy = (torch.randn(shape).contiguous(memory_format=LAYOUTS[layout]) for _ in range(2))
            w, b = torch.randn(c), torch.randn(c)
            _, p_mean, p_var = torch.ops.pycnn.bn_act_forward(x, w, b, None, None, None, True, 1e-5, "relu")
            y, a_mean, a_invstd = torch.ops.aten.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)
            y = torch.relu_(y)

            def aten_forward():
                torch.relu_(torch.ops.aten.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)[0])

            def aten_backward():
                dz = torch.ops.aten.threshold_backward(dy, y, 0)
                torch.ops.aten.native_batch_norm_backward(dz, x, w, None, None, a_mean, a_invstd, True, 1e-5,
                                                          [True, True, True])

            fns = {
                "forward": (lambda: torch.ops.pycnn.bn_act_forward(x, w, b, None, None, None, True, 1e-5, "relu"),
                            aten_forward),
                "backward": (lambda: torch.ops.pycnn.bn_act_backward(dy, x, w, b, None, p_mean, p_var, True, 1e-5,
                                                                     "relu"), aten_backward),
            }
            with torch._C._AutoDispatchBelowAutograd():
                t = compare({f"{k} {side}": fn for k, pair in fns.items() for side, fn in zip(("pycnn", "aten"), pair)},
                            x.device, repeats=args.repeats, warmup=3)
            for k in fns:
                p, a = t[f"{k} pycnn"], t[f"{k} aten"]
                print(f"{'x'.join(map(str, shape)):>16} {layout:>13} {k:>8} {p.median_s * 1e3:9.3f} {a.median_s * 1e3:8.3f} "
                      f"{a.median_s / p.median_s:7.2f}x ({a.min_s / p.min_s:.2f}x)")


if __name__ == "__main__":
    main()
