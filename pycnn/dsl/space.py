"""Design spaces in the language: `space NAME of NETWORK(fixed args) { ... }` (docs/explore.md) -> a `Space` that
draws the sampled parameters of a network, seeded, and checks the constraints between them. Never imports torch.

    space AnyNetX_D of anynet(stem_width = 32) {
        sample d1..d4 = int(1, 16)                        # integer range, uniform
        sample w1..w4 = int(8, 1024, dist=log, q=8)       # log-uniform, quantized to multiples of 8
        sample b1..b4 = choice(1.0, 0.5, 0.25)            # a list of choices
        sample g1..g4 = int(1, 32, dist=pow2)             # powers of two
        shared b1..b4                                     # one value for all these names
        shared g1..g4
        non_decreasing w1..w4                             # w1 <= w2 <= w3 <= w4
        require round(w1 * b1) % g1 == 0                  # any condition on sampled and fixed values
        window flops(360e6, 400e6)                        # complexity windows, checked on the IR
    }

Each mistake is an ArchError at its place in the text. The FLOPs and parameter windows are checked by the
sampler (pycnn.explore.space), which elaborates each draw to the IR."""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..opspec import LANGUAGE_ACTS
from . import ast as A
from .checks import show
from .errors import ArchError, did_you_mean
from .evaluate import Evaluator, Symbol, _is_number
from .library import Program, load_program

LAWS = ("int", "real", "choice")
DISTS = ("uniform", "log", "pow2")
MEASURES = ("flops", "params")  # window names: multiply-adds and parameters of the whole network
MAX_CHOICES = 256
_MAX_KNOWN = 100_000  # require outcomes remembered per space


@dataclass(frozen=True)
class Param:
    """One sampled parameter: an int or real range with a distribution and a quantum, or a list of choices."""
    name: str
    type: str = "int"  # int | real | choice
    low: float = 0
    high: float = 0
    dist: str = "uniform"  # uniform | log | pow2
    q: float = 0  # quantization step (0: none; ints default to 1)
    choices: Optional[tuple] = None

    def sample(self, rng: random.Random):
        return self._draw(rng)

    def __getstate__(self):  # the cached draw function is a closure: made again after unpickling
        return {k: v for k, v in self.__dict__.items() if k != "_draw"}

    @functools.cached_property
    def _draw(self):
        """sample() as a function of the generator, its constants computed once (drawing is the sampler's inner
        loop): uniform(a, b) written as a + (b - a) * random(), as Random.uniform computes it."""
        if self.choices is not None:
            choices = self.choices
            return lambda rng: rng.choice(choices)
        if self.dist == "pow2":
            lo, hi = int(math.log2(self.low)), int(math.log2(self.high))
            return lambda rng: 2 ** rng.randint(lo, hi)
        exp, floor = math.exp, math.floor
        if self.type == "int" and not self.q and self.dist != "log":
            low, span, high = self.low, self.high + 1 - self.low, int(self.high)
            return lambda rng: min(int(floor(low + span * rng.random())), high)
        q = self.q or (1 if self.type == "int" else 0)
        lowest, highest = (math.ceil(self.low / q) * q, math.floor(self.high / q) * q) if q else (0, 0)
        if self.dist == "log":
            low, span = math.log(self.low), math.log(self.high) - math.log(self.low)
            if self.type == "int":  # the commonest law (widths), written out: one call less a draw
                return lambda rng: int(round(min(max(round(exp(low + span * rng.random()) / q) * q, lowest),
                                                 highest)))
            value_of = lambda rng: exp(low + span * rng.random())  # noqa: E731
        else:
            low, span = self.low, self.high - self.low
            value_of = lambda rng: low + span * rng.random()  # noqa: E731
        if self.type == "int":
            return lambda rng: int(round(min(max(round(value_of(rng) / q) * q, lowest), highest)))
        if q:
            return lambda rng: round(min(max(round(value_of(rng) / q) * q, lowest), highest), 10)
        return lambda rng: round(value_of(rng), 10)

    def law(self) -> tuple:
        """Everything but the name: parameters with equal laws may be shared."""
        return self.type, self.low, self.high, self.dist, self.q, self.choices


