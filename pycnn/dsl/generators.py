"""Generators: network-level constructs computed from a few numbers, expanded into stages.

`regnet(...)`: the RegNet design space of Radosavovic et al. 2020 (pycls `generate_regnet`): quantized linear
per-block widths, grouped into stages of equal width, made compatible with the group width and bottleneck.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from .evaluate import make_divisible


@dataclass(frozen=True)
class StageSpec:
    width: int
    depth: int
    group_width: int
    bottleneck: float


def _round_half_even(x: float) -> int:
    return int(round(x))


def regnet_stages(w0: float, wa: float, wm: float, depth: int, group_width: int, bottleneck: float = 1.0,
                  quant: int = 8, rounding: str = "pycls") -> List[StageSpec]:
    """Stage widths and depths of a RegNet (REFERENCES.md section 4).

    `rounding` makes the bottleneck width a multiple of the group width: "pycls" rounds to the nearest
    multiple (half to even, as numpy), "torchvision" uses `_make_divisible` (half up, never below 90%); the two
    differ when the width is an odd multiple of half the group width (RegNetX-400MF: 392 -> 384 or 400)."""
    if w0 <= 0 or wa < 0 or wm <= 1 or depth < 1 or group_width < 1 or bottleneck <= 0 or w0 % quant:
        raise ValueError("regnet needs w0 > 0 and a multiple of 8, wa >= 0, wm > 1, depth >= 1, "
                         "group_width >= 1, bottleneck > 0")
    widths = []
    for j in range(depth):
        u = w0 + wa * j
        s = _round_half_even(math.log(u / w0) / math.log(wm))
        widths.append(quant * _round_half_even(w0 * wm ** s / quant))
    stages: List[List[int]] = []  # [width, depth]
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        v = int(w * bottleneck)
        g = min(group_width, v)
        if rounding == "torchvision":
            v = make_divisible(v, g)
        else:
            v = max(g, _round_half_even(v / g) * g)
        out.append(StageSpec(int(v / bottleneck), d, g, bottleneck))
    return out
