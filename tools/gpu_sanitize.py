#!/usr/bin/env python
"""One small case per CUDA kernel of pycnn, forward and backward, for compute-sanitizer.

    compute-sanitizer --tool memcheck --kernel-name kns=pycnn python3 tools/gpu_sanitize.py
    python tools/gpu_sanitize.py --device cpu      # the same cases on the CPU kernels (a dry run)

Every op runs through its nn module with PYCNN_KERNELS=pycnn, so the per-shape dispatch cannot hand a case
to cuDNN (mbconv, which has no module, through pycnn.ops.mbconv, in eval only): fp32 and fp16,
channels_last, odd sizes (tails of every vector loop), train and eval, with and without a residual. The shapes are tiny because memcheck and racecheck slow kernels down 10-100x.
Exit status 1 when a case calls no pycnn op or gives a non-finite output (the sanitizer reports memory
errors itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["PYCNN_KERNELS"] = "pycnn"  # before pycnn reads it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mbconv_block(torch, reduced: int):
    """pycnn.ops.mbconv on seeded folded weights, 12 -> 36 -> 12 channels, k3, residual [+ SE]: eval only (the op
    has no backward)."""
    from pycnn import ops

    class MbConvBlock(torch.nn.Module):
        eval_only = True

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            shapes = dict(we=(36, 12, 1, 1), be=(36,), wd=(36, 1, 3, 3), bd=(36,), wp=(12, 36, 1, 1), bp=(12,))
            if reduced:
                shapes.update(w1=(reduced, 36, 1, 1), b1=(reduced,), w2=(36, reduced, 1, 1), b2=(36,))
            for name, shape in shapes.items():
                self.register_buffer(name, torch.randn(*shape, generator=g) * 0.3)

        def forward(self, x):
            se = (self.w1, self.b1, self.w2, self.b2) if reduced else None
            return ops.mbconv(x, self.we, self.be, self.wd, self.bd, self.wp, self.bp, stride=1, act="relu6",
                              residual=True, se=se, se_act="silu")

    return MbConvBlock()


def cases(torch, nn):
    """(name, module, input shape (N, C, H, W), takes a residual) for every fused op and its variants."""
    return [
        ("bn_act relu", nn.BatchNormAct2d(13, act="relu"), (3, 13, 5, 7), False),
        ("bn_act silu+residual", nn.BatchNormAct2d(13, act="silu"), (3, 13, 5, 7), True),
        ("dwconv k3s1 relu6", nn.DepthwiseConvBNAct2d(19, 3, stride=1, act="relu6"), (2, 19, 9, 11), False),
        ("dwconv k5s2 silu", nn.DepthwiseConvBNAct2d(19, 5, stride=2, act="silu"), (2, 19, 9, 11), False),
        ("gconv k3s1 g4 relu", nn.GroupedConvBNAct2d(16, 24, 3, 1, groups=4, act="relu"), (2, 16, 7, 9), False),
        ("gconv k1s2 g2", nn.GroupedConvBNAct2d(16, 16, 1, 2, groups=2, act="none"), (2, 16, 7, 9), False),
        ("se silu", nn.SqueezeExcite(21, 5, act="silu"), (2, 21, 6, 5), False),
        ("se relu+residual", nn.SqueezeExcite(21, 5, act="relu", post_act="relu"), (2, 21, 6, 5), True),
        ("mbconv k3 relu6", mbconv_block(torch, 0), (2, 12, 9, 11), False),
        ("mbconv k3 relu6 + se", mbconv_block(torch, 4), (2, 12, 9, 11), False),
    ]


def pycnn_ops_called(torch):
    """A dispatch mode that records the pycnn ops a block of code calls (a case must reach pycnn's kernels)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "pycnn":
                self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    return Recorder()


def run_case(torch, module, shape, residual, device, dtype, train):
    module = module.to(device=device, dtype=dtype, memory_format=torch.channels_last).train(train)
    x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=torch.channels_last).requires_grad_(train)
    extra = {"residual": torch.randn_like(x)} if residual else {}
    y = module(x, **extra)
    if train:
        y.float().square().sum().backward()
        return [y, x.grad] + [p.grad for p in module.parameters() if p.grad is not None]
    return [y]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    args = parser.parse_args(argv)

    import torch
    from pycnn import nn

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_sanitize: no CUDA GPU available", file=sys.stderr)
        return 2
    bad = 0
    dtypes = (torch.float32, torch.float16) if device.type == "cuda" else (torch.float32,)
    for dtype in dtypes:
        for train in (True, False):
            torch.manual_seed(0)
            for name, module, shape, residual in cases(torch, nn):
                if train and getattr(module, "eval_only", False):
                    continue
                with pycnn_ops_called(torch) as called:
                    outs = run_case(torch, module, shape, residual, device, dtype, train)
                finite = all(bool(t.isfinite().all()) for t in outs)
                ok = finite and bool(called.names)
                bad += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {name:24} {str(dtype)[6:]:8} {'train' if train else 'eval ':5} "
                      f"{', '.join(sorted(called.names)) or 'no pycnn op called'}"
                      + ("" if finite else " (non-finite output)"))
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_sanitize: {bad} case(s) failed" if bad else "gpu_sanitize: all cases ran on pycnn's kernels")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
