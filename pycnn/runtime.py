"""How a compiled network runs: a list of steps per container (Chain, Block); a LayerStep calls one module, a
FusedStep (from a pycnn.ir.Fused node made by pycnn.passes) runs several sibling modules' parameters through one
fused op (pycnn.fused), choosing pycnn's kernel or PyTorch's per shape (pycnn.dispatch); Network is the
compiled model (its layout at the entry, the per-call signature of the kernel choices)."""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict
from typing import Dict, Optional

import torch
from torch import nn

from . import allocator, dispatch, fused, ir, memory, ops
from .opspec import conv_output_size

_SCOPE_OPS = allocator.compiled_scope_ops()  # registered at import: never while dynamo traces


class LayerStep:
    """Runs one module, then the activations of the layers without a module of their own that follow it in
    the IR (pycnn.ir.Layer.own_module: `bn relu` unfused is the module bn1, then relu)."""

    def __init__(self, name: str, acts=()):
        self.names, self.acts = [name], tuple(acts)

    def __call__(self, owner: nn.Module, x, residual=None):
        assert residual is None, "only fused steps add a residual"
        x = fused.module_forward(getattr(owner, self.names[0]), x)
        for act in self.acts:
            x = fused.activation(x, act)
        return x

    def __repr__(self):
        return "+".join(self.names + list(self.acts))


class FusedStep:
    """Runs sibling layers (a pycnn.ir.Fused node) as one fused op; pycnn.dispatch picks the kernel, pycnn's or
    PyTorch's composition (`kernels`: auto, pycnn or torch); the last one run is kept in `last_kernel`."""

    def __init__(self, node: ir.Fused, kernels: str):
        self.kind, self.attrs, self.kernels = node.kind, dict(node.attrs), kernels
        self.names = [layer.name for layer in node.layers if layer.own_module]
        first = node.layers[0]
        geometry = {k: first.attrs[k] for k in ("k", "s", "p", "d", "groups", "reduced") if k in first.attrs}
        self.signature = f"{self.kind}:{first.in_shape[0]}->{node.out_shape[0]}:" + ",".join(
            f"{k}={v}" for k, v in sorted({**geometry, **self.attrs}.items()))
        self.last_kernel: Optional[str] = None
        self.kernel_by_token: Dict[int, str] = {}  # network call signature token -> its kernel (auto)

    def candidates(self, training: bool, modules, x: torch.Tensor) -> tuple:
        """The kernels `auto` races for input x: pycnn's and PyTorch's composition and, for a depthwise or grouped
        conv, the dense path's way: PyTorch's conv with, in eval, the BatchNorm folded in (on the CPU oneDNN,
        packed, the activation fused; it beats both on many grouped shapes), in training followed by pycnn's
        BatchNorm+act; for a 1x1 conv where fused.gemm_applies, the conv as matrix products: in training
        followed by pycnn's BatchNorm+act, in eval without grad mode on the folded weight (with it, "gemm" would
        run as "pycnn")."""
        if self.kind != "conv_bn_act":
            return ("pycnn", "torch")
        if self.attrs["conv"] != "dense":
            return ("pycnn", "folded", "torch")
        if (training or not torch.is_grad_enabled()) and fused.gemm_applies(modules[0], x):
            return ("pycnn", "gemm", "torch")
        return ("pycnn", "torch")

    def run(self, modules, x, residual, kernel: str):
        a = self.attrs
        if self.kind == "conv_bn_act":
            return fused.conv_bn_act(modules[0], modules[1], x, a["conv"], a["act"], residual, kernel)
        if self.kind == "bn_act":
            return fused.batch_norm_act(modules[0], x, a["act"], residual, kernel)
        return fused.squeeze_excite(modules[0], x, a["act"], a["post_act"], residual, kernel)

    def __call__(self, owner: nn.Module, x, residual=None):
        if torch.compiler.is_compiling():
            modules = [getattr(owner, name) for name in self.names]
            kernel = self.kernels if self.kernels != "auto" else self._traced_kernel(owner, x, residual)
            return self.run(modules, x, residual, kernel)
        modules = [owner._modules[name] for name in self.names]  # nn.Module.__getattr__ costs ~0.5 us a name
        kernel = self.kernels if self.kernels != "auto" else self._auto_kernel(modules, x, residual)
        return self.run(modules, x, residual, kernel)

    def _auto_kernel(self, modules, x, residual) -> str:
        """The measured kernel: looked up by the network call's signature token (Network.forward) when there
        is one, else by dispatch's full key (and then remembered under the token)."""
        token = _call_token.value
        kernel = self.kernel_by_token.get(token) if token is not None else None
        if kernel is None:
            kernel = dispatch.choose(self, lambda k, x_, r_: self.run(modules, x_, r_, k), x, residual, modules)
            if token is not None:
                self.kernel_by_token[token] = kernel
        self.last_kernel = kernel
        return kernel

    def _traced_kernel(self, owner, x, residual) -> str:
        """The kernel a graph traced by torch.compile runs: measured at trace time (static shapes; the choice is
        a constant of the graph), else the last eager run's, else pycnn's (torch.export, dynamic shapes)."""
        if (torch.compiler.is_dynamo_compiling() and x.device.type in ("cpu", "cuda")
                and all(isinstance(d, int) for t in (x, residual) if t is not None for d in t.shape)):
            device = x.device.type
            autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
            return _measure_while_tracing(self, owner, _spec(x), _spec(residual), residual is x,
                                          torch.is_grad_enabled(), autocast, fused.GRAPH_FOLDS.cached)
        return self.last_kernel or "pycnn"

    def __repr__(self):
        extra = ", adds the residual" if self.attrs.get("residual") else ""
        return f"{'+'.join(self.names)} ({self.kind}{extra}, kernels={self.kernels})"