@dataclass
class Space:
    """A design space: the network, its fixed and sampled parameters, constraints and complexity windows."""
    name: str
    network: str
    arch: Path  # the .arch file that defines the network (what a trial compiles)
    program: Program = field(repr=False)
    fixed: dict  # network parameters set for every sample (Python values, as compile-time overrides)
    params: Dict[str, Param]  # sampled, in the order written (the order they are drawn)
    shared: List[Tuple[str, ...]] = field(default_factory=list)
    non_decreasing: List[Tuple[str, ...]] = field(default_factory=list)
    requires: List[A.Expr] = field(default_factory=list)
    flops: Optional[Tuple[float, float]] = None
    param_count: Optional[Tuple[float, float]] = None
    _leader: Dict[str, str] = field(default_factory=dict, repr=False)  # shared name -> the name drawn for it
    # what the requires read and gave, by index (not copied by dataclasses.replace: other requires, other facts)
    _reads: dict = field(default_factory=dict, init=False, repr=False)  # index -> the names it reads
    _known: dict = field(default_factory=dict, init=False, repr=False)  # (index, their values) -> true/false
    _plan: Optional[tuple] = field(default=None, init=False, repr=False)  # draw_satisfying's, made once

    @classmethod
    def load(cls, source, name: Optional[str] = None, file: Optional[str] = None) -> "Space":
        """The space `name` (default: the first) of an .arch file or text."""
        program = load_program(source, file)
        if not program.spaces:
            raise ArchError(f"{program.main.path}: the text defines no design space (`space NAME of NETWORK "
                            f"{{ ... }}`)")
        if name is None:
            name = next(iter(program.spaces))
        if name not in program.spaces:
            raise ArchError(f"no design space named '{name}'" + did_you_mean(name, program.spaces)
                            + f"; defined: {', '.join(program.spaces)}")
        return space_of(program, program.spaces[name])

    def draw(self, rng: random.Random) -> dict:
        """One draw of every sampled parameter, in the order written (a shared one drawn once, at its first
        name); no constraint checked."""
        values = {}
        for name, param in self.params.items():
            leader = self._leader.get(name, name)
            values[name] = values[leader] if leader in values else param.sample(rng)
        return values

    def satisfies(self, values: dict) -> bool:
        """Whether a draw meets the `non_decreasing` and `require` constraints."""
        for names in self.non_decreasing:
            for a, b in zip(names, names[1:]):
                if not values[a] <= values[b]:
                    return False
        env = None
        for i in range(len(self.requires)):
            if env is None:
                env = {**self._fixed_values, **values}
            if not self._holds(i, env):
                return False
        return True

    def _require_reads(self, i: int) -> tuple:
        reads = self._reads.get(i)
        if reads is None:
            reads = self._reads[i] = tuple(sorted({n.id for n in _names_in(self.requires[i])}))
        return reads

    def _holds(self, i: int, env: dict) -> bool:
        """Whether require i holds in env (the fixed values and at least the sampled names it reads)."""
        # a condition is a function of the names it reads: remembered by their values (draws repeat them)
        reads = self._reads.get(i)
        if reads is None:
            reads = self._require_reads(i)
        key = (i, tuple([env[n] for n in reads]))
        ok = self._known.get(key)
        if ok is None:
            expr = self.requires[i]
            ok = Evaluator(env, self.program.source_of).eval(expr)
            if not isinstance(ok, bool):
                raise ArchError(f"a require must be true or false, got {show(ok)} (compare it: like "
                                f"`x % 8 == 0`)", expr.loc, self.program.source_of(expr.loc.file))
            if len(self._known) < _MAX_KNOWN:
                self._known[key] = ok
        return ok

    def draw_satisfying(self, rng: random.Random, tries: int) -> Tuple[Optional[dict], int]:
        """A draw that meets every constraint, and the number of partial draws refused on the way; (None, tries)
        when `tries` draws, partial or whole, found none.

        The drawn parameters fall into groups that no constraint links (the four depths of AnyNetX_E, its
        widths with the bottleneck and group width that `require` ties to them, ...). Each group is drawn
        parameter by parameter and drawn again from its start as soon as a constraint whose names are all drawn
        fails. The parameters are independent before the constraints, so the constrained law is the product of
        each group's constrained law, and redrawing a group until it passes samples that law exactly: the same
        distribution as drawing every parameter and refusing the whole draw (`draw` + `satisfies`), far fewer
        values drawn. Not the same values for a seed: the generator is consumed differently."""
        plan = self._plan
        if plan is None:
            plan = self._plan = _draw_plan(self)
        constants, groups = plan
        known, reads = self._known, self._reads  # (_draw_plan has read every require's names)
        env = dict(self._fixed_values)
        if not all(self._holds(i, env) for i in constants):
            return None, tries
        refused = 0
        while True:
            deferred = False  # a require that failed to evaluate: another may guard it (`g > 0 and w % g == 0`)
            for steps in groups:
                k = 0
                while k < len(steps):
                    name, draw, followers, pairs, requires = steps[k]
                    value = env[name] = draw(rng)
                    for f in followers:
                        env[f] = value
                    ok = True
                    for a, b in pairs:
                        if not env[a] <= env[b]:
                            ok = False
                            break
                    if ok:
                        for i in requires:
                            holds = known.get((i, tuple([env[n] for n in reads[i]])))  # _holds' memory, inlined
                            if holds is None:
                                try:
                                    holds = self._holds(i, env)
                                except ArchError:  # decided below, in the written order, as whole draws decide it
                                    deferred = True
                                    continue
                            if not holds:
                                ok = False
                                break
                    if ok:
                        k += 1
                        continue
                    refused += 1
                    if refused >= tries:
                        return None, tries
                    k = 0
            values = {name: env[name] for name in self.params}
            if not deferred or self.satisfies(values):
                return values, refused
            refused += 1
            if refused >= tries:
                return None, tries

    @property
    def _fixed_values(self) -> dict:
        return {k: Symbol(v) if isinstance(v, str) else v for k, v in self.fixed.items()}


