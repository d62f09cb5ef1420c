"""The fused inverted-residual block (pycnn.mbconv, eval) against the unfused eval paths, per block shape.

    python -m pycnn.bench.mbconv [--batch 1 8] [--threads 2] [--repeats 15] [--size 224] [--network mobilenet_v2]
                                 [--device cpu|cuda] [--dtype float32|float16|bfloat16]

For every distinct block of the network (C -> expand E -> depthwise k, stride [-> SE] -> C_out [+ residual]) at the
given input size, channels_last (float32 on the CPU by default, float16 on CUDA), times interleaved in one run
(medians of --repeats rounds):
  fused  - pycnn.mbconv with the BatchNorms folded (once, outside the timing, as the runtime caches them);
  per-op - pycnn's eval path per layer (pycnn.fused.conv_bn_act with its cached folds: oneDNN / F.conv2d for the
           1x1 convs, pycnn.dwconv for the depthwise one, pycnn.se, the residual in the last op's epilogue);
  torch  - eager PyTorch modules (Conv2d + BatchNorm2d + activation, + input), as torchvision runs them (oneDNN
           on the CPU, cuDNN's layer sequence on CUDA);
and prints the ratios per-op / fused and torch / fused (> 1: the fused block is faster), of the medians and of
the best runs (robust to preemption on a loaded machine), with geometric means and the ratio of summed times.
"""

from __future__ import annotations

import argparse
import statistics
from typing import List, NamedTuple

import torch
from torch import nn

from .. import fused, ops
from ..timing import compare


class Block(NamedTuple):
    c: int
    e: int
    co: int
    k: int
    stride: int
    h: int
    act: str
    se: int = 0  # the squeeze-and-excitation's reduced channels (0: none)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.c == self.co


def mobilenet_v2_blocks(size: int = 224) -> List[Block]:
    """The distinct blocks of torchvision's MobileNetV2 (width 1.0): (t, c, n, s) per stage from the paper."""
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    blocks, c, h = [], 32, size // 2
    for t, co, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            b = Block(c, c * t, co, 3, stride, h, "relu6")
            if b not in blocks:
                blocks.append(b)
            h = (h + 2 - 3) // stride + 1
            c = co
    return blocks


