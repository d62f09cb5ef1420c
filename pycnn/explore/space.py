"""Sampling a design space (a `space` of an .arch file, pycnn.dsl.space): seeded draws, the constraints, and the
FLOPs/parameter windows checked on the IR before any torch module exists.

A draw that breaks a `non_decreasing` or `require` constraint is rejected before anything is elaborated; the
others are elaborated to the IR (a network that does not elaborate, a group width that does not divide the
bottleneck width say, is rejected) and their FLOPs and parameters compared with the windows. The sampler only
counts: block instances, layers and expressions are remembered across draws, and a block met for the first time is
counted without building its IR (_MemoElaborator), giving what a fresh elaboration gives (tests/test_space*.py).
`python -m pycnn.explore.space --bench` measures how many samples a second this gives.
"""
from __future__ import annotations

import gc
import math
import os
import random
import re
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .. import ir
from ..dsl import ast as A
from ..dsl.elaborate import _BN_ACTS, Elaborator, Limits, _Ctx, _Namer, cell_inputs
from ..dsl.checks import KEYWORDS, RESERVED_NAMES, value_kind
from ..dsl.errors import ArchError
from ..dsl.evaluate import Evaluator, Symbol
from ..dsl.space import Param, Space  # noqa: F401  (the language's design spaces; Param for callers)
from ..opspec import OPS, PRIMITIVES


class SpaceError(Exception):
    """A design space that cannot be used, or sampled; one line for the user."""


def load_space(path, name: Optional[str] = None) -> Space:
    """The design space `name` (default: the first) of an .arch file; ArchError for mistakes in the text."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpaceError(f"no such design-space file: {path}")
    return Space.load(path, name)


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


class _OutOfWindow(Exception):
    """The FLOPs or parameters counted so far already exceed a window's top: no need to elaborate further."""


MAX_REMEMBERED = 20_000  # block instances, and layers, a sampler remembers (~2 KB each)
_UNSET = object()  # a name that is no variable here (a layer, an activation)
_READS_IN = " in"  # what _names_read adds for `in` (the input channels; no name can be spelled so)
_POSITION_NAMES = frozenset({"index", "block_index", "num_blocks"})  # what a block may read of its position


def _names_read(node, out: set) -> set:
    """Every name a syntax subtree mentions: variables, called layers and blocks, keyword argument names."""
    stack = [node]
    while stack:
        n = stack.pop()
        name = getattr(n, "id", None) or getattr(n, "name", None)
        if isinstance(name, str):
            out.add(name)
        elif isinstance(n, A.InWidth):
            out.add(_READS_IN)
        for value in vars(n).values() if hasattr(n, "__dataclass_fields__") else ():
            if isinstance(value, tuple):
                stack.extend(v for v in value if hasattr(v, "__dataclass_fields__"))
            elif hasattr(value, "__dataclass_fields__") and not isinstance(value, A.Loc):
                stack.append(value)
    return out


def _renamed(node, name: str):
    """A shallow copy of an IR node under another name (a layer's attrs copied too: the elaborator may add to
    them)."""
    fields = dict(node.__dict__)
    node = object.__new__(type(node))  # a dataclass copied without its __init__ (copy.copy is slower)
    node.__dict__.update(fields)
    node.name = name
    if isinstance(node, ir.Layer):
        node.attrs = dict(node.attrs)
    return node


_KINDS = {int: value_kind(0), float: value_kind(0.0), bool: value_kind(True), tuple: value_kind(())}  # by type
_PLAIN_EXPRS = (A.Name, A.Number, A.Shape, A.String, A.Bool, A.InWidth)  # as cheap to evaluate as to look up


def _typed(value):
    """A value as a memo key that tells 1, 1.0 and true apart (equal, and equally hashed, in Python)."""
    kind = type(value)
    if kind is int:
        return value
    if kind is tuple:
        return tuple, tuple([_typed(v) for v in value])
    return kind, value