def _spec(t) -> Optional[tuple]:
    """What a random stand-in for tensor t needs: (shape, dtype, device, channels_last, requires_grad)."""
    if t is None:
        return None
    channels_last = ops.kernel_memory_format(t) == torch.channels_last
    return tuple(t.shape), t.dtype, t.device, channels_last, t.requires_grad


def _measure_while_tracing(step: FusedStep, owner: nn.Module, x_spec, residual_spec, residual_is_x: bool, grad: bool,
                           autocast, graph_folds: bool) -> str:
    """Runs for real while dynamo traces (marked below as a constant of the graph): the step's kernel for
    inputs like the traced ones, from the kernel cache or measured on random stand-ins (the residual's is x's
    when the traced residual is x: an inverted-residual block fuses only its identity shortcut), so a compiled
    network runs what `auto` picks in eager rather than pycnn's kernel everywhere. `graph_folds`: the traced
    graph's eval layers call the cached-fold ops (pycnn.fused.GRAPH_FOLDS, which dynamo sets in its trace
    only), so the measurement runs them too."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    def stand_in(spec):
        if spec is None:
            return None
        shape, dtype, device, channels_last, requires_grad = spec
        # a generator of its own: compiling must not move the caller's random stream (dropout, data order)
        t = torch.randn(shape, dtype=dtype, device=device, generator=torch.Generator(device).manual_seed(0))
        return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format) \
            .requires_grad_(requires_grad)

    modules = [owner._modules[name] for name in step.names]
    cast = torch.autocast(x_spec[2].type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with unset_fake_temporarily(), torch.set_grad_enabled(grad), cast, fused.GRAPH_FOLDS.set(graph_folds):
        x = stand_in(x_spec)
        residual = x if residual_is_x else stand_in(residual_spec)
        kernel = dispatch.measured_choice(step, lambda k, x_, r_: step.run(modules, x_, r_, k), x, residual, modules,
                                          traced=_traced_key())
    dispatch.flush_measurements()
    step.last_kernel = kernel
    return kernel


def _traced_key() -> str:
    """The kernel cache's key suffix for a trace-time measurement (pycnn.dispatch.measured_choice)."""
    return "traced+folds" if fused.GRAPH_FOLDS.cached else "traced"