def efficientnet_b0_blocks(size: int = 224) -> List[Block]:
    """The distinct blocks of EfficientNet-B0, each with its squeeze-and-excitation (reduced to C_in / 4, silu)."""
    settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    blocks, c, h = [], 32, size // 2
    for t, k, s, co, n in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            b = Block(c, c * t, co, k, stride, h, "silu", max(1, c // 4))
            if b not in blocks:
                blocks.append(b)
            h = (h + 2 * (k // 2) - k) // stride + 1
            c = co
    return blocks


NETWORKS = {"mobilenet_v2": mobilenet_v2_blocks, "efficientnet_b0": efficientnet_b0_blocks}


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    bn = nn.BatchNorm2d(cout)
    with torch.no_grad():  # non-trivial statistics, so the fold is not an identity
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), bn)


class EagerBlock(nn.Module):
    """The block as torchvision writes it (eval)."""

    def __init__(self, b: Block):
        super().__init__()
        self.b = b
        self.expand = conv_bn(b.c, b.e) if b.e != b.c else None
        self.dw = conv_bn(b.e, b.e, b.k, b.stride, groups=b.e)
        from torchvision.ops import SqueezeExcitation
        self.se = SqueezeExcitation(b.e, b.se, activation=nn.SiLU) if b.se else None
        self.project = conv_bn(b.e, b.co)
        self.act = fused.ACT_FNS[b.act]

    def forward(self, x):
        t = self.act(self.expand(x)) if self.expand is not None else x
        t = self.act(self.dw(t))
        y = self.project(self.se(t) if self.se is not None else t)
        return y + x if self.b.residual else y

    def per_op(self, x):
        """pycnn's current eval path, one fused op per layer."""
        t = x
        if self.expand is not None:
            t = fused.conv_bn_act(self.expand[0], self.expand[1], t, "dense", self.b.act)
        t = fused.conv_bn_act(self.dw[0], self.dw[1], t, "depthwise", self.b.act)
        if self.se is not None:
            t = fused.squeeze_excite(self.se, t, "silu", None)
        return fused.conv_bn_act(self.project[0], self.project[1], t, "dense", None,
                                 residual=x if self.b.residual else None)

    def folded(self):
        """The op's arguments: each BatchNorm folded into its conv (pycnn.fused.cached_fold)."""
        def fold(seq):
            f = fused.cached_fold(seq[0], seq[1], dense=True)
            return f.weight, f.bias
        expand = fold(self.expand) if self.expand is not None else (None, None)
        return (*expand, *fold(self.dw), *fold(self.project))

    def fused_op(self, x, args):
        se = (None,) * 4 if self.se is None else (self.se.fc1.weight, self.se.fc1.bias, self.se.fc2.weight,
                                                   self.se.fc2.bias)
        return torch.ops.pycnn.mbconv_forward(x, *args, self.b.stride, self.b.act, self.b.residual, *se, "silu")


def bench(blocks: List[Block], batches, threads: int, repeats: int, device: torch.device = torch.device("cpu"),
          dtype: torch.dtype = torch.float32) -> List[dict]:
    torch.set_num_threads(threads)
    rows = []
    for batch in batches:
        for b in blocks:
            torch.manual_seed(0)
            m = EagerBlock(b).eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
            x = torch.randn(batch, b.c, b.h, b.h, device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last)
            with torch.no_grad():
                args = m.folded()
                ref = m(x)
                err = (m.fused_op(x, args) - ref).abs().max().item()
                t = compare({"fused": lambda: m.fused_op(x, args), "per-op": lambda: m.per_op(x),
                             "torch": lambda: m(x)}, device, repeats=repeats, warmup=2)
            row = dict(batch=batch, block=b, err=err, **{k: v.median_s * 1e3 for k, v in t.items()},
                       **{k + " best": v.min_s * 1e3 for k, v in t.items()})
            rows.append(row)
            print(f"batch {batch:2d}  {b.c:4d}->{b.e:4d}->{b.co:4d} k{b.k} s{b.stride} {b.h:3d}x{b.h:<3d}"
                  f"{' res' if b.residual else '    '}{f' se{b.se:<3d}' if b.se else '      '}"
                  f"  fused {row['fused']:8.3f} ms  per-op {row['per-op']:8.3f} ms"
                  f"  torch {row['torch']:8.3f} ms  per-op/fused {row['per-op'] / row['fused']:5.2f}"
                  f"  torch/fused {row['torch'] / row['fused']:5.2f} | best: fused {row['fused best']:7.3f}"
                  f"  per-op/fused {row['per-op best'] / row['fused best']:5.2f}"
                  f"  torch/fused {row['torch best'] / row['fused best']:5.2f}  max|err| {err:.1e}", flush=True)
    for batch in batches:
        sel = [r for r in rows if r["batch"] == batch]
        for stat in ("", " best"):
            for other in ("per-op", "torch"):
                ratios = [r[other + stat] / r["fused" + stat] for r in sel]
                geo = statistics.geometric_mean(ratios)
                total = sum(r[other + stat] for r in sel) / sum(r["fused" + stat] for r in sel)
                print(f"batch {batch:2d} ({'medians' if not stat else 'best runs'}): {other}/fused geomean {geo:.2f},"
                      f" ratio of summed times {total:.2f}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pycnn.bench.mbconv", description=__doc__.splitlines()[0])
    p.add_argument("--network", choices=sorted(NETWORKS), default="mobilenet_v2")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="default: float32 on the CPU (the CPU kernel's), float16 on CUDA")
    a = p.parse_args(argv)
    if a.threads < 1 or a.repeats < 1 or a.size < 8 or min(a.batch) < 1:
        p.error("--threads, --repeats and --batch must be positive, --size at least 8")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if a.device == "cpu" and a.dtype not in (None, "float32"):
        p.error("--dtype: the CPU kernel runs float32 (and float64)")
    dtype = getattr(torch, a.dtype or ("float16" if a.device == "cuda" else "float32"))
    bench(NETWORKS[a.network](a.size), a.batch, a.threads, a.repeats, torch.device(a.device), dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