def space_of(program: Program, sdef: A.SpaceDef) -> Space:
    """Elaborate a `space` definition: every name, law, constraint and window checked against the network."""
    source = program.source_of(sdef.loc.file)

    def error(message, loc):
        return ArchError(message, loc, source)

    if sdef.network not in program.networks:
        raise error(f"unknown network '{sdef.network}'" + did_you_mean(sdef.network, program.networks),
                    sdef.network_loc)
    defn, seen = program.networks[sdef.network], set()
    while isinstance(defn, A.NetworkAlias) and defn.name not in seen and defn.base in program.networks:
        seen.add(defn.name)
        defn = program.networks[defn.base]
    if not isinstance(defn, A.NetworkDef):
        raise error(f"network '{sdef.network}' is an alias that leads to no network", sdef.network_loc)
    network_params = [p.name for p in defn.params]
    symbols = set(program.blocks) | set(LANGUAGE_ACTS) | {"none"}
    ev = Evaluator({}, program.source_of, symbols)

    def check_param(name, loc):
        if name not in network_params:
            raise error(f"network '{sdef.network}' has no parameter '{name}'" + did_you_mean(name, network_params)
                        + f"; its parameters: {', '.join(network_params)}", loc)

    fixed: Dict[str, object] = {}
    for arg in sdef.args:
        if arg.name is None:
            raise error("the network's fixed parameters are given by name (name = value)", arg.loc)
        check_param(arg.name, arg.loc)
        if arg.name in fixed:
            raise error(f"parameter '{arg.name}' given twice", arg.loc)
        fixed[arg.name] = _python(ev.eval(arg.value))

    params: Dict[str, Param] = {}
    where: Dict[str, A.Loc] = {}
    shared, non_decreasing, requires = [], [], []
    windows: Dict[str, Tuple[float, float]] = {}
    leader: Dict[str, str] = {}
    for stmt in sdef.body:
        if isinstance(stmt, A.SpaceSample):
            law = _law(stmt.law, ev, error)
            for name in stmt.names:
                check_param(name, stmt.loc)
                if name in fixed:
                    raise error(f"'{name}' is fixed in the space's header; it cannot be sampled too", stmt.loc)
                if name in params:
                    raise error(f"'{name}' is sampled twice (first at line {where[name].line})", stmt.loc)
                params[name] = Param(name, **law)
                where[name] = stmt.loc
        elif isinstance(stmt, A.SpaceWindow):
            if stmt.measure not in MEASURES:
                raise error(f"unknown window '{stmt.measure}'" + did_you_mean(stmt.measure, MEASURES)
                            + f"; windows: {', '.join(MEASURES)}", stmt.measure_loc)
            if stmt.measure in windows:
                raise error(f"a second {stmt.measure} window", stmt.loc)
            lo, hi = ev.eval(stmt.low), ev.eval(stmt.high)
            if not (_is_number(lo) and _is_number(hi) and 0 <= lo <= hi):
                raise error(f"a window needs numbers 0 <= low <= high, got ({show(lo)}, {show(hi)})", stmt.loc)
            windows[stmt.measure] = (float(lo), float(hi))
        elif stmt.kind == "require":
            for name_node in _names_in(stmt.expr):
                if name_node.id not in params and name_node.id not in fixed:
                    hint = did_you_mean(name_node.id, list(params) + list(fixed))
                    raise error(f"unknown name '{name_node.id}' in a require (it may read the sampled and fixed "
                                f"parameters declared before it)" + hint, name_node.loc)
            requires.append(stmt.expr)
        else:  # shared, non_decreasing
            for name in stmt.names:
                if name not in params:
                    raise error(f"'{name}' is not a sampled parameter (sample it before this line)"
                                + did_you_mean(name, params), stmt.loc)
            if len(set(stmt.names)) < 2:
                raise error(f"{stmt.kind} needs at least two different parameters", stmt.loc)
            if stmt.kind == "shared":
                first = stmt.names[0]
                for name in stmt.names:
                    if name in leader:
                        raise error(f"'{name}' is in two shared lists", stmt.loc)
                    if params[name].law() != params[first].law():
                        raise error(f"shared parameters need one law: '{name}' (line {where[name].line}) is not "
                                    f"sampled like '{first}' (line {where[first].line})", stmt.loc)
                first = min(stmt.names, key=list(params).index)  # drawn where the earliest of them is written
                leader.update({name: first for name in stmt.names if name != first})
                shared.append(tuple(stmt.names))
            else:
                for name in stmt.names:
                    if params[name].type != "int" and params[name].type != "real" and not all(
                            _is_number(c) for c in params[name].choices):
                        raise error(f"non_decreasing compares numbers; '{name}' has choices that are not",
                                    stmt.loc)
                non_decreasing.append(tuple(stmt.names))
    if not params:
        raise error(f"space '{sdef.name}' samples no parameter (add `sample NAME = int(low, high)`)", sdef.loc)
    network_file = program.networks[sdef.network].loc.file
    return Space(name=sdef.name, network=sdef.network, arch=Path(network_file), program=program, fixed=fixed,
                 params=params, shared=shared, non_decreasing=non_decreasing, requires=requires,
                 flops=windows.get("flops"), param_count=windows.get("params"), _leader=leader)