# What torch.compiler.assume_constant_result sets; set here directly because that function imports torch._dynamo
# (seconds) and pycnn must import without it. tests/test_runtime.py checks that dynamo honours it.
_measure_while_tracing._dynamo_marked_constant = True


class MbConvStep(FusedStep):
    """An inverted-residual block (pycnn.passes.mbconv, SE included): kernel "pycnn" runs it as one pycnn.mbconv
    call where that can run (pycnn.fused.mbconv_fusable: eval, no autograd, a device and dtype its kernels
    take), "torch" and every other case run its parts, the conv_bn_act (and se) steps it replaced, each with its
    own kernel choice as without the pass. So the dispatch races the fused block against the unfused path per
    shape, and training never changes."""

    def __init__(self, node: ir.Fused, kernels: str):
        parts = node.attrs["parts"]
        super().__init__(ir.Fused(node.kind, node.layers, {k: v for k, v in node.attrs.items() if k != "parts"}),
                         kernels)
        self.parts = [FusedStep(p, kernels) for p in parts]
        self.part_sizes = [len(p.names) for p in self.parts]
        self.signature += f",expanded={parts[0].out_shape[0]}"  # blocks alike but for their expansion differ
        self._part_kernels: Dict[tuple, str] = {}  # the parts' traced choices by input facts (_traced_part_kernel)

    def candidates(self, training: bool, modules, x: torch.Tensor) -> tuple:
        return ("torch",) if training else ("pycnn", "torch")  # the fused op runs in eval only

    def _fused(self, modules, x, residual, traced_owner: Optional[nn.Module] = None):
        """The block as one pycnn.mbconv call, or None where that cannot run (fused.mbconv_fusable) or, in a graph
        being traced (traced_owner: the module that holds the layers), where `auto` chose the parts."""
        a = self.attrs
        # the SE's module sits between the depthwise conv's pair and the project conv's
        pairs, se = (modules[:-3] + modules[-2:], modules[-3]) if a["se"] else (modules, None)
        if not fused.mbconv_fusable(pairs, x, residual, se):
            return None
        if traced_owner is not None and self.kernels == "auto" and \
                self._traced_kernel(traced_owner, x, residual) != "pycnn":
            return None
        return fused.mbconv_block(pairs, x, a["act"], a["s"], a["residual"], se, a["se_act"])

    def run(self, modules, x, residual, kernel: str):
        if kernel == "pycnn":
            y = self._fused(modules, x, residual)
            if y is not None:
                return y
        first = 0
        for k, (part, size) in enumerate(zip(self.parts, self.part_sizes)):
            mods, first = modules[first:first + size], first + size
            r = residual if k == len(self.parts) - 1 else None
            if part.kernels != "auto":
                kernel = part.kernels
            elif torch.compiler.is_compiling():  # timed while dynamo traces: each part as the graph would run it
                kernel = self._traced_part_kernel(k, part, mods, x, r)
            else:
                kernel = part._auto_kernel(mods, x, r)
            x = part.run(mods, x, r, kernel)
        return x

    def _traced_part_kernel(self, k: int, part: FusedStep, mods, x, residual) -> str:
        """Part k's traced choice for inputs like x, looked up once per input facts: the race's timed rounds
        must not charge the parts for cache lookups the graph does not make."""
        facts = (k, tuple(x.shape), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last),
                 torch.is_grad_enabled(), residual is None, _traced_key())
        kernel = self._part_kernels.get(facts)
        if kernel is None:
            kernel = dispatch.measured_choice(part, lambda k_, x_, r_: part.run(mods, x_, r_, k_), x, residual, mods,
                                              traced=_traced_key())
            self._part_kernels[facts] = kernel
        return kernel

    def __call__(self, owner: nn.Module, x, residual=None):
        if torch.compiler.is_compiling():
            # A traced graph runs the fused block where it can run and the kernel chosen at trace time says so (as
            # `auto` picks in eager), else the parts, each with its own kernel chosen at trace time.
            if self.kernels != "torch":
                y = self._fused([getattr(owner, name) for name in self.names], x, residual, traced_owner=owner)
                if y is not None:
                    return y
            return run_steps(owner, self.parts, x, residual)
        return super().__call__(owner, x, residual)


