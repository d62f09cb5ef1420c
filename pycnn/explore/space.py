"""Design spaces: which parameters of an .arch network are sampled, how, and under which constraints.

A space is a small TOML file (read with tomllib, never evaluated as code) naming an .arch network and its
sampled parameters:

    name = "AnyNetX_B"
    arch = "../anynet.arch"          # relative to this file
    network = "anynet"
    stages = 4                       # a parameter with per_stage = true stands for name1 .. name4
    [fixed]                          # parameters set to one value
    stem_width = 32
    [params.w]                       # int or real range: low, high, dist (uniform | log | pow2), q (quantum)
    per_stage = true
    type = "int"
    low = 8
    high = 1024
    dist = "log"
    q = 8
    [params.b]                       # or a list of choices
    per_stage = true
    choices = [1.0, 0.5, 0.25]
    [constraints]
    shared = ["b"]                   # one value for every stage
    non_decreasing = ["w"]           # stage values never decrease
    flops = [360e6, 400e6]           # windows checked on the IR (multiply-adds; parameters with `params`)

Sampling draws every parameter, rejects samples that break a constraint or do not elaborate (an incompatible
group width, say) and checks the FLOPs and parameter windows on the IR, before any torch module exists.
"""
from __future__ import annotations

import math
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import ir


class SpaceError(Exception):
    """A design-space file that cannot be used; one line for the user."""


@dataclass
class Param:
    name: str
    type: str = "int"  # int | real | choice
    low: float = 0
    high: float = 0
    dist: str = "uniform"  # uniform | log | pow2
    q: float = 0  # quantization step (0: none; ints default to 1)
    choices: Optional[list] = None

    def sample(self, rng: random.Random):
        if self.choices is not None:
            return rng.choice(self.choices)
        if self.dist == "pow2":
            lo, hi = int(math.log2(self.low)), int(math.log2(self.high))
            return 2 ** rng.randint(lo, hi)
        if self.dist == "log":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high + (1 if self.type == "int" and not self.q else 0))
            if self.type == "int" and not self.q:
                return min(int(math.floor(value)), int(self.high))
        q = self.q or (1 if self.type == "int" else 0)
        if q:
            value = min(max(round(value / q) * q, math.ceil(self.low / q) * q), math.floor(self.high / q) * q)
        if self.type == "int":
            return int(round(value))
        return round(value, 10)


@dataclass
class Space:
    name: str
    arch: Path
    network: Optional[str]
    stages: int
    params: Dict[str, Param]  # expanded: w1 .. w4 for a per-stage w
    groups: Dict[str, List[str]]  # per-stage base name -> its expanded names
    fixed: dict = field(default_factory=dict)
    shared: List[str] = field(default_factory=list)
    non_decreasing: List[str] = field(default_factory=list)
    flops: Optional[Tuple[float, float]] = None
    param_count: Optional[Tuple[float, float]] = None

    @classmethod
    def load(cls, path) -> "Space":
        path = Path(path)
        try:
            spec = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SpaceError(f"no such design-space file: {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SpaceError(f"{path}: not a readable TOML design space: {e}") from None
        try:
            return cls.from_dict(spec, path.parent, path.stem)
        except (KeyError, TypeError, ValueError) as e:
            raise SpaceError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, spec: dict, base: Path, default_name: str = "space") -> "Space":
        known = {"name", "arch", "network", "stages", "fixed", "params", "constraints"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} (expected {', '.join(sorted(known))})")
        if "arch" not in spec:
            raise ValueError("no `arch` (the .arch file of the network)")
        stages = int(spec.get("stages", 1))
        params, groups = {}, {}
        for name, p in spec.get("params", {}).items():
            p = dict(p)
            per_stage = p.pop("per_stage", False)
            if "choices" in p:
                if not p["choices"]:
                    raise ValueError(f"parameter {name}: empty choices")
                p["type"] = "choice"
            elif not ("low" in p and "high" in p) or p["low"] > p["high"]:
                raise ValueError(f"parameter {name}: needs choices, or low <= high")
            if p.get("dist", "uniform") not in ("uniform", "log", "pow2"):
                raise ValueError(f"parameter {name}: dist must be uniform, log or pow2")
            if p.get("dist") in ("log", "pow2") and p["low"] <= 0:
                raise ValueError(f"parameter {name}: a {p['dist']} range needs low > 0")
            names = [f"{name}{i}" for i in range(1, stages + 1)] if per_stage else [name]
            groups[name] = names
            for n in names:
                params[n] = Param(n, **p)
        c = dict(spec.get("constraints", {}))
        space = cls(name=spec.get("name", default_name), arch=(base / spec["arch"]).resolve(),
                    network=spec.get("network"), stages=stages, params=params, groups=groups,
                    fixed={k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("fixed", {}).items()}, shared=list(c.pop("shared", [])),
                    non_decreasing=list(c.pop("non_decreasing", [])),
                    flops=_window(c.pop("flops", None)), param_count=_window(c.pop("params", None)))
        if c:
            raise ValueError(f"unknown constraint {sorted(c)[0]!r} (shared, non_decreasing, flops, params)")
        for g in space.shared + space.non_decreasing:
            if g not in groups or len(groups[g]) < 2:
                raise ValueError(f"constraint on {g!r}: not a per-stage parameter")
        return space

    def draw(self, rng: random.Random) -> dict:
        """One draw of every parameter (shared ones drawn once); no constraint checked."""
        values = {}
        for base, names in self.groups.items():
            if base in self.shared:
                v = self.params[names[0]].sample(rng)
                values.update({n: v for n in names})
            else:
                values.update({n: self.params[n].sample(rng) for n in names})
        return values

    def satisfies(self, values: dict) -> bool:
        return all(all(values[a] <= values[b] for a, b in zip(self.groups[g], self.groups[g][1:]))
                   for g in self.non_decreasing)