def _draw_plan(space: Space) -> tuple:
    """(the requires that read no sampled name, the groups of draw_satisfying): each group the steps (name, its
    Param's draw function, the names that share its value, the non_decreasing pairs and requires whose names are
    all drawn once it is), in the order the names are written; groups in the order of their first name."""
    order = list(space.params)
    leader = {name: space._leader.get(name, name) for name in order}
    links = []  # (the drawn names a constraint reads, the constraint)
    for names in space.non_decreasing:
        links += [({leader[a], leader[b]}, ("pair", (a, b))) for a, b in zip(names, names[1:])]
    constants = []
    for i in range(len(space.requires)):
        drawn = {leader[n] for n in space._require_reads(i) if n in leader}
        if drawn:
            links.append((drawn, ("require", i)))
        else:
            constants.append(i)
    group = {name: name for name in order if leader[name] == name}  # union-find over the drawn names

    def root(n):
        while group[n] != n:
            group[n] = group[group[n]]
            n = group[n]
        return n

    for drawn, _ in links:
        first, *rest = drawn
        for n in rest:
            group[root(n)] = root(first)
    position = {name: i for i, name in enumerate(order)}
    last = [max(drawn, key=position.get) for drawn, _ in links]  # the name after whose draw a constraint is checked
    groups: Dict[str, list] = {}
    for name in order:
        if leader[name] != name:
            continue
        pairs = tuple(c[1] for (_, c), at in zip(links, last) if at == name and c[0] == "pair")
        requires = tuple(c[1] for (_, c), at in zip(links, last) if at == name and c[0] == "require")
        followers = tuple(n for n in order if n != name and leader[n] == name)
        groups.setdefault(root(name), []).append((name, space.params[name]._draw, followers, pairs, requires))
    return tuple(constants), tuple(tuple(steps) for steps in groups.values())