def run_steps(owner: nn.Module, steps, x, residual=None):
    """Runs the steps in order; the last one adds `residual` (a fused step made by the residual pass)."""
    for step in steps[:-1]:
        x = step(owner, x)
    return steps[-1](owner, x, residual) if steps else x


class Chain(nn.Sequential):
    """Layers run one after another (a network part, a stage, a nested branch); fused steps run several
    sibling layers as one op. Iterates and indexes like nn.Sequential."""

    def __init__(self, modules, steps):
        super().__init__(OrderedDict(modules))
        self.steps = steps

    def forward(self, x, residual=None):
        return run_steps(self, self.steps, x, residual)

    def extra_repr(self):
        fused_steps = [repr(s) for s in self.steps if isinstance(s, FusedStep)]
        return "fused: " + "; ".join(fused_steps) if fused_steps else ""


class Block(nn.Module):
    """Parallel branches on one input, merged (add, concat on channels, mul), with optional layers before and
    after. The `main` branch's layers are attributes of the block itself; other branches are nested Chains
    named after the branch; an empty branch is the identity. With `residual_into` (the residual pass), that
    branch's last fused op adds the other branch's output itself (and applies the activation after the merge)."""

    def __init__(self, modules, pre, branches, merge: str, post, residual_into: Optional[int] = None):
        super().__init__()
        for name, module in modules:
            self.add_module(name, module)
        self.pre, self.post, self.merge, self.residual_into = pre, post, merge, residual_into
        self.branches = branches  # [(nested Chain's name or None, steps run on the block itself)]

    def _branch(self, k: int, x, residual=None):
        nested, steps = self.branches[k]
        if nested is not None:
            return getattr(self, nested)(x, residual)
        return run_steps(self, steps, x, residual)

    def forward(self, x):
        x = run_steps(self, self.pre, x)
        if self.residual_into is not None:
            shortcut = self._branch(1 - self.residual_into, x)
            y = self._branch(self.residual_into, x, residual=shortcut)
        else:
            outs = [self._branch(k, x) for k in range(len(self.branches))]
            if self.merge == "add":
                y = outs[0]
                for o in outs[1:]:
                    y = y + o
            elif self.merge == "mul":
                y = outs[0]
                for o in outs[1:]:
                    y = y * o
            else:
                y = torch.cat(outs, dim=1)
        return run_steps(self, self.post, y)

    def extra_repr(self):
        fused_steps = [repr(s) for steps in [self.pre, self.post] + [b[1] for b in self.branches] for s in steps
                       if isinstance(s, FusedStep)]
        return f"merge={self.merge}" + ("; fused: " + "; ".join(fused_steps) if fused_steps else "")


class _CallToken(threading.local):
    value: Optional[int] = None  # the signature token of the network call running on this thread


_call_token = _CallToken()
_next_token = itertools.count(1)
MAX_SIGNATURES = 256  # input signatures remembered per network; beyond, steps use dispatch's full key


def _layout_of(x) -> Optional[torch.memory_format]:
    """The memory format a caller's 4-D tensor is in (None when both or neither: 1x1 maps, odd strides)."""
    nchw, cl = x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)
    return None if nchw == cl else (torch.contiguous_format if nchw else torch.channels_last)


def enter_layout(x, layout: Optional[torch.memory_format]):
    """(x in the network's internal layout, the caller's layout to give 4-D outputs back in, or None): a 4-D
    input is converted once here, at the network's entry, never per layer."""
    if layout is None or x.dim() != 4 or x.is_contiguous(memory_format=layout):
        return x, None
    return x.contiguous(memory_format=layout), _layout_of(x)


