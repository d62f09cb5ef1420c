#!/usr/bin/env python
"""Run the same tiny cases on the GPU (the real pycnn CUDA ops) and in emulation; compare them.

    python tools/emu_vs_gpu.py [-k SUBSTRING] [--require-gpu]

Cases live in tests/emu/gpu_cases.py. Without a CUDA GPU the tool says so and exits 0 (2 with
--require-gpu), so it is safe to call anywhere. Exit status 1 when a case differs beyond what it allows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pycnn from this checkout, then the emulator's helpers and the kernel tests' (kernel_checks, for gpu_cases)
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "emu"), str(ROOT / "tests")]


def ulp_diff(a, b):
    """Per-element distance in units in the last place (floating tensors of the same dtype), as int64."""
    import torch

    ints = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}
    it = ints[a.dtype]
    bits = 8 * a.element_size()

    def ordered(t):
        i = t.contiguous().view(it).to(torch.int64)
        sign = 1 << (bits - 1)
        return torch.where(i < 0, -(i & (sign - 1)), i)  # sign-magnitude -> two's complement order

    d = (ordered(a) - ordered(b)).abs()
    both_nan = a.isnan() & b.isnan()
    return torch.where(both_nan, torch.zeros_like(d), d)


def compare(name, gpu, emu, exact, max_ulp):
    import torch

    ok = True
    lines = []
    for key in sorted(set(gpu) | set(emu)):
        if key not in gpu or key not in emu:
            lines.append(f"  {key}: only in {'gpu' if key in gpu else 'emu'}")
            ok = False
            continue
        g, e = gpu[key].detach().cpu(), emu[key].detach().cpu()
        if g.shape != e.shape or g.dtype != e.dtype:
            lines.append(f"  {key}: gpu {tuple(g.shape)} {g.dtype} vs emu {tuple(e.shape)} {e.dtype}")
            ok = False
            continue
        if g.is_floating_point():
            ulps = ulp_diff(g, e)
            same = int((ulps == 0).sum())
            worst = int(ulps.max()) if ulps.numel() else 0
            good = worst == 0 if exact else worst <= max_ulp
            lines.append(f"  {key}: {same}/{g.numel()} bit-identical, max {worst} ulp "
                         f"({'exact required' if exact else f'<= {max_ulp} allowed'}) {'ok' if good else 'FAIL'}")
        else:
            good = torch.equal(g, e)
            lines.append(f"  {key}: {'identical' if good else 'DIFFERENT'}")
        ok &= good
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print("\n".join(lines))
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 instead of 0 when there is no GPU")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("emu_vs_gpu: no CUDA GPU available (torch.cuda.is_available() is False): nothing compared")
        return 2 if args.require_gpu else 0
    try:
        import pycnn  # noqa: F401  (registers torch.ops.pycnn.*)
    except ImportError as e:
        print(f"emu_vs_gpu: cannot import pycnn ({e}); build it with CUDA first")
        return 2
    import emu_build
    import gpu_cases

    emu = emu_build.build()
    cases = [c for c in gpu_cases.CASES if args.k in c.name]
    if not cases:
        print("emu_vs_gpu: no cases registered (tests/emu/gpu_cases.py)")
        return 0
    failed = 0
    for c in cases:
        torch.manual_seed(0)
        gpu = c.fn("gpu", emu)
        torch.cuda.synchronize()
        out = c.fn("emu", emu)
        failed += not compare(c.name, gpu, out, c.exact, c.max_ulp)
    print(f"emu_vs_gpu: {len(cases) - failed}/{len(cases)} cases agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
