"""Cases for tools/emu_vs_gpu.py: the same tiny inputs through the real CUDA op and through the emulator.

A case is a function ``case(target, emu) -> dict[str, Tensor]`` registered with ``@gpu_case``. It builds
its inputs deterministically on the CPU (seeded), then

* ``target == "gpu"``: moves them to CUDA and calls the real op (``torch.ops.pycnn.*``);
* ``target == "emu"``: calls the op's emulation binding (``emu.<op>.<fn>``, tests/emu/bind_<op>.cpp) on the
  CPU tensors;

and returns the outputs by name (any device; they are compared on the CPU). ``exact=True`` demands identical
bits; use it only where both builds perform the same operations in the same order (see docs/emulation.md:
nvcc contracts a*b+c into FMA by default while the host build does not, and the GPU's expf/rsqrtf differ from
the host's in the last bits). Otherwise the maximum difference in ULPs is reported against ``max_ulp``.

Example (for the bn_act op; adapt to its real signature):

    @gpu_case(exact=False, max_ulp=4)
    def bn_act_forward_relu(target, emu):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 5, 3, generator=g)
        w, b = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g)
        if target == "gpu":
            y, mean, var = torch.ops.pycnn.bn_act(x.cuda(), w.cuda(), b.cuda(), ...)
        else:
            y, mean, var = emu.bn_act.forward(x, w, b, ...)
        return {"y": y, "mean": mean, "var": var}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CASES: list["GpuCase"] = []


@dataclass
class GpuCase:
    name: str
    fn: Callable
    exact: bool
    max_ulp: int


def gpu_case(exact: bool = False, max_ulp: int = 0, name: str | None = None):
    def register(fn):
        CASES.append(GpuCase(name or fn.__name__, fn, exact, max_ulp))
        return fn

    return register


# ---- cases ----------------------------------------------------------------------------------------------------
# (one block per op; keep shapes tiny but with tails, e.g. C not a multiple of the vector width)