def leave_layout(y, caller: Optional[torch.memory_format]):
    """y (a 4-D output) in the caller's layout again; other outputs as they are."""
    if caller is None or not isinstance(y, torch.Tensor) or y.dim() != 4:
        return y
    return y.contiguous(memory_format=caller)


def step_lists(module: nn.Module) -> list:
    """The lists of steps a container runs (a Chain: its steps; a Block: pre, post, its branches'); else []."""
    if isinstance(module, Chain):
        return [module.steps]
    if isinstance(module, Block):
        return [module.pre, module.post] + [b[1] for b in module.branches]
    return []


def fused_step_modules(model: nn.Module) -> list:
    """The modules the fused steps of a compiled model run, in order."""
    return [container._modules[name] for container in model.modules() for steps in step_lists(container)
            for step in steps if isinstance(step, FusedStep) for name in step.names]


class KeepsInputLayout:
    """Pickling for a module with an `input_layout` attribute (a torch.memory_format, which torch.save's pickle
    protocol cannot store): kept by name."""

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("input_layout") is not None:
            state["input_layout"] = str(state["input_layout"]).rpartition(".")[2]  # "channels_last"
        return state

    def __setstate__(self, state):
        if isinstance(state.get("input_layout"), str):
            state["input_layout"] = _MEMORY_FORMATS[state["input_layout"]]
        super().__setstate__(state)


_MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous_format": torch.contiguous_format}


class DropsFolds:
    """train()/eval(), .to()/.cuda()/.half() and load_state_dict drop the cached eval folds under the module
    (pycnn.fused.clear_folds; refolded on the next eval call): after edits no version counter sees (.data),
    and before tensor swaps (torch.__future__'s swap mode), which refuse weakly referenced tensors."""

    def train(self, mode: bool = True):
        fused.clear_folds(self)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        fused.clear_folds(self)
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, *args, **kwargs):
        fused.clear_folds(self)
        return super().load_state_dict(state_dict, *args, **kwargs)


def _drop_folds(module, incompatible_keys) -> None:
    """The load_state_dict post-hook networks pickled before 2026-12-05 carry (Network.load_state_dict drops the
    folds itself now)."""
    fused.clear_folds(module)


