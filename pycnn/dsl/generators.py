"""Generators: network-level constructs computed from a few numbers, expanded into stages.

`regnet(...)`: the RegNet design space of Radosavovic et al. 2020 (pycls `generate_regnet`): quantized linear
per-block widths, grouped into stages of equal width, made compatible with the group width and bottleneck.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from ..opspec import REQUIRED, arguments
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
    """Stage widths and depths of a RegNet (docs/design.md section 8).

    `rounding` makes the bottleneck width a multiple of the group width: "pycls" rounds to the nearest
    multiple (half to even, as numpy), "torchvision" uses `_make_divisible` (half up, never below 90%); the two
    differ when the width is an odd multiple of half the group width (RegNetX-400MF: 392 -> 384 or 400)."""
    for ok, rule, value in ((w0 > 0 and w0 % quant == 0, f"w0 must be > 0 and a multiple of {quant}", w0),
                            (wa >= 0, "wa must be >= 0", wa), (wm > 1, "wm must be > 1", wm),
                            (depth >= 1, "depth must be >= 1", depth),
                            (group_width >= 1, "group_width must be >= 1", group_width),
                            (bottleneck > 0, "bottleneck must be > 0", bottleneck)):
        if not ok:
            raise ValueError(f"{rule}, got {value}")
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
        if v < 1:
            raise ValueError(f"bottleneck {bottleneck} leaves no channels in a stage of width {w}")
        g = min(group_width, v)
        if rounding == "torchvision":
            v = make_divisible(v, g)
        else:
            v = max(g, _round_half_even(v / g) * g)
        out.append(StageSpec(int(v / bottleneck), d, g, bottleneck))
    return out


# the generators a network part may call: their arguments, as a primitive's (pycnn.opspec.Arg)
GENERATORS = {
    "regnet": arguments(("w0", REQUIRED, "float"), ("wa", REQUIRED, "float"), ("wm", REQUIRED, "float"),
                    ("depth", REQUIRED, "pos"), ("group_width", REQUIRED, "pos"), ("bottleneck", 1.0, "posfloat"),
                    ("se", 0.0, "float"), ("block", REQUIRED, "block"), ("stride", 2, "pos"),
                    ("rounding", "pycls", "rounding")),
}