def _window(w):
    if w is None:
        return None
    lo, hi = float(w[0]), float(w[1])
    if lo > hi:
        raise ValueError(f"window [{lo}, {hi}] is empty")
    return lo, hi


@dataclass
class Sample:
    index: int
    values: dict  # the sampled parameters
    overrides: dict  # everything passed to the network: fixed + sampled (+ input)
    flops: int
    params: int
    acts: int


def complexity(network: ir.NetworkIR) -> Tuple[int, int, int]:
    """(FLOPs, parameters, activations) of an IR network; activations = output elements of every conv (pycls)."""
    flops = params = acts = 0
    for _, layer in network.layers():
        flops += layer.flops
        params += layer.params
        if layer.op in ("conv", "wsconv"):
            acts += math.prod(layer.out_shape)
    return flops, params, acts


class Sampler:
    """Seeded rejection sampler over a Space: the same seed gives the same samples in the same order."""

    def __init__(self, space: Space, seed: int = 0, extra: Optional[dict] = None,
                 flops: Optional[Tuple[float, float]] = None, params: Optional[Tuple[float, float]] = None,
                 max_tries: int = 200_000):
        from ..dsl.elaborate import Elaborator, Limits, load_program
        self.space, self.rng = space, random.Random(seed)
        self.extra = dict(extra or {})
        self.flops = flops or space.flops
        self.params = params or space.param_count
        self.max_tries = max_tries
        if not space.arch.is_file():
            raise SpaceError(f"design space {space.name}: no such .arch file {space.arch}")
        self._program = load_program(str(space.arch))
        self._elaborator = lambda: Elaborator(self._program, Limits())
        self.tries = self.rejected_constraint = self.rejected_arch = self.rejected_window = 0
        self.count = 0

    def elaborate(self, overrides: dict) -> ir.NetworkIR:
        return self._elaborator().network(self.space.network, overrides)

    def __iter__(self):
        return self

    def __next__(self) -> Sample:
        from .. import ArchError
        while self.tries < self.max_tries:
            self.tries += 1
            values = self.space.draw(self.rng)
            if not self.space.satisfies(values):
                self.rejected_constraint += 1
                continue
            overrides = {**self.space.fixed, **values, **self.extra}
            try:
                net = self.elaborate(overrides)
            except (ArchError, ValueError, ZeroDivisionError, OverflowError):
                self.rejected_arch += 1
                continue
            f, p, a = complexity(net)
            if (self.flops and not self.flops[0] <= f <= self.flops[1]) or \
                    (self.params and not self.params[0] <= p <= self.params[1]):
                self.rejected_window += 1
                continue
            self.count += 1
            return Sample(self.count - 1, values, overrides, f, p, a)
        raise SpaceError(f"design space {self.space.name}: no sample satisfied the constraints in {self.max_tries} "
                         f"tries ({self.rejected_constraint} constraints, {self.rejected_arch} not elaborating, "
                         f"{self.rejected_window} outside the FLOPs/params window)")

    def take(self, n: int) -> List[Sample]:
        return [next(self) for _ in range(n)]


def canonical_text(network: ir.NetworkIR) -> str:
    """The network as the layers it is made of, one deterministic text: every node's name, kind, op, attributes
    and shapes, without source locations, comments or how the .arch file spelled it. Two samples with the same
    text are the same network (the latency cache's key)."""
    def attrs(a: dict) -> str:
        return ",".join(f"{k}={a[k]!r}" for k in sorted(a))

    lines = [f"input {ir.fmt_shape(network.input_shape)}"]

    def walk(node, depth: int) -> None:
        pad = " " * depth
        if isinstance(node, ir.Layer):
            lines.append(f"{pad}{node.name} {node.op}({attrs(node.attrs)}) {ir.fmt_shape(node.in_shape)}->"
                         f"{ir.fmt_shape(node.out_shape)}")
        elif isinstance(node, ir.BranchBlock):
            lines.append(f"{pad}block {node.name} {node.block} merge={node.merge}")
            for child in node.pre:
                walk(child, depth + 1)
            for branch in node.branches:
                lines.append(f"{pad} branch {branch.name} nested={branch.nested}")
                for child in branch.children:
                    walk(child, depth + 2)
            for child in node.post:
                walk(child, depth + 1)
        elif isinstance(node, ir.Sequence):
            lines.append(f"{pad}{node.kind} {node.name}")
            for child in node.children:
                walk(child, depth + 1)
        else:  # a node type added later: its repr without locations still separates networks
            lines.append(f"{pad}{type(node).__name__} {re.sub(r'loc=[^,)]*', '', repr(node))}")

    for part in network.parts:
        walk(part, 0)
    return "\n".join(lines)