class Network(KeepsInputLayout, DropsFolds, Chain):
    """The compiled network: its parts in order. `arch` is the .arch source, `ir` the elaborated IR, `plan` the
    IR after the passes (what runs), `backend` "fused" or "reference".

    `input_layout`: the memory format the network runs in inside (lower() sets channels_last for the fused
    backend, which pycnn's kernels and oneDNN are fastest in on the CPU and pycnn's CUDA kernels are native to);
    an input in another layout is converted once at the entry and 4-D outputs are given back in the caller's
    layout. None: as given (the reference backend and kernels="torch", which run exactly as plain PyTorch). Per
    call, the kernels measured (kernels="auto") are looked up by one signature of the call (dispatch.call_facts
    and the fused modules' train/eval), not per layer."""

    def __init__(self, parts, arch: str, network_ir, plan, backend: str, input_layout=None):
        super().__init__(parts, [LayerStep(name) for name, _ in parts])
        self.arch, self.ir, self.plan, self.backend = arch, network_ir, plan, backend
        self.input_layout: Optional[torch.memory_format] = input_layout
        self._signatures: Dict[tuple, int] = {}
        first = next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)
        # (plain ints, read in compiled forwards: out channels, kernel, stride, padding, dilation)
        self._first_conv = None if first is None else (first.out_channels, first.kernel_size, first.stride,
                                                       first.padding, first.dilation)

    def first_activation_bytes(self, x) -> int:
        """Bytes of the first activation (the first convolution's output) the network makes from input x: what
        decides whether a compiled inference graph holds the allocator scope (allocator.
        COMPILED_SCOPE_MIN_ACTIVATION_BYTES; the input's own bytes understate a one-channel image's activations).
        The input's bytes where there is no convolution (or a network pickled before 2026-12-05)."""
        first = getattr(self, "_first_conv", None)
        if first is None or x.dim() != 4:
            return x.numel() * x.element_size()
        channels, kernel, stride, padding, dilation = first
        h = conv_output_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
        w = conv_output_size(x.shape[3], kernel[1], stride[1], padding[1], dilation[1])
        return x.shape[0] * channels * h * w * x.element_size()

    def _signature_token(self, x) -> Optional[int]:
        """The token of this call's facts: dispatch.call_facts and the train/eval of every BatchNorm a fused step
        runs (one switched alone counts too), so a cached kernel choice never outlives a fact."""
        modules = self.__dict__.get("_train_eval_modules")
        if modules is None:
            modules = self.__dict__["_train_eval_modules"] = dispatch.train_eval_modules(fused_step_modules(self))
        key = (dispatch.call_facts(x), tuple([m.training for m in modules]))
        token = self._signatures.get(key)
        if token is None and len(self._signatures) < MAX_SIGNATURES:
            token = self._signatures[key] = next(_next_token)
        return token

    def forward(self, x):
        if torch.compiler.is_compiling():
            # inference in a compiled graph: the forward's allocator scope as two ordered side-effecting ops (not
            # in an exported program, which runtimes without pycnn's ops run; a dynamic batch size gets a guard on
            # the threshold; the switch is read last, so that only graphs that could hold the scope guard on it)
            scope = _SCOPE_OPS if (_SCOPE_OPS and self.backend == "fused" and x.device.type == "cpu"
                                   and not (self.training and torch.is_grad_enabled()) and not fused.exporting()
                                   and self.first_activation_bytes(x) >= allocator.COMPILED_SCOPE_MIN_ACTIVATION_BYTES
                                   and allocator.network_cache()) else None
            if scope:
                scope[0](x)
            x, caller = enter_layout(x, self.input_layout)
            if not scope:
                y = super().forward(x)
            else:  # its eval layers call the cached-fold ops (a side effect dynamo records: only then)
                folds, fused.GRAPH_FOLDS.cached = fused.GRAPH_FOLDS.cached, True
                try:
                    y = super().forward(x)
                finally:
                    fused.GRAPH_FOLDS.cached = folds
            if scope:
                scope[1](y)
            return leave_layout(y, caller)
        training = self.training and torch.is_grad_enabled()
        keep_less = self.recompute_epilogues and training
        previous, scoped = _call_token.value, False
        if previous is None:  # an outermost eager forward: a compiled call that raised left its scope open
            allocator.compiled_scope_exit()
        try:
            # in inference the activations this call allocates and frees, its input's layout conversion included,
            # are kept for the next call (pycnn.allocator)
            scoped = self.backend == "fused" and not training and x.device.type == "cpu" \
                and allocator.enter_network_scope()
            x, caller = enter_layout(x, self.input_layout)
            _call_token.value = self._signature_token(x)
            with memory.recompute_epilogues() if keep_less else contextlib.nullcontext():
                y = super().forward(x)
            del x  # a converted input is freed inside the scope
        finally:
            _call_token.value = previous
            if scoped:
                allocator.exit_network_scope()
        dispatch.flush_measurements()  # the kernel choices this call measured, in one write
        return leave_layout(y, caller)

    def kernels(self) -> Dict[str, str]:
        """{layer name: what runs it} for every layer; see pycnn.summary(model)."""
        from .report import kernel_table  # the report reads the runtime's steps
        return kernel_table(self)

    # timm's interface (pycnn.features): the last feature map, the head, a new classifier
    def forward_features(self, x):
        from .features import forward_features
        return forward_features(self, x)

    def forward_head(self, x, pre_logits: bool = False):
        from .features import forward_head
        return forward_head(self, x, pre_logits)

    def reset_classifier(self, num_classes: int) -> None:
        from .features import reset_classifier
        reset_classifier(self, num_classes)

    @property
    def feature_info(self):
        from .features import FeatureInfo, feature_points
        points = feature_points(self.ir)
        return FeatureInfo(points, range(len(points)))
