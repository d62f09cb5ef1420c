"""Syntax tree -> IR: evaluate expressions, bind parameters, expand stages, generators, repeats and blocks,
infer channels and shapes, and report every mistake as an ArchError pointing at the text. Loading the files is
pycnn.dsl.library's job, the checks of values and names pycnn.dsl.checks's, the layers pycnn.opspec's.

Never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .. import ir
from ..opspec import LANGUAGE_ACTS, OPS, PRIMITIVES, REQUIRED, acts_with
from . import ast as A
from .checks import (KEYWORDS, RESERVED_NAMES, SYNONYMS, check_binding, check_value, normalized_default, show,
                     value_kind, within)
from .errors import ArchError, did_you_mean
from .evaluate import Budget, Evaluator, Symbol, _is_number
from .generators import GENERATORS, regnet_stages
from .library import Program, _definitions_in, library_dirs, load_program  # noqa: F401  (pycnn.zoo reads them here)
from .parse import MAX_SOURCE_BYTES

# the activations pycnn's BatchNorm kernels apply (Elaborator.runs_with_bn: looked up per layer, drawn often)
_BN_ACTS = frozenset(a for a in acts_with("bn_act") if a in PRIMITIVES and PRIMITIVES[a].op == "act")


@dataclass(frozen=True)
class Limits:
    """Networks beyond these are refused before anything is allocated, and text that would take too long to
    elaborate is refused in bounded time (docs/security.md). Pass your own to pycnn.parse/compile(limits=...)."""
    max_params: int = 500_000_000            # parameters in the whole network (2 GB in float32)
    max_activations: int = 1_000_000_000     # elements of one layer's output, per sample
    max_activation_bytes: int = 4 << 30      # all layers' outputs of one sample, in float32
    max_input_elements: int = 100_000_000    # the input of one sample (3x5773x5773)
    max_layers: int = 100_000                # layers after expansion
    max_depth: int = 64                      # nesting of block calls
    max_steps: int = 100_000                 # expression nodes evaluated + statements expanded (~0.1 s)
    max_source_bytes: int = MAX_SOURCE_BYTES  # each source file, main and libraries


# ------------------------------------------------------------------------------------------ elaboration

class _Namer:
    """Readable, unique layer names within one scope: conv1, bn1, conv2, ..."""

    def __init__(self):
        self.counts: Dict[str, int] = {}

    def next(self, base: str) -> str:
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        return f"{base}{n}"


@dataclass
class _Ctx:
    ev: Evaluator
    stack: Tuple[str, ...]  # block names being elaborated (recursion detection)


class Elaborator:
    def __init__(self, program: Program, limits: Limits = Limits(), symbols: Optional[set] = None):
        self.program = program
        self.limits = limits
        self.n_layers = 0
        self.n_params = 0
        self.n_iterations = 0
        self.activation_elements = 0
        self.budget = Budget(limits.max_steps)
        # the names that stand for themselves (symbols: computed once by a caller elaborating many networks)
        self.symbols = set(program.blocks) | set(LANGUAGE_ACTS) | {"none", ir.SAME} if symbols is None else symbols
        self.num_blocks = 0  # blocks in the network's stages (`num_blocks` in blocks)
        self.stage_blocks = 0  # stage blocks elaborated so far (the next one's `block_index`)
        self.path: List[str] = []  # the module path of the block being elaborated (s3.b2)
        # cells (blocks with several inputs): the network outputs so far, (module path, shape), latest last; the
        # inputs of the cell about to be called, (paths, shapes); a stage's `from` for its first block
        self.history: List[Tuple[str, tuple]] = []
        self.pending_cell: Optional[Tuple[tuple, tuple]] = None
        self.stage_sources: tuple = ()

    # ---- helpers
    def src(self, file):
        return self.program.source_of(file)

    def error(self, message, loc):
        return ArchError(message, loc, self.src(loc.file) if loc is not None else None)

    def evaluator(self, env, in_width=None):
        return Evaluator(env, self.src, self.symbols, in_width, self.budget)

    # ---- networks
    def network(self, name: Optional[str] = None, overrides: Optional[dict] = None) -> ir.NetworkIR:
        prog = self.program
        if name is not None and not isinstance(name, str):
            raise TypeError(f"network must be a network's name (str) or None, got {type(name).__name__}")
        if name is None:
            if not prog.main_networks:
                raise ArchError(f"{prog.main.path}: the text defines no network")
            name = prog.main_networks[0]
        if name not in prog.networks:
            raise ArchError(f"no network named '{name}'" + did_you_mean(name, prog.networks)
                            + f"; defined: {', '.join(prog.main_networks) or 'none'}")
        defn = prog.networks[name]
        alias_args: List[Tuple[A.NetworkAlias, tuple]] = []
        seen = set()
        while isinstance(defn, A.NetworkAlias):
            if defn.name in seen:
                raise self.error(f"network alias '{defn.name}' refers to itself", defn.loc)
            seen.add(defn.name)
            alias_args.append(defn)
            if defn.base not in prog.networks:
                raise self.error(f"unknown network '{defn.base}'" + did_you_mean(defn.base, prog.networks),
                                 defn.base_loc)
            defn = prog.networks[defn.base]
        env: Dict[str, object] = {}
        given: Dict[str, object] = {}
        # alias arguments: the outermost alias wins
        for alias in reversed(alias_args):
            ev = self.evaluator(dict(env))
            for arg in alias.args:
                if arg.name is None:
                    raise self.error("a network alias takes keyword arguments only (name = value)", arg.loc)
                if arg.name not in [p.name for p in defn.params]:
                    raise self.error(f"network '{defn.name}' has no parameter '{arg.name}'"
                                     + did_you_mean(arg.name, [p.name for p in defn.params]), arg.loc)
                given[arg.name] = ev.eval(arg.value)
        param_names = {p.name for p in defn.params}
        for key, value in (overrides or {}).items():
            if key not in param_names:
                raise ArchError(f"network '{defn.name}' has no parameter '{key}'"
                                + did_you_mean(key, [p.name for p in defn.params])
                                + f"; its parameters: {', '.join(p.name for p in defn.params)}")
            given[key] = self.override_value(key, value)
        overrides = overrides or {}
        for p in defn.params:
            if p.name in given:
                env[p.name] = given[p.name]
                if p.name in overrides and p.default is not None:
                    self._check_override(p, env, overrides[p.name])
            elif p.default is not None:
                env[p.name] = self.evaluator(env).eval(p.default)
            else:
                raise self.error(f"network parameter '{p.name}' has no default and was not given", p.loc)
        if "input" not in env:
            raise self.error(f"network '{defn.name}' needs an `input` parameter (like input = 3x224x224)", defn.loc)
        shape = env["input"]

        def bad_param(key, message):
            if key in (overrides or {}):  # the override is wrong, not the file's default
                return ArchError(f"override {key}={_show_override(overrides[key])}: {key} {message}")
            p = next(p for p in defn.params if p.name == key)
            return self.error(f"{key} {message}", p.loc)

        if (not isinstance(shape, tuple) or len(shape) not in (1, 3)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            raise bad_param("input", f"must be a shape like 3x224x224 with sizes >= 1, got {show(shape)}")
        elements = 1
        for d in shape:
            elements *= d
        if elements > self.limits.max_input_elements:
            raise bad_param("input", f"of {ir.fmt_shape(shape)} = {elements:,} elements per sample exceeds the limit "
                                     f"of {self.limits.max_input_elements:,}")
        self.activation_elements = elements
        if "classes" in env and (not isinstance(env["classes"], int) or isinstance(env["classes"], bool)
                                 or env["classes"] < 1):
            raise bad_param("classes", f"must be an integer >= 1, got {show(env['classes'])}")
        params = dict(env)
        self.num_blocks = self._count_stage_blocks(defn, dict(env), shape)
        parts: List[ir.Sequence] = []
        used_names = set()
        self.history = [("input", shape)]
        stage_counter = 0
        for stmt in defn.body:
            ev = self.evaluator(env, in_width=shape[0] if len(shape) == 3 else None)
            ctx = _Ctx(ev, ())
            self.path = [stmt.name] if isinstance(stmt, (A.Stage, A.Part)) else []
            if isinstance(stmt, A.Let):
                check_binding(stmt.name, stmt.loc, self.src(stmt.loc.file), "a `let`")
                env[stmt.name] = ev.eval(stmt.value)
            elif isinstance(stmt, A.Stage):
                self._check_part_name(stmt.name, used_names, stmt.loc)
                self.stage_sources = stmt.sources
                seq = self.stage(stmt.name, stmt.count, stmt.call, stmt.stride, shape, ctx, stmt.loc)
                parts.append(seq)
                shape = seq.out_shape
                stage_counter += 1
            elif isinstance(stmt, A.Part):
                if (len(stmt.items) == 1 and isinstance(stmt.items[0], A.Call)
                        and stmt.items[0].name in GENERATORS):
                    for seq in self.generator(stmt.items[0], shape, ctx, stage_counter):
                        self._check_part_name(seq.name, used_names, stmt.loc)
                        parts.append(seq)
                        shape = seq.out_shape
                        stage_counter += 1
                    continue
                self._check_part_name(stmt.name, used_names, stmt.loc)
                self._prepare_part_cell(stmt, ctx)
                items = self.resolve(stmt.items, ctx, allow_branches=False)
                nodes, out = self.sequence(items, shape, _Namer(), ctx)
                parts.append(ir.Sequence(stmt.name, nodes, shape, out, stmt.loc, kind="part"))
                self.history.append((stmt.name, out))
                shape = out
            else:  # pragma: no cover - the grammar allows nothing else
                raise self.error("unexpected statement in a network", stmt.loc)
        return ir.NetworkIR(defn.name if not alias_args else alias_args[0].name, params["input"], parts, params,
                          self.program.main.source, self.program.main.path)

    def override_value(self, key: str, value):
        """A compile-time override as a language value, checked (the sampler remembers them)."""
        return _checked_value(_from_python(key, value), key)

    def _check_override(self, param: A.Param, env, raw):
        """A compile-time override has the kind of value its parameter's default has (a number for a number,
        a shape for a shape, ...); the message names the override, as the user wrote it in Python."""
        try:
            default = self.evaluator(env).eval(param.default)
        except ArchError:
            return  # a default that depends on what is not known here: nothing to compare with
        value = env[param.name]
        if value_kind(value) != value_kind(default):
            raise ArchError(f"override {param.name}={raw!r}: expected {value_kind(default)} like the default "
                            f"{show(default)}, got {value_kind(value)}")

    def _count_stage_blocks(self, defn, env, shape) -> int:
        """The number of blocks the network's stages will have (`num_blocks`), counted before elaborating them.
        A count that does not evaluate here is reported when its stage is elaborated."""
        total = 0
        in_width = shape[0] if len(shape) == 3 else None
        ev = self.evaluator(env, in_width)
        for stmt in defn.body:
            try:
                if isinstance(stmt, A.Let):
                    env[stmt.name] = ev.eval(stmt.value)
                elif isinstance(stmt, A.Stage):
                    count = ev.eval(stmt.count)
                    total += count if isinstance(count, int) and not isinstance(count, bool) else 0
                elif (isinstance(stmt, A.Part) and len(stmt.items) == 1 and isinstance(stmt.items[0], A.Call)
                        and stmt.items[0].name in GENERATORS):
                    a, _ = self.bind_spec(stmt.items[0], GENERATORS[stmt.items[0].name], ev, stmt.items[0].name)
                    total += a["depth"]  # regnet: the stages' depths add up to `depth`
            except ArchError:
                continue
        return min(total, self.limits.max_layers)

    def _libraries_searched(self, hint: str) -> str:
        """Where the `use`d libraries were found, for a name that none of them defines (and nothing is close to)."""
        if hint or not self.program.resolved:
            return hint
        return "; searched " + ", ".join(f"`use {name}` = {where}" for name, where in self.program.resolved.items())

    def condition(self, expr, ev: Evaluator) -> bool:
        """The value of an `if` or `when` condition: true or false, nothing else (`if 8` is a mistake)."""
        value = ev.eval(expr)
        if not isinstance(value, bool):
            raise self.error(f"a condition must be true or false, got {show(value)} (compare it: like "
                             f"`x != 0` or `x > 0`)", expr.loc)
        return value

    def _check_part_name(self, name, used, loc):
        if name in used:
            raise self.error(f"part name '{name}' is used twice", loc)
        if name in RESERVED_NAMES or name in KEYWORDS or name.startswith("_"):
            raise self.error(f"'{name}' cannot name a part (reserved)", loc)
        used.add(name)

    # ---- statements -> flat list of calls / branches / merges
    def resolve(self, stmts, ctx: _Ctx, allow_branches: bool) -> list:
        out = []
        for stmt in stmts:
            self.budget.spend(stmt.loc, self.src)
            if type(stmt) is A.Call:  # the commonest statement first (the isinstance chain below costs)
                out.append(stmt)
                continue
            if isinstance(stmt, A.Let):
                check_binding(stmt.name, stmt.loc, self.src(stmt.loc.file), "a `let`")
                ctx.ev.env[stmt.name] = ctx.ev.eval(stmt.value)
            elif isinstance(stmt, A.If):
                body = stmt.then if self.condition(stmt.cond, ctx.ev) else stmt.otherwise
                out.extend(self.resolve(body, ctx, allow_branches))
            elif isinstance(stmt, A.Repeat):
                count = ctx.ev.eval(stmt.count)
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise self.error(f"repeat count must be an integer >= 0, got {count!r}", stmt.count.loc)
                self.n_iterations += count
                if self.n_iterations > self.limits.max_layers:
                    raise self.error(f"too many repetitions (limit {self.limits.max_layers} in all)", stmt.loc)
                for _ in range(count):
                    out.extend(self.resolve(stmt.body, ctx, allow_branches))
            elif isinstance(stmt, (A.CellInput, A.CellNode, A.CellOutput)):
                if not allow_branches:
                    raise self.error(f"`{_CELL_WORDS[type(stmt)]}` belongs directly in a cell's body (a block that "
                                     f"declares `input x, prev`)", stmt.loc)
                out.append(stmt)
            elif isinstance(stmt, (A.Branch, A.Merge)):
                if not allow_branches:
                    what = "branch" if isinstance(stmt, A.Branch) else "merge"
                    raise self.error(f"a {what} may only appear directly in a block body", stmt.loc)
                out.append(stmt)
            elif isinstance(stmt, A.Call):
                out.append(stmt)
            else:  # pragma: no cover
                raise self.error("unexpected statement", stmt.loc)
        return out

    # ---- sequences
    def sequence(self, calls, shape, namer: _Namer, ctx: _Ctx):
        nodes = []
        for call in calls:
            if isinstance(call, (A.Branch, A.Merge)):
                raise self.error("branches and merges belong directly in a block body", call.loc)
            call = self.callee(call, ctx)
            if call is None:
                continue
            if nodes and self.runs_with_bn(call, nodes[-1]):
                nodes.append(self.act_after_bn(call, nodes[-1]))
                continue
            node = self.call(call, shape, namer, ctx)
            nodes.append(node)
            shape = node.out_shape
        return nodes, shape

    @staticmethod
    def runs_with_bn(call: A.Call, prev) -> bool:
        """Whether `call` is an activation right after a BatchNorm that pycnn's BatchNorm kernels can apply: a
        layer without a module of its own (module names: `conv bn relu` is conv1, bn1). Fusing is the passes'."""
        return call.name in _BN_ACTS and isinstance(prev, ir.Layer) and prev.op == "bn"

    def act_after_bn(self, call: A.Call, bn: ir.Layer) -> ir.Layer:
        """The activation layer after `bn`, named `<bn>+<act>` (bn1+relu: no module, no number of its own)."""
        if call.args:
            raise self.error(f"{call.name} takes no arguments", call.loc)
        attrs = {"kind": call.name}
        out_shape, params, flops = ir.infer("act", attrs, bn.out_shape)
        # not counted against the layer limits: today's networks count bn+act as one layer
        return ir.Layer(f"{bn.name}+{call.name}", "act", attrs, bn.out_shape, out_shape, params, flops, call.loc,
                        own_module=False)

    def callee(self, call: A.Call, ctx: _Ctx) -> Optional[A.Call]:
        """A call through a parameter that holds a block or an activation (`block b(unit=basic) { unit(8) }`)
        calls that block or layer; one holding `none` is no layer (None)."""
        value = ctx.ev.env.get(call.name)
        if not isinstance(value, Symbol):
            return call
        if value.name == "none":
            if call.args:
                raise self.error(f"'{call.name}' is none here: it takes no arguments", call.loc)
            return None
        return A.Call(value.name, call.args, call.loc, call.name_loc)

    def call(self, call: A.Call, shape, namer: _Namer, ctx: _Ctx, extra=None, name=None, index=0,
             global_index=None):
        if call.name in PRIMITIVES:
            return self.primitive(call, shape, namer, ctx)
        if call.name in self.program.blocks:
            bdef = self.program.blocks[call.name]
            return self.block(bdef, call, shape, name or namer.next(call.name), ctx, extra or {}, index,
                              global_index)
        if call.name in GENERATORS:
            raise self.error(f"generator '{call.name}' must be the only item of a network part "
                             f"(like body = {call.name}(...))", call.name_loc)
        candidates = list(PRIMITIVES) + list(self.program.blocks) + list(GENERATORS)
        raise self.error(f"unknown layer or block '{call.name}'"
                         + self._libraries_searched(did_you_mean(call.name, candidates)), call.name_loc)

    # ---- argument binding
    def bind_values(self, call: A.Call, names: List[str], ev: Evaluator, what: str, extra=None):
        """Evaluate a call's arguments in the caller's evaluator and bind them to parameter names."""
        bound: Dict[str, object] = {}
        locs: Dict[str, A.Loc] = {}
        positional = [a for a in call.args if a.name is None]
        if len(positional) > len(names):
            raise self.error(f"{what} takes at most {len(names)} positional argument"
                             f"{'s' if len(names) != 1 else ''}, got {len(positional)}", positional[len(names)].loc)
        seen_keyword = False
        pos_i = 0
        for arg in call.args:
            if arg.name is None:
                if seen_keyword:
                    raise self.error("positional argument after a keyword argument", arg.loc)
                key = names[pos_i]
                pos_i += 1
            else:
                seen_keyword = True
                key = arg.name
                if key not in names:
                    hint = did_you_mean(key, names)
                    if not hint and SYNONYMS.get(key) in names:
                        hint = f" (did you mean '{SYNONYMS[key]}'?)"
                    raise self.error(f"{what} has no parameter '{key}'" + hint
                                     + (f"; its parameters: {', '.join(names)}" if names else
                                        "; it takes no arguments"), arg.loc)
                if key in bound:
                    raise self.error(f"argument '{key}' given twice", arg.loc)
            bound[key] = ev.eval(arg.value)
            locs[key] = arg.value.loc
        for key, (value, loc) in (extra or {}).items():
            if key in bound:
                raise self.error(f"argument '{key}' is set by the stage; do not pass it too", locs[key])
            bound[key] = value
            locs[key] = loc
        return bound, locs

    def check_kind(self, value, kind, key, what, loc):
        return check_value(value, kind, key, what, loc, self.error, self.program.blocks)

    def bind_spec(self, call: A.Call, spec, ev, what):
        names = [n for n, _, _ in spec]
        bound, locs = self.bind_values(call, names, ev, what)
        attrs, attr_locs = {}, {}
        for key, default, kind in spec:
            if key in bound:
                attrs[key] = self.check_kind(bound[key], kind, key, what, locs[key])
                attr_locs[key] = locs[key]
            elif default is REQUIRED:
                raise self.error(f"{what} needs the argument '{key}'", call.loc)
            else:
                attrs[key] = default if default is None else normalized_default(default, kind)
                attr_locs[key] = call.loc
        return attrs, attr_locs

    # ---- primitives
    def primitive(self, call: A.Call, shape, namer: _Namer, ctx: _Ctx) -> ir.Layer:
        op = PRIMITIVES[call.name].op
        a, locs = self.bind_spec(call, PRIMITIVES[call.name].args, ctx.ev, call.name)
        attrs: dict = {}
        if call.name in ("conv", "wsconv", "dwconv"):
            if len(shape) != 3:
                raise self.error(f"{call.name} needs an image input (channels x height x width), got "
                                 f"{ir.fmt_shape(shape)}", call.name_loc)
            cin = shape[0]
            k, d = a["k"], a["d"]
            if a["p"] is None and any(dd * (kk - 1) % 2 for kk, dd in zip(k, d)):
                raise self.error(f"{call.name}: the default padding d*(k-1)/2 is not a whole number for "
                                 f"k={ir.fmt_shape(k)} d={ir.fmt_shape(d)}; give p (p=0, a pair, or p=same for "
                                 f"TensorFlow's SAME)", locs.get("k", call.loc))
            p = a["p"] if a["p"] is not None else tuple(((kk - 1) // 2) * dd for kk, dd in zip(k, d))
            if call.name == "dwconv":
                out, groups = cin * a["multiplier"], cin
            else:
                out = a["out"]
                if a["groups"] is not None and a["group_width"] is not None:
                    raise self.error(f"{call.name}: give groups or group_width, not both", locs["group_width"])
                if a["group_width"] is not None:
                    gw = a["group_width"]
                    if cin % gw:
                        raise self.error(f"{call.name}: group_width={gw} does not divide the {cin} input channels",
                                         locs["group_width"])
                    groups = cin // gw
                else:
                    groups = a["groups"] or 1
            attrs = dict(out=out, k=k, s=a["s"], p=p, d=d, groups=groups, bias=a["bias"])
            if call.name == "wsconv":
                attrs.update(gamma=float(a["gamma"]), eps=float(a["eps"]))
            locs = dict(locs, out=locs.get("out", call.loc))
        elif op in ("maxpool", "avgpool"):
            if op == "avgpool" and a["k"] is None:
                op, attrs = "gap", {}
            else:
                attrs = dict(k=a["k"], s=a["s"] if a["s"] is not None else a["k"], p=a["p"], ceil=a["ceil"])
                if op == "avgpool":
                    attrs["count_pad"] = a["count_pad"]
        elif op == "act":
            attrs = {"kind": call.name}
        elif op == "adaptive_avgpool":
            attrs = {"size": a["size"]}
        else:
            attrs = dict(a)
        try:
            out_shape, params, flops = ir.infer(op, attrs, shape)
        except ir.ShapeError as e:
            message = e.message if e.message.startswith(op) else f"{call.name}: {e.message}"
            raise self.error(message, locs.get(e.arg, call.loc) if e.arg else call.loc) from None
        node = ir.Layer(namer.next(OPS[op].module_name or call.name), op, attrs, shape, out_shape,
                        params, flops, call.loc)
        self.account(node)
        return node

    def account(self, node: ir.Layer):
        self.n_layers += 1
        self.n_params += node.params
        lim = self.limits
        if self.n_layers > lim.max_layers:
            raise self.error(f"the network has more than {lim.max_layers} layers (the limit)", node.loc)
        if self.n_params > lim.max_params:
            raise self.error(f"the network exceeds the parameter limit: more than {lim.max_params:,} parameters",
                             node.loc)
        size = 1
        for dim in node.out_shape:
            size *= dim
        if size > lim.max_activations:
            raise self.error(f"activation of {ir.fmt_shape(node.out_shape)} = {size:,} elements exceeds the limit "
                             f"of {lim.max_activations:,}", node.loc)
        self.activation_elements += size
        if 4 * self.activation_elements > lim.max_activation_bytes:
            raise self.error(f"the layers' outputs up to here take {4 * self.activation_elements:,} bytes per sample "
                             f"in float32, more than the limit of {lim.max_activation_bytes:,}", node.loc)

    # ---- blocks
    def block(self, bdef: A.BlockDef, call: A.Call, shape, name: str, ctx: _Ctx, extra: dict, index: int,
              global_index: Optional[int] = None):
        """A block instance; an error inside its body says which instance, instantiated where."""
        self.budget.spend(call.loc, self.src)
        self.path.append(name)
        try:
            return self._block(bdef, call, shape, name, ctx, extra, index, global_index)
        except ArchError as e:
            if not within(e.loc, call.loc):
                loc = call.name_loc
                e.add_context(f"in block '{bdef.name}' (instance {'.'.join(self.path)}) instantiated at "
                              f"{loc.file}:{loc.line}:{loc.column}")
            raise
        finally:
            self.path.pop()

    def _block(self, bdef: A.BlockDef, call: A.Call, shape, name: str, ctx: _Ctx, extra: dict, index: int,
               global_index: Optional[int] = None):
        pending, self.pending_cell = self.pending_cell, None  # the inputs the network gives a cell (one call)
        shape = pending[1][0] if pending is not None else shape  # `in` is the cell's first input's width
        if bdef.name in ctx.stack:
            chain = " -> ".join(ctx.stack[ctx.stack.index(bdef.name):] + (bdef.name,))
            raise self.error(f"recursion: block '{bdef.name}' calls itself ({chain})", call.name_loc)
        self.n_layers += 1  # block instances count against the layer budget too (empty blocks cost time)
        if self.n_layers > self.limits.max_layers:
            raise self.error(f"the network has more than {self.limits.max_layers} layers and blocks (the limit)",
                             call.name_loc)
        if len(ctx.stack) >= self.limits.max_depth:
            raise self.error(f"blocks nested deeper than {self.limits.max_depth}", call.name_loc)
        names = [p.name for p in bdef.params]
        bound, _locs = self.bind_values(call, names, ctx.ev, f"block '{bdef.name}'", extra)
        in_width = shape[0] if len(shape) == 3 else None
        if global_index is None:  # not a stage's block: its enclosing block's, or the stage blocks before it
            global_index = ctx.ev.env.get("block_index", self.stage_blocks)
        env: Dict[str, object] = {"index": index, "block_index": global_index, "num_blocks": self.num_blocks}
        inner = _Ctx(self.evaluator(env, in_width), ctx.stack + (bdef.name,))
        for p in bdef.params:
            if p.name in bound:
                env[p.name] = bound[p.name]
            elif p.default is not None:
                env[p.name] = inner.ev.eval(p.default)
            else:
                raise self.error(f"block '{bdef.name}' needs the argument '{p.name}'", call.loc)
        if cell_inputs(bdef) is not None:
            return self._cell(bdef, call, shape, name, inner, pending)
        items = self.resolve(bdef.body, inner, allow_branches=True)
        stray = next((it for it in items if isinstance(it, (A.CellInput, A.CellNode, A.CellOutput))), None)
        if stray is not None:
            where = ("is written directly in the block body, not inside if or repeat" if isinstance(stray, A.CellInput)
                     else "belongs in a cell: a block that declares its inputs first (`input x, prev`)")
            raise self.error(f"`{_CELL_WORDS[type(stray)]}` {where}", stray.loc)
        namer = _Namer()
        first_branch = next((i for i, it in enumerate(items) if isinstance(it, (A.Branch, A.Merge))), None)
        if first_branch is None:
            nodes, out = self.sequence(items, shape, namer, inner)
            return ir.Sequence(name, nodes, shape, out, call.loc, kind="block", block=bdef.name)
        pre_calls = items[:first_branch]
        pre, x = self.sequence(pre_calls, shape, namer, inner)
        branches: List[ir.Branch] = []
        branch_locs = []
        merge: Optional[A.Merge] = None
        post_calls = []
        for it in items[first_branch:]:
            if merge is not None:
                if isinstance(it, A.Merge):
                    raise self.error(f"a second merge: a block has one merge (the first is at line "
                                     f"{merge.loc.line}); merge inside a nested block to merge twice", it.loc)
                if isinstance(it, A.Branch):
                    raise self.error(f"a branch after the merge (line {merge.loc.line}): every branch comes before "
                                     f"the merge", it.loc)
                post_calls.append(it)
                continue
            if isinstance(it, A.Merge):
                merge = it
                continue
            if isinstance(it, A.Call):
                raise self.error("a layer between branches; put it inside a branch, before the first branch or "
                                 "after the merge", it.loc)
            if it.kind == "main" and any(not b.nested for b in branches):
                raise self.error("a block has at most one main branch", it.loc)
            if it.name in [b.name for b in branches]:
                raise self.error(f"branch name '{it.name}' is used twice", it.loc)
            if it.name in RESERVED_NAMES or it.name.startswith("_"):
                raise self.error(f"'{it.name}' cannot name a branch (reserved)", it.loc)
            body = it.body
            if it.kind == "shortcut" and it.when is not None and not self.condition(it.when, inner.ev):
                body = ()
            branch_calls = self.resolve(body, inner, allow_branches=False)
            branch_namer = namer if it.kind == "main" else _Namer()
            nodes, out = self.sequence(branch_calls, x, branch_namer, inner)
            branches.append(ir.Branch(it.name, it.kind != "main", nodes, out))
            branch_locs.append(it.loc)
        if merge is None:
            if len(branches) == 1 and not branches[0].nested:  # only `main`: a plain sequence
                nodes, out = self.sequence(post_calls, branches[0].out_shape, namer, inner)
                children = pre + branches[0].children + nodes
                return ir.Sequence(name, children, shape, out, call.loc, kind="block", block=bdef.name)
            raise self.error(f"block '{bdef.name}' has branches but no `merge` (add, concat or mul)",
                             branch_locs[-1])
        if len(branches) < 2:
            raise self.error("a merge needs at least two branches", merge.loc)
        try:
            merged = ir.merge_shapes(merge.kind, [b.out_shape for b in branches])
        except ir.ShapeError as e:
            shapes = "; ".join(f"{b.name} {ir.fmt_shape(b.out_shape)}" for b in branches)
            raise self.error(f"merge {merge.kind}: {e.message.split(':')[0]} ({shapes})", merge.loc) from None
        post, out = self.sequence(post_calls, merged, namer, inner)
        direct = {n.name for n in pre + post} | {n.name for b in branches if not b.nested for n in b.children}
        for b, loc in zip(branches, branch_locs):
            if b.nested and b.name in direct:
                raise self.error(f"branch name '{b.name}' clashes with a layer name in the block", loc)
        return ir.BranchBlock(name, bdef.name, pre, branches, merge.kind, post, shape, out, call.loc)

    # ---- stages and generators
    def stage(self, name, count_expr, call: A.Call, stride_expr, shape, ctx: _Ctx, loc) -> ir.Sequence:
        call = self.callee(call, ctx) or call
        count = ctx.ev.eval(count_expr)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise self.error(f"a stage needs an integer number of blocks >= 1, got {show(count)}", count_expr.loc)
        if count > self.limits.max_layers:
            raise self.error(f"stage of {count} blocks exceeds the layer limit", count_expr.loc)
        if call.name not in self.program.blocks:
            candidates = list(self.program.blocks)
            hint = " (a stage repeats a block, not a layer)" if call.name in PRIMITIVES else ""
            raise self.error(f"unknown block '{call.name}'{hint}"
                             + self._libraries_searched(did_you_mean(call.name, candidates)),
                             call.name_loc)
        extra = {}
        if stride_expr is not None:
            stride = ctx.ev.eval(stride_expr)
            bdef = self.program.blocks[call.name]
            if "stride" not in [p.name for p in bdef.params]:
                raise self.error(f"block '{call.name}' has no parameter 'stride' for the stage's stride",
                                 stride_expr.loc)
            extra = {"stride": (stride, stride_expr.loc)}
        return self._stage_blocks(name, call, count, extra, shape, ctx, loc)

    def _stage_blocks(self, name, call, count, first_extra, shape, ctx, loc):
        self.path = [name]
        children = []
        x = shape
        sources, self.stage_sources = self.stage_sources, ()
        for i in range(count):
            self.stage_blocks += 1
            self._prepare_cell(call, sources if i == 0 else (), ctx)
            node = self.call(call, x, None, ctx, extra=first_extra if i == 0 else {}, name=f"b{i + 1}", index=i,
                             global_index=self.stage_blocks - 1)
            children.append(node)
            x = node.out_shape
            self.history.append((f"{name}.b{i + 1}", x))
        return ir.Sequence(name, children, shape, x, loc, kind="stage")

    def generator(self, call: A.Call, shape, ctx: _Ctx, stage_counter: int) -> List[ir.Sequence]:
        spec = GENERATORS[call.name]
        a, locs = self.bind_spec(call, spec, ctx.ev, call.name)
        for key, ok, need in (("w0", a["w0"] > 0 and a["w0"] % 8 == 0, "a positive multiple of 8"),
                              ("wa", a["wa"] >= 0, ">= 0"), ("wm", a["wm"] > 1, "> 1")):
            if not ok:
                raise self.error(f"regnet: {key} must be {need}, got {show(a[key])}", locs[key])
        if a["depth"] > self.limits.max_layers:
            raise self.error(f"regnet: depth {a['depth']} exceeds the layer limit", locs["depth"])
        try:
            stages = regnet_stages(a["w0"], a["wa"], a["wm"], a["depth"], a["group_width"], a["bottleneck"],
                                   rounding=a["rounding"])
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            raise self.error(f"regnet: {e}", call.loc) from None
        bdef = self.program.blocks[a["block"]]
        accepted = {p.name for p in bdef.params}
        for key in ("stride", "group_width", "bottleneck"):
            if key not in accepted:
                raise self.error(f"regnet: block '{bdef.name}' needs a parameter '{key}'", locs["block"])
        if a["se"] and "se" not in accepted:
            raise self.error(f"regnet: block '{bdef.name}' has no parameter 'se'", locs["se"])
        out = []
        x = shape
        for j, st in enumerate(stages):
            args = [A.Arg(None, A.Number(st.width, call.loc), call.loc)]
            for key, value in (("group_width", st.group_width), ("bottleneck", st.bottleneck)) + (
                    (("se", a["se"]),) if "se" in accepted else ()):
                args.append(A.Arg(key, A.Number(value, call.loc), call.loc))
            block_call = A.Call(bdef.name, tuple(args), call.loc, call.name_loc)
            extra = {"stride": (a["stride"], locs["stride"])}
            seq = self._stage_blocks(f"s{stage_counter + j + 1}", block_call, st.depth, extra, x, ctx, call.loc)
            out.append(seq)
            x = seq.out_shape
        return out

    # ---- cells: blocks with named inputs whose body is a graph of nodes (docs/language.md, "Cells")
    def _prepare_part_cell(self, part: A.Part, ctx: _Ctx):
        first = part.items[0] if part.items else None
        if isinstance(first, A.Call):
            self._prepare_cell(self.callee(first, ctx) or first, part.sources, ctx)
        elif part.sources:
            raise self.error("`from` gives the inputs of a cell: the part must start with a cell's call",
                             part.sources[0].loc)

    def _prepare_cell(self, call: A.Call, sources, ctx: _Ctx):
        """When `call` is a cell with several inputs, the network outputs it reads (the latest first, or as
        `from` names them) become its pending inputs."""
        bdef = self.program.blocks.get(call.name)
        names = cell_inputs(bdef) if bdef is not None else None
        if names is None or len(names[0]) == 1:
            if sources:
                what = f"block '{call.name}' has one input" if names else f"'{call.name}' is not a cell"
                raise self.error(f"`from` gives the inputs of a cell with several inputs; {what}", sources[0].loc)
            return
        names = names[0]
        k = len(names)
        known = dict(self.history)
        if sources:
            if len(sources) != k:
                raise self.error(f"cell '{call.name}' takes {k} inputs ({', '.join(names)}); `from` gives "
                                 f"{len(sources)}", sources[0].loc)
            chosen = []
            for src in sources:
                if src.path not in known:
                    raise self.error(f"no network output named '{src.path}' before this"
                                     + did_you_mean(src.path, list(known))
                                     + "; a cell reads `input`, earlier parts and stage blocks (like s1.b2)", src.loc)
                chosen.append((src.path, known[src.path]))
        else:
            if len(self.history) < k:
                raise self.error(f"cell '{call.name}' takes {k} inputs ({', '.join(names)}) but only "
                                 f"{len(self.history)} network output(s) come before it (the input counts); "
                                 f"name them with `from (...)`", call.name_loc)
            chosen = self.history[-k:][::-1]
        self.pending_cell = (tuple(p for p, _ in chosen), tuple(s for _, s in chosen))

    def _cell(self, bdef: A.BlockDef, call: A.Call, shape, name: str, inner: _Ctx, pending) -> ir.Cell:
        names, name_locs, _ = cell_inputs(bdef)
        if pending is None:
            if len(names) > 1:
                raise self.error(f"block '{bdef.name}' is a cell with {len(names)} inputs ({', '.join(names)}): "
                                 f"use it as a stage's block or the first item of a network part, where the "
                                 f"network gives it the outputs before it", call.name_loc)
            pending = ((), (shape,))
        paths, shapes = pending
        env = inner.ev.env
        values: Dict[str, tuple] = {}
        for n, loc, s in zip(names, name_locs, shapes):
            check_binding(n, loc, self.src(loc.file), "a cell input")
            if n in env or n in values:
                raise self.error(f"cell input '{n}' has the name of a parameter or another input", loc)
            env[n] = s  # an input is bound to its shape: channels(prev), height(prev) == height(x)
            values[n] = s
        inner = _Ctx(self.evaluator(env, shapes[0][0] if len(shapes[0]) == 3 else None), inner.stack)
        items = self.resolve(bdef.body, inner, allow_branches=True)
        children: List[ir.Sequence] = []
        nodes, used, output, node_locs = [], set(), None, {}
        for it in items:
            if isinstance(it, A.CellInput):
                if it.loc != cell_inputs(bdef)[2]:
                    raise self.error("a cell declares its inputs once, directly in its body", it.loc)
            elif isinstance(it, A.CellNode):
                if output is not None:
                    raise self.error(f"node '{it.name}' after the output (line {output[2].line}): the output "
                                     f"comes last", it.loc)
                if it.name in values:
                    raise self.error(f"'{it.name}' is already an input or node of the cell", it.loc)
                self._check_cell_name(it.name, children, it.loc)
                values[it.name], ops = self._cell_value(it.merge, it.merge_loc, it.operands, it.name, values,
                                                        children, inner, f"node '{it.name}'")
                used.update(src for _, src in ops)
                nodes.append((it.name, it.merge, ops))
                node_locs[it.name] = it.loc
            elif isinstance(it, A.CellOutput):
                if output is not None:
                    raise self.error(f"a second output (the first is at line {output[2].line}): a cell has one",
                                     it.loc)
                out, ops = self._cell_value(it.merge, it.merge_loc, it.operands, "output", values, children,
                                            inner, "output")
                used.update(src for _, src in ops)
                output = (it.merge, ops, it.loc, out)
            elif isinstance(it, A.Call):
                raise self.error(f"a layer directly in a cell: put it in a node's chain, like `node y = "
                                 f"{names[0]} {{ {it.name} }}`", it.loc)
            else:
                raise self.error("branches and merges belong in blocks; a cell writes nodes (node y = add(a, b))",
                                 it.loc)
        if output is None:
            raise self.error(f"cell '{bdef.name}' has no `output` (like output concat(a, b))", bdef.loc)
        for n, _, _ in nodes:
            if n not in used:
                raise self.error(f"node '{n}' is never used: neither a later node nor the output reads it",
                                 node_locs[n])
        return ir.Cell(name, children, shapes[0], output[3], call.loc, kind="block", block=bdef.name,
                       inputs=names, in_shapes=tuple(shapes), nodes=nodes, output=(output[0], output[1]),
                       sources=tuple(paths))

    def _check_cell_name(self, name, children, loc):
        if name in RESERVED_NAMES or name in KEYWORDS or name.startswith("_"):
            raise self.error(f"'{name}' cannot name a node (reserved)", loc)
        if name in [c.name for c in children]:
            raise self.error(f"'{name}' is already the name of a chain in the cell", loc)

    def _cell_value(self, merge, merge_loc, operands, label, values, children, inner: _Ctx, what):
        """(shape, [(chain name or None, value read)]) of a node or the output; each operand with layers
        becomes a chain named after the node (`left`), or `<node>_<k>` for the k-th operand of a merge."""
        if merge is not None and merge not in _CELL_MERGES:
            raise self.error(f"unknown merge '{merge}'" + did_you_mean(merge, _CELL_MERGES)
                             + f"; a cell merges with {', '.join(_CELL_MERGES)}", merge_loc)
        if merge is not None and len(operands) < 2:
            raise self.error(f"{merge}() needs at least two values", merge_loc)
        ops, shapes = [], []
        for j, op in enumerate(operands):
            if op.source not in values:
                raise self.error(f"{what} reads '{op.source}', which is not an input or an earlier node"
                                 + did_you_mean(op.source, list(values)), op.loc)
            s, chain = values[op.source], None
            if op.body is not None:
                chain = label if merge is None else f"{label}_{j + 1}"
                if chain in values and chain != label:
                    raise self.error(f"chain '{chain}' has the name of an input or node of the cell", op.loc)
                self._check_cell_name(chain, children, op.loc)
                ctx = _Ctx(self.evaluator(inner.ev.env, s[0] if len(s) == 3 else None), inner.stack)
                calls = self.resolve(op.body, ctx, allow_branches=False)
                layers, out = self.sequence(calls, s, _Namer(), ctx)
                children.append(ir.Sequence(chain, layers, s, out, op.loc, kind="chain"))
                s = out
            ops.append((chain, op.source))
            shapes.append(s)
        if merge is None:
            return shapes[0], ops
        try:
            return ir.merge_shapes(merge, shapes), ops
        except ir.ShapeError as e:
            detail = "; ".join(f"{src}{' {...}' if chain else ''} {ir.fmt_shape(s)}"
                               for (chain, src), s in zip(ops, shapes))
            reason = e.message.split(':')[0].replace("branches", "values")
            raise self.error(f"{what}: {merge}: {reason} ({detail})", merge_loc) from None


_CELL_MERGES = ("add", "concat", "mul")
_CELL_WORDS = {A.CellInput: "input", A.CellNode: "node", A.CellOutput: "output"}


def cell_inputs(bdef: A.BlockDef):
    """(input names, their locations, the declaration's location) of a cell, None for any other block."""
    decl = next((s for s in bdef.body if isinstance(s, A.CellInput)), None)
    return None if decl is None else (decl.names, decl.locs, decl.loc)


_MAX_OVERRIDE_TEXT = 256


def _show_override(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _from_python(key, value, depth=0):
    """A compile-time override as a language value (tuples and 'CxHxW' strings become shapes)."""
    def bad(message):
        return ArchError(f"override {key}={_show_override(value)}: {message}")

    if isinstance(value, (list, tuple)):
        if depth > 0 or len(value) > 16:
            raise bad("expected a number, a name, a string or a shape (a tuple of at most 16 numbers)")
        return tuple(_from_python(key, v, depth + 1) for v in value)
    if isinstance(value, str):
        if len(value) > _MAX_OVERRIDE_TEXT:
            raise bad(f"text longer than {_MAX_OVERRIDE_TEXT} characters")
        parts = value.split("x")
        if len(parts) > 1 and all(p.isdigit() and len(p) <= 15 for p in parts):
            return tuple(int(p) for p in parts)
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            raise bad("a size of the shape is too large")
        return Symbol(value)
    if isinstance(value, (bool, int, float)):
        return value
    raise bad(f"unsupported value type {type(value).__name__}")


def _checked_value(value, key):
    """Overrides obey the literal bounds of the language (finite numbers within MAX_MAGNITUDE)."""
    from .evaluate import MAX_MAGNITUDE
    for v in value if isinstance(value, tuple) else (value,):
        if _is_number(v) and not (abs(v) <= MAX_MAGNITUDE):  # NaN fails too
            raise ArchError(f"override {key}={_show_override(value)}: numbers must be finite and at most "
                            f"{MAX_MAGNITUDE:.0e} in magnitude")
    return value


def elaborate(source, network: Optional[str] = None, *, file: Optional[str] = None, limits: Limits = Limits(),
              **overrides) -> ir.NetworkIR:
    """Parse and elaborate `source` (a path or text) into an ir.NetworkIR."""
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a pycnn.dsl.elaborate.Limits, got {type(limits).__name__}")
    try:
        program = load_program(source, file, limits.max_source_bytes)
        return Elaborator(program, limits).network(network, overrides)
    except RecursionError:
        raise ArchError("the text is nested too deeply to elaborate") from None