class _MemoEvaluator(Evaluator):
    """The evaluator, remembering the value of each expression (not a bare name or number) by the values of the
    names it reads and `in` when it reads it: a sampled network evaluates the same block defaults, `let`s and
    conditions for values met before. Nothing is remembered of an expression that fails."""

    def __init__(self, env, source_of, symbols, in_width, budget, memo: dict, reads: dict):
        super().__init__(env, source_of, symbols, in_width, budget)
        self.memo, self.reads, self.inside = memo, reads, False

    def eval(self, node):
        if self.inside or type(node) in _PLAIN_EXPRS:
            return Evaluator.eval(self, node)
        entry = self.reads.get(id(node))
        if entry is None or entry[0] is not node:  # (the entry holds the node: its id is not reused meanwhile)
            names = _names_read(node, set())
            entry = (node, tuple(sorted(names - {_READS_IN})), _READS_IN in names)
            if len(self.reads) >= MAX_REMEMBERED:
                return Evaluator.eval(self, node)
            self.reads[id(node)] = entry
        env = self.env
        key = (id(node), self.in_width if entry[2] else None, tuple([_typed(env.get(n, _UNSET)) for n in entry[1]]))
        try:
            return self.memo[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value
            return Evaluator.eval(self, node)
        self.inside = True
        try:
            value = Evaluator.eval(self, node)
        finally:
            self.inside = False
        if len(self.memo) < MAX_REMEMBERED:
            self.memo[key] = value
        return value


class _Fallback(Exception):
    """The counting path met what it does not decide itself: the block is elaborated as the elaborator does."""


def _countable(bdef: A.BlockDef) -> bool:
    """Whether a block may be counted without building its IR (_MemoElaborator._count_block): calls, `let`, `if`
    and branches with one merge; no cells, no repeat, branch names that no layer name can take."""
    if cell_inputs(bdef) is not None:
        return False
    names = []

    def ok(stmts, top: bool) -> bool:
        for s in stmts:
            kind = type(s)
            if kind is A.Call:
                continue
            if kind is A.Let:
                if s.name in KEYWORDS:
                    return False
            elif kind is A.If:
                if not (ok(s.then, top) and ok(s.otherwise, top)):
                    return False
            elif kind is A.Branch and top:
                # a branch named like a layer (conv1) or reserved is an error the elaborator reports
                if s.name in RESERVED_NAMES or s.name.startswith("_") or s.name[-1:].isdigit() or s.name in names:
                    return False
                names.append(s.name)
                if not ok(s.body, False):
                    return False
            elif not (kind is A.Merge and top):
                return False
        return True

    return ok(bdef.body, True)


class _Memory:
    """What a sampler's elaborators remember across draws (each table bounded by MAX_REMEMBERED)."""

    def __init__(self):
        self.blocks = {}  # (block, arguments, input shape, position) -> (IR node, counts it adds)
        self.positional = {}  # block name -> whether it reads its position
        self.layers = {}  # (site, input shape, in, values read) -> (name base, IR layer, output size, activations)
        self.call_names = {}  # where calls and parameters are written -> (number, names read); renamed nodes
        self.specs = {}  # (site, in, values read) -> bind_spec's answer; checked overrides and their values
        self.expressions = {}  # (expression, in, values read) -> its value
        self.expression_reads = {}  # id(expression) -> (expression, the names it reads, whether it reads `in`)
        self.countable = {}  # block name -> _countable(its definition)
        self.symbols = None  # (the sizes of the program's block tables, Elaborator.symbols then)


class _MemoElaborator(Elaborator):
    """The elaborator, remembering each block instance it builds: a block's IR is a function of its definition,
    its argument values, its input shape and (when the block reads them) its position, so a block met again in
    this draw or a later one is reused instead of elaborated again. Counts FLOPs, parameters and activations as
    layers are made and stops as soon as one passes the top of its window. A block instance met for the first
    time is counted without its IR when _countable allows (_block); expressions are remembered (_MemoEvaluator).
    For the sampler only: the IR it returns shares nodes between networks and holds empty blocks where blocks
    were only counted (trials elaborate their network afresh)."""

    def __init__(self, program, limits, memory: Optional["_Memory"] = None, flops_max=None, params_max=None):
        memory = memory or _Memory()
        # the program's symbols, made again when a library loaded since registered names
        known = (len(program.blocks.defined), len(program.blocks.index))
        if memory.symbols is None or memory.symbols[0] != known:
            memory.symbols = (known, Elaborator(program, limits).symbols)
        super().__init__(program, limits, symbols=memory.symbols[1])
        self.memo, self.positional, self.layer_memo = memory.blocks, memory.positional, memory.layers
        self.call_names, self.spec_memo, self.countable = memory.call_names, memory.specs, memory.countable
        self.expr_memo = (memory.expressions, memory.expression_reads)
        self.flops_max, self.params_max = flops_max, params_max
        self.flops = self.acts = 0
        self.bound = None  # (call, its bound arguments) of the block about to be elaborated
        self.last = None  # the memo entry of the last block instance made or reused, if it may be repeated

    def evaluator(self, env, in_width=None):
        return _MemoEvaluator(env, self.src, self.symbols, in_width, self.budget, *self.expr_memo)

    def _reads_position(self, block: str) -> bool:
        """Whether a block, or a block it may call, reads index, block_index or num_blocks (conservatively: any
        block named anywhere in its text counts as called)."""
        if block not in self.positional:
            self.positional[block] = True  # a recursive block: refused by the elaborator anyway
            seen, todo, names = set(), [block], set()
            while todo:
                b = todo.pop()
                if b in seen or b not in self.program.blocks:
                    continue
                seen.add(b)
                found = _names_read(self.program.blocks[b], set())
                names |= found
                todo.extend(n for n in found if n in self.program.blocks)
            self.positional[block] = bool(names & _POSITION_NAMES)
        return self.positional[block]

    def override_value(self, key, value):
        """Elaborator.override_value, remembered by the key and the value."""
        try:
            memo_key = ("override value", key, _typed(value))
            return self.spec_memo[memo_key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value
            return super().override_value(key, value)
        converted = super().override_value(key, value)
        if len(self.spec_memo) < MAX_REMEMBERED:
            self.spec_memo[memo_key] = converted
        return converted

    def block(self, bdef, call, shape, name, ctx, extra, index, global_index=None):
        bound, _ = self.bind_values(call, [p.name for p in bdef.params], ctx.ev, f"block '{bdef.name}'", extra)
        self.bound = (call, bound)  # what _count_block binds again
        if global_index is None:
            global_index = ctx.ev.env.get("block_index", self.stage_blocks)
        reads = self._reads_position(bdef.name)
        if not reads:  # a block passed in as an argument counts too
            for v in bound.values():
                if isinstance(v, Symbol) and self._reads_position(v.name):
                    reads = True
                    break
        position = (index, global_index, self.num_blocks) if reads else None
        try:
            key = (bdef.name, tuple(sorted([(k, _typed(v)) for k, v in bound.items()])), shape, position)
            hash(key)
        except TypeError:  # an unhashable argument value: elaborate it as it is
            node = super().block(bdef, call, shape, name, ctx, extra, index, global_index)
            self.last = None
            return node
        hit = self.memo.get(key)
        if hit is None:
            before = (self.n_layers, self.n_params, self.activation_elements, self.flops, self.acts)
            node = super().block(bdef, call, shape, name, ctx, extra, index, global_index)
            after = (self.n_layers, self.n_params, self.activation_elements, self.flops, self.acts)
            entry = (node, tuple(a - b for a, b in zip(after, before)))
            if len(self.memo) < MAX_REMEMBERED:
                self.memo[key] = entry
            self.last = None if reads else entry  # what a stage may repeat: never a position-dependent block
            return node
        self.last = None if reads else hit
        return self._reuse(hit, name)

    def _reuse(self, hit, name):
        """A remembered block instance under `name`, counted as if elaborated."""
        node, (layers, params, activations, flops, acts) = hit
        self.n_layers += layers
        self.n_params += params
        self.activation_elements += activations
        self.flops += flops
        self.acts += acts
        lim = self.limits
        if (self.n_layers > lim.max_layers or self.n_params > lim.max_params
                or 4 * self.activation_elements > lim.max_activation_bytes):
            raise ArchError("the network exceeds a limit of pycnn.dsl.elaborate.Limits")
        self._check_window()
        return self._named(node, name)

    def _reuse_all(self, hit, n: int) -> bool:
        """A remembered block instance counted n times at once, when that passes no limit and no window's top;
        False (nothing counted) otherwise: _reuse, block by block, then says where it passes."""
        _, (layers, params, activations, flops, acts) = hit
        n_layers, n_params = self.n_layers + n * layers, self.n_params + n * params
        elements, flops = self.activation_elements + n * activations, self.flops + n * flops
        lim = self.limits
        if (n_layers > lim.max_layers or n_params > lim.max_params or 4 * elements > lim.max_activation_bytes
                or (self.flops_max is not None and flops > self.flops_max)
                or (self.params_max is not None and n_params > self.params_max)):
            return False
        self.n_layers, self.n_params, self.activation_elements, self.flops = n_layers, n_params, elements, flops
        self.acts += n * acts
        return True

    def _named(self, node, name):
        """A remembered node under `name`: the node itself, or a copy made once per name (the sampler only
        counts what it builds, so networks may share nodes)."""
        if node.name == name:
            return node
        key = ("renamed", id(node), name)
        copy = self.call_names.get(key)
        if copy is not None and copy[0] is node:  # (the entry holds the node: its id is not reused meanwhile)
            return copy[1]
        renamed = _renamed(node, name)
        if len(self.call_names) < MAX_REMEMBERED:
            self.call_names[key] = (node, renamed)
        return renamed

    def _block(self, bdef, call, shape, name, ctx, extra, index, global_index=None):
        """Elaborator._block's counts, for a block _countable allows, without its IR: the node returned is an
        empty block of the right shapes (the sampler only counts). Anything the counting path does not decide
        (any error, a limit) is elaborated again as the elaborator does, from the counts before the block."""
        countable = self.countable.get(bdef.name)
        if countable is None:
            countable = self.countable[bdef.name] = _countable(bdef)
        if not countable or self.pending_cell is not None:
            self.bound = None
            return super()._block(bdef, call, shape, name, ctx, extra, index, global_index)
        before = (self.n_layers, self.n_params, self.activation_elements, self.flops, self.acts, self.budget.used)
        try:
            out = self._count_block(bdef, call, shape, ctx, extra, index, global_index)
        except _OutOfWindow:
            raise
        except (_Fallback, ArchError, ValueError, ZeroDivisionError, OverflowError, TypeError, KeyError):
            (self.n_layers, self.n_params, self.activation_elements, self.flops, self.acts,
             self.budget.used) = before
            return super()._block(bdef, call, shape, name, ctx, extra, index, global_index)
        return ir.Sequence(name, [], shape, out, call.loc, kind="block", block=bdef.name)

    def _count_block(self, bdef, call, shape, ctx, extra, index, global_index):
        """The output shape of a block instance, its layers counted as Elaborator._block counts them (in the
        same order: a window's top is passed where elaboration passes it); _Fallback where it would not go as
        here."""
        lim = self.limits
        if bdef.name in ctx.stack or len(ctx.stack) >= lim.max_depth:
            raise _Fallback
        self.n_layers += 1
        if self.n_layers > lim.max_layers:
            raise _Fallback
        bound, self.bound = self.bound, None
        if bound is None or bound[0] is not call:
            bound = (call, self.bind_values(call, [p.name for p in bdef.params], ctx.ev, "", extra)[0])
        bound = bound[1]
        if global_index is None:
            global_index = ctx.ev.env.get("block_index", self.stage_blocks)
        env = {"index": index, "block_index": global_index, "num_blocks": self.num_blocks}
        ev = self.evaluator(env, shape[0] if len(shape) == 3 else None)
        for p in bdef.params:
            if p.name in bound:
                env[p.name] = bound[p.name]
            elif p.default is not None:
                env[p.name] = ev.eval(p.default)
            else:
                raise _Fallback
        inner = _Ctx(ev, ctx.stack + (bdef.name,))
        items = self._count_resolve(bdef.body, ev, [])
        for first, it in enumerate(items):
            if type(it) is A.Branch or type(it) is A.Merge:
                break
        else:
            return self._count_sequence(items, shape, inner)
        x = self._count_sequence(items[:first], shape, inner)
        shapes, merge, post, main = [], None, [], False
        for it in items[first:]:
            kind = type(it)
            if merge is not None:
                if kind is not A.Call:
                    raise _Fallback
                post.append(it)
            elif kind is A.Merge:
                merge = it
            elif kind is A.Call:
                raise _Fallback
            else:
                if it.kind == "main":
                    if main:
                        raise _Fallback
                    main = True
                body = it.body
                if it.kind == "shortcut" and it.when is not None:
                    taken = ev.eval(it.when)
                    if type(taken) is not bool:
                        raise _Fallback
                    if not taken:
                        body = ()
                shapes.append(self._count_sequence(self._count_resolve(body, ev, []), x, inner))
        if merge is None:
            if len(shapes) == 1 and main:
                return self._count_sequence(post, shapes[0], inner)
            raise _Fallback
        if len(shapes) < 2:
            raise _Fallback
        try:
            merged = ir.merge_shapes(merge.kind, shapes)
        except ir.ShapeError:
            raise _Fallback from None
        return self._count_sequence(post, merged, inner)

    def _count_resolve(self, stmts, ev, out: list) -> list:
        """Elaborator.resolve for what _countable allows: `let`s bound, `if`s decided, the rest listed."""
        for stmt in stmts:
            kind = type(stmt)
            if kind is A.Let:
                ev.env[stmt.name] = ev.eval(stmt.value)
            elif kind is A.If:
                taken = ev.eval(stmt.cond)
                if type(taken) is not bool:
                    raise _Fallback
                self._count_resolve(stmt.then if taken else stmt.otherwise, ev, out)
            else:
                out.append(stmt)
        return out

    def _count_sequence(self, calls, shape, ctx):
        """Elaborator.sequence's output shape, each layer counted as _MemoElaborator.primitive counts it (by
        the same memory) and each block through self.call."""
        env, blocks, after_bn = ctx.ev.env, self.program.blocks, False
        for call in calls:
            value = env.get(call.name)
            if isinstance(value, Symbol):
                if value.name == "none":
                    if call.args:
                        raise _Fallback
                    continue
                call = A.Call(value.name, call.args, call.loc, call.name_loc)
            name = call.name
            if after_bn and name in _BN_ACTS:  # runs with the BatchNorm: no layer of its own, nothing counted
                if call.args:
                    raise _Fallback
                after_bn = False
                continue
            if name in PRIMITIVES:
                shape, after_bn = self._count_layer(call, shape, ctx), PRIMITIVES[name].op == "bn"
            elif name in blocks:
                shape, after_bn = self.call(call, shape, _Namer(), ctx).out_shape, False
            else:
                raise _Fallback
        return shape

    def _count_layer(self, call, shape, ctx):
        """A layer's output shape, counted as _MemoElaborator.primitive counts it, remembered by the same key."""
        site, names, reads_in = self._site(call)
        ev = ctx.ev
        env = ev.env
        key = (site, shape, ev.in_width if reads_in else None, tuple([_typed(env.get(n, _UNSET)) for n in names]))
        hit = self.layer_memo.get(key)
        if hit is None:  # made, counted and remembered (no copy: it goes into no IR)
            return self._new_layer(key, call, shape, _Namer(), ctx, False).out_shape
        _, node, size, acts = hit
        lim = self.limits
        if (self.n_layers >= lim.max_layers or self.n_params + node.params > lim.max_params
                or size > lim.max_activations or 4 * (self.activation_elements + size) > lim.max_activation_bytes):
            raise _Fallback
        self.n_layers += 1
        self.n_params += node.params
        self.activation_elements += size
        self.flops += node.flops
        self.acts += acts
        self._check_window()
        return node.out_shape

    def _stage_blocks(self, name, call, count, first_extra, shape, ctx, loc):
        """As Elaborator._stage_blocks, but once a block after the first maps its input shape to itself, the
        blocks after it are that block again (same arguments, same input; a block that reads its position, or
        is given a block that does, is elaborated block by block)."""
        if call.name not in self.program.blocks:
            return super()._stage_blocks(name, call, count, first_extra, shape, ctx, loc)
        self.path = [name]
        children, x, repeat = [], shape, None
        for i in range(count):
            if repeat is not None and self._reuse_all(repeat, count - i):
                children += [self._named(repeat[0], f"b{j + 1}") for j in range(i, count)]
                self.stage_blocks += count - i
                break
            self.stage_blocks += 1
            if repeat is not None:
                node = self._reuse(repeat, f"b{i + 1}")
            else:
                self.last = None
                node = self.call(call, x, None, ctx, extra=first_extra if i == 0 else {}, name=f"b{i + 1}", index=i,
                                 global_index=self.stage_blocks - 1)
                if i > 0 and node.out_shape == x and self.last is not None:
                    repeat = self.last
            children.append(node)
            x = node.out_shape
        return ir.Sequence(name, children, shape, x, loc, kind="stage")

    def _site(self, call):
        """(a number for where a call is written, the names its arguments read, whether they read `in`),
        remembered per call object."""
        entry = self.call_names.get(id(call))
        if entry is None or entry[0] is not call:  # (the entry holds the call: its id is not reused meanwhile)
            site = (call.loc, call.name)
            known = self.call_names.get(site)
            if known is None:
                names = _names_read(A.TupleExpr(tuple(call.args), call.loc), set())
                known = self.call_names[site] = (len(self.call_names), tuple(sorted(names - {_READS_IN})),
                                                 _READS_IN in names)
            entry = (call, *known)
            if len(self.call_names) < MAX_REMEMBERED:
                self.call_names[id(call)] = entry
        return entry[1:]

    def bind_spec(self, call, spec, ev, what):
        """A layer's arguments, remembered by where it is written, `in` and the values of the names they read (a
        layer met again with another input shape needs only its shape arithmetic)."""
        site, names, reads_in = self._site(call)
        env = ev.env
        try:
            key = (site, ev.in_width if reads_in else None, tuple([_typed(env.get(n, _UNSET)) for n in names]))
            hit = self.spec_memo.get(key)
        except TypeError:  # an unhashable value
            return super().bind_spec(call, spec, ev, what)
        if hit is None:
            hit = super().bind_spec(call, spec, ev, what)
            if len(self.spec_memo) < MAX_REMEMBERED:
                self.spec_memo[key] = hit
        return dict(hit[0]), hit[1]

    def primitive(self, call, shape, namer, ctx):
        """A layer, remembered by where it is written, its input shape and the values of the names its arguments
        read (so a layer whose arguments do not change is built once for all draws)."""
        site, names, reads_in = self._site(call)
        env = ctx.ev.env
        try:  # (`in` is the block's input channels, not the layer's: se(round(in * 0.25)) after a conv)
            key = (site, shape, ctx.ev.in_width if reads_in else None, tuple([_typed(env.get(n, _UNSET)) for n in names]))
            hit = self.layer_memo.get(key)
        except TypeError:  # an unhashable value
            return super().primitive(call, shape, namer, ctx)
        if hit is None:
            return self._new_layer(key, call, shape, namer, ctx, True)
        base, node, size, acts = hit
        node = self._named(node, namer.next(base))
        lim = self.limits
        if (self.n_layers >= lim.max_layers or self.n_params + node.params > lim.max_params
                or size > lim.max_activations or 4 * (self.activation_elements + size) > lim.max_activation_bytes):
            self.account(node)  # past a limit: the elaborator's own accounting says which
            return node
        self.n_layers += 1  # Elaborator.account's sums, from what was remembered
        self.n_params += node.params
        self.activation_elements += size
        self.flops += node.flops
        self.acts += acts
        self._check_window()
        return node

    def _new_layer(self, key, call, shape, namer, ctx, copy: bool):
        """A layer made by Elaborator.primitive (which counts it), remembered under `key`; a copy remembered when
        the layer goes into an IR (a bn there may yet take an activation)."""
        node = Elaborator.primitive(self, call, shape, namer, ctx)
        base = OPS[node.op].module_name or call.name  # what Elaborator.primitive names it by, else found
        if f"{base}{namer.counts.get(base)}" != node.name:
            base = next(k for k, n in namer.counts.items() if f"{k}{n}" == node.name)
        if len(self.layer_memo) < MAX_REMEMBERED:
            size = math.prod(node.out_shape)
            self.layer_memo[key] = (base, _renamed(node, node.name) if copy else node, size,
                                    size if node.op in ("conv", "wsconv") else 0)
        return node

    def account(self, node: ir.Layer):
        super().account(node)
        self.flops += node.flops
        if node.op in ("conv", "wsconv"):
            self.acts += math.prod(node.out_shape)
        self._check_window()

    def _check_override(self, param, env, raw):
        """Elaborator._check_override, remembered when it passes: it compares the kind of the value with the
        kind of the parameter's default, a function of the values the default reads."""
        entry = self.call_names.get(id(param))
        if entry is None or entry[0] is not param:  # (the entry holds the parameter: its id is not reused)
            site = ("override", param.loc, param.name)
            known = self.call_names.get(site)
            if known is None:  # (a number for the parameter, as _site numbers calls)
                known = self.call_names[site] = (len(self.call_names),
                                                 tuple(sorted(_names_read(param.default, set()))))
            entry = (param, *known)
            if len(self.call_names) < MAX_REMEMBERED:
                self.call_names[id(param)] = entry
        _, site, names = entry
        if _READS_IN in names:  # reads `in`: not remembered
            return super()._check_override(param, env, raw)
        try:
            value = env[param.name]
            kind = _KINDS.get(type(value)) or value_kind(value)
            key = ("override", site, kind, tuple([_typed(env.get(n, _UNSET)) for n in names]))
            if key in self.spec_memo:
                return
        except TypeError:  # an unhashable value
            return super()._check_override(param, env, raw)
        super()._check_override(param, env, raw)
        if len(self.spec_memo) < MAX_REMEMBERED:
            self.spec_memo[key] = True

    def _check_window(self):
        if ((self.flops_max is not None and self.flops > self.flops_max)
                or (self.params_max is not None and self.n_params > self.params_max)):
            raise _OutOfWindow


class Sampler:
    """Seeded rejection sampler over a Space: the same seed gives the same samples in the same order.

    Each draw is checked in order of cost: the space's constraints on the drawn values, then elaboration to the
    IR (block instances remembered across draws, stopped early past a window's top), then the windows."""

    def __init__(self, space: Space, seed: int = 0, extra: Optional[dict] = None,
                 flops: Optional[Tuple[float, float]] = None, params: Optional[Tuple[float, float]] = None,
                 max_tries: int = 200_000, remember: bool = True, early: bool = True):
        # max_tries: draws for one sample. early: constraints checked as the values are drawn
        # (Space.draw_satisfying); False: whole draws refused (the same law, other samples for a seed)
        self.space, self.rng, self.early = space, random.Random(seed), early
        # False: every draw elaborated afresh (the reference the tests compare with). Cells are always: what a
        # cell builds depends on the network outputs before it, which the memo keys do not hold
        blocks = space.program.blocks  # loads the libraries a name is looked up in: the names listed first
        self.remember = remember and not any(cell_inputs(blocks[name]) is not None for name in list(blocks))
        self.extra = dict(extra or {})
        self.flops = flops or space.flops
        self.params = params or space.param_count
        self.max_tries = max_tries
        self._memory = _Memory()
        self.tries = self.rejected_constraint = self.rejected_arch = self.rejected_window = 0
        self.count = 0

    def elaborate(self, overrides: dict) -> ir.NetworkIR:
        """The IR of one sampled network, elaborated afresh (nothing shared with other networks)."""
        return Elaborator(self.space.program, Limits()).network(self.space.network, overrides)

    def complexity(self, overrides: dict) -> Tuple[int, int, int]:
        """(FLOPs, parameters, activations) of one sampled network, as complexity(self.elaborate(overrides))
        gives them, but from remembered block instances; _OutOfWindow past a window's top."""
        if not self.remember:
            return complexity(self.elaborate(overrides))
        e = _MemoElaborator(self.space.program, Limits(), self._memory, self.flops[1] if self.flops else None,
                            self.params[1] if self.params else None)
        e.network(self.space.network, overrides)
        return e.flops, e.n_params, e.acts

    def __iter__(self):
        return self

    def __next__(self) -> Sample:
        collecting = gc.isenabled()
        if collecting:  # the cyclic GC's passes over the remembered IR cost a third of the time: none in one sample
            gc.disable()
        try:
            return self._next()
        finally:
            if collecting:
                gc.enable()

    def _next(self) -> Sample:
        tried, before = 0, (self.rejected_constraint, self.rejected_arch, self.rejected_window)
        while tried < self.max_tries:  # max_tries draws for each sample
            if self.early:  # constraints checked while drawing: the partial draws they refused count as tries
                values, refused = self.space.draw_satisfying(self.rng, self.max_tries - tried)
                tried += refused
                self.tries += refused
                self.rejected_constraint += refused
                if values is None:
                    break
            else:
                values = self.space.draw(self.rng)
            tried += 1
            self.tries += 1
            if not self.early and not self.space.satisfies(values):
                self.rejected_constraint += 1
                continue
            overrides = {**self.space.fixed, **values, **self.extra}
            try:
                f, p, a = self.complexity(overrides)
            except _OutOfWindow:
                self.rejected_window += 1
                continue
            except (ArchError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
                self.rejected_arch += 1
                continue
            if (self.flops and not self.flops[0] <= f <= self.flops[1]) or \
                    (self.params and not self.params[0] <= p <= self.params[1]):
                self.rejected_window += 1
                continue
            self.count += 1
            return Sample(self.count - 1, values, overrides, f, p, a)
        constraint, arch, window = (now - then for now, then in zip(
            (self.rejected_constraint, self.rejected_arch, self.rejected_window), before))
        raise SpaceError(f"design space {self.space.name}: no sample satisfied the constraints in {self.max_tries} "
                         f"tries ({constraint} constraints, {arch} not elaborating, {window} outside the "
                         f"FLOPs/params window)")

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


def bench(path: str, samples: int = 1000, seed: int = 0, input=(1, 32, 32), flops=None, rounds: int = 1,
          log=print) -> dict:
    """Samples/s of the sampler against two others, interleaved in one run: the reference (the same draws, each
    elaborated afresh; it must give the same samples) and the sampler before constraints were checked while
    drawing (whole draws refused: the same law, other samples). Returns {"new", "fresh", "whole": samples/s of
    wall-clock time, "cpu": the same per CPU second (the timing of a loaded machine), "ratio": new / fresh}."""
    import time

    space = load_space(path)
    kinds = {"fresh": dict(remember=False), "whole": dict(early=False), "new": {}}
    wall, cpu = dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0.0)
    for _ in range(rounds):
        for kind, options in kinds.items():
            sampler = Sampler(space, seed, {"input": tuple(input)}, flops, **options)
            start, start_cpu = time.perf_counter(), time.process_time()
            got = [(s.values, s.flops, s.params, s.acts) for s in sampler.take(samples)]
            took, took_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            wall[kind] += took
            cpu[kind] += took_cpu
            if kind == "fresh":
                reference = got
            elif kind == "new" and got != reference:
                raise SpaceError("the sampler and the reference gave different samples")
            log(f"{space.name} {kind}: {samples} samples in {took:.2f} s, {took_cpu:.2f} s of CPU ({sampler.tries} "
                f"draws: {sampler.rejected_constraint} broke a constraint, {sampler.rejected_arch} did not "
                f"elaborate, {sampler.rejected_window} outside the window)")
    rate = {k: rounds * samples / t for k, t in wall.items()}
    rate_cpu = {k: rounds * samples / t for k, t in cpu.items()}
    result = {**rate, "cpu": rate_cpu, "ratio": rate["new"] / rate["fresh"]}
    log(f"{space.name}: {rate['new']:.0f} samples/s, the reference {rate['fresh']:.1f} samples/s: "
        f"{result['ratio']:.1f}x; whole draws refused {rate['whole']:.0f} samples/s: "
        f"{rate['new'] / rate['whole']:.1f}x; per CPU second {rate_cpu['new']:.0f}, {rate_cpu['fresh']:.1f}, "
        f"{rate_cpu['whole']:.0f}")
    return result


def main(argv=None) -> int:
    """python -m pycnn.explore.space --bench [SPACE.arch] [--samples N] [--input CxHxW] [--flops LO:HI]"""
    import argparse

    from ..argtypes import positive_int, shape
    from .cli import _window
    p = argparse.ArgumentParser(prog="python -m pycnn.explore.space", description=main.__doc__)
    p.add_argument("--bench", action="store_true", required=True, help="measure samples/s")
    p.add_argument("space", nargs="?", default="archs/spaces/anynetx_a.arch")
    p.add_argument("--samples", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", type=shape, default=(1, 32, 32))
    p.add_argument("--flops", type=_window, help="FLOPs window, e.g. 500k:3M")
    p.add_argument("--rounds", type=positive_int, default=1)
    args = p.parse_args(argv)
    try:
        bench(args.space, args.samples, args.seed, args.input, args.flops, args.rounds)
    except (SpaceError, ArchError) as e:
        print(f"python -m pycnn.explore.space: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