def _law(call: A.Call, ev: Evaluator, error) -> dict:
    """Param fields from `int(low, high, dist=log, q=8)`, `real(...)` or `choice(a, b, ...)`."""
    if call.name not in LAWS:
        raise error(f"unknown law '{call.name}'" + did_you_mean(call.name, LAWS) + "; a parameter is sampled by "
                    "int(low, high, dist=, q=), real(low, high, dist=, q=) or choice(a, b, ...)", call.name_loc)
    if call.name == "choice":
        if not call.args or len(call.args) > MAX_CHOICES:
            raise error(f"choice needs 1 to {MAX_CHOICES} values", call.loc)
        for arg in call.args:
            if arg.name is not None:
                raise error("choice takes values, not name = value", arg.loc)
        return {"type": "choice", "choices": tuple(_python(ev.eval(a.value)) for a in call.args)}
    names = ["low", "high", "dist", "q"]
    given: Dict[str, A.Arg] = {}
    positional = [a for a in call.args if a.name is None]
    if len(positional) > 2:
        raise error(f"{call.name} takes low and high by position, then dist= and q=", positional[2].loc)
    for i, arg in enumerate(call.args):
        key = arg.name if arg.name is not None else names[i]
        if key not in names:
            raise error(f"{call.name} has no parameter '{key}'" + did_you_mean(key, names)
                        + f"; its parameters: {', '.join(names)}", arg.loc)
        if key in given:
            raise error(f"argument '{key}' given twice", arg.loc)
        given[key] = arg
    for key in ("low", "high"):
        if key not in given:
            raise error(f"{call.name} needs the argument '{key}'", call.loc)
    dist = "uniform"
    if "dist" in given:
        node = given["dist"].value
        if not isinstance(node, A.Name) or node.id not in DISTS:
            raise error(f"dist must be one of {', '.join(DISTS)}" + (did_you_mean(node.id, DISTS)
                        if isinstance(node, A.Name) else ""), node.loc)
        dist = node.id
    values = {}
    for key in ("low", "high", "q"):
        if key in given:
            v = ev.eval(given[key].value)
            if not _is_number(v) or (call.name == "int" and not float(v).is_integer()):
                kind = "an integer" if call.name == "int" else "a number"
                raise error(f"{call.name}: {key} must be {kind}, got {show(v)}", given[key].value.loc)
            values[key] = int(v) if call.name == "int" else float(v)
    low, high, q = values["low"], values["high"], values.get("q", 0)
    if low > high:
        raise error(f"{call.name}: low {show(low)} is above high {show(high)}", call.loc)
    if q < 0:
        raise error(f"{call.name}: q must be >= 0, got {show(q)}", given["q"].value.loc)
    if dist in ("log", "pow2") and low <= 0:
        raise error(f"{call.name}: a {dist} range needs low > 0, got {show(low)}", given["low"].value.loc)
    if dist == "pow2":
        if call.name != "int" or "q" in given:
            raise error("dist=pow2 draws integer powers of two: write int(low, high, dist=pow2), without q",
                        call.loc)
        for key in ("low", "high"):
            v = values[key]
            if v & (v - 1):
                raise error(f"int: with dist=pow2, {key} must be a power of two, got {v}", given[key].value.loc)
    if q and not (math.isfinite(low / q) and math.isfinite(high / q) and (high - low) / q <= MAX_QUANTA):
        raise error(f"{call.name}: q={show(q)} is too small for [{show(low)}, {show(high)}] (at most "
                    f"{MAX_QUANTA:.0e} steps)", given["q"].value.loc)
    if q and math.ceil(low / q) * q > high:
        raise error(f"{call.name}: no multiple of q={show(q)} lies in [{show(low)}, {show(high)}]", call.loc)
    return {"type": call.name, "low": low, "high": high, "dist": dist, "q": q}


MAX_QUANTA = 1e12  # steps of q in a range: beyond it q is no quantization, and low / q may overflow


def _names_in(expr):
    """The Name nodes an expression reads (function names are not Names)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Name):
            yield node
        for value in vars(node).values():
            if isinstance(value, tuple):
                stack.extend(v for v in value if hasattr(v, "loc"))
            elif hasattr(value, "loc") and not isinstance(value, A.Loc):
                stack.append(value)


def _python(value):
    """A language value as a compile-time override (pycnn.compile(**overrides)): names and strings as text."""
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, tuple):
        return tuple(_python(v) for v in value)
    return value
