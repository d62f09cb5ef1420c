"""Training memory: keep what an epilogue is computed from, not its output.

In training, a layer ``y = act(bn(x) [+ residual])`` is kept twice for backward: BatchNorm keeps its input x
(the conv's output) and the next layer keeps y (a conv keeps its input). y is cheap to rebuild from x and the
batch statistics, so under `recompute_epilogues()` every saved reference to such a y becomes a `Recipe` (x, the
statistics, weight, bias, residual, act) that rebuilds y once, when backward first needs it: one activation per
layer instead of two. The rebuilt y is bit-identical (the same kernel with the same per-channel scale).

This is InPlace-ABN's saving (Rota Bulo et al., CVPR 2018) without its restriction to invertible activations:
InPlace-ABN keeps y and inverts it, which relu and relu6 do not allow (their negative part is lost, and
BatchNorm's backward needs x-hat everywhere); keeping x instead works for every activation.

Saved tensors still fail loudly when modified in place before backward (autograd's own check does not run
under saved-tensor hooks, so the hooks check the version counters themselves).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_state = threading.local()  # .active: recompute_epilogues() is on; .counter: saved_activation_bytes() is counting

_RECIPE = "_pycnn_recipe"  # the attribute of an epilogue's output that holds its Recipe


class Recipe:
    """How to rebuild an epilogue's output from tensors autograd keeps anyway. `rebuild` takes the tensors
    (each one rebuilt first when it is itself an epilogue's output) and returns the output."""

    __slots__ = ("parts", "versions", "rebuild", "cached", "output_version")

    def __init__(self, parts, rebuild: Callable):
        # an input that is itself an epilogue's output is held as its recipe, so it is not kept alive either
        self.parts = [_recipe_of(t) or t if isinstance(t, Tensor) else t for t in parts]
        self.versions = [t._version if isinstance(t, Tensor) else None for t in self.parts]
        self.rebuild = rebuild
        self.cached: Optional[Tensor] = None
        self.output_version: Optional[int] = None  # the output's version when made; edited since: no recipe

    def tensors(self):
        """The tensors this recipe keeps alive, its inner recipes' included."""
        for part in self.parts:
            if isinstance(part, Recipe):
                yield from part.tensors()
            elif isinstance(part, Tensor):
                yield part

    def materialize(self) -> Tensor:
        if self.cached is None:
            parts = []
            for part, version in zip(self.parts, self.versions):
                if isinstance(part, Recipe):
                    part = part.materialize()
                elif isinstance(part, Tensor):
                    _check_version(part, version)
                parts.append(part)
            self.cached = self.rebuild(*parts)
        return self.cached


def _recipe_of(t: Tensor) -> Optional["Recipe"]:
    """t's recipe while t is as its recipe made it (not edited in place since)."""
    recipe = getattr(t, _RECIPE, None)
    return recipe if recipe is not None and recipe.output_version == t._version else None


def _check_version(t: Tensor, version: int) -> None:
    if t._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"a tensor of shape {list(t.shape)} is at version {t._version}; expected version {version} instead "
            "(pycnn.memory keeps it for backward)")


def active() -> bool:
    return getattr(_state, "active", False)


def packing() -> bool:
    """recompute_epilogues() is on and its hooks are the innermost saved-tensor hooks, so what is saved now is
    packed by them; not so inside a non-reentrant torch.utils.checkpoint region, whose own hooks take over and
    re-run the forward in backward without ours (a layer must then save the same thing both times)."""
    if not active():
        return False
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # private: absent means unknown
    return top is not None and top(False) == (_pack, _unpack)


def note_bn_act_output(y: Tensor, input: Tensor, weight, bias, residual, save_mean: Tensor, save_var: Tensor,
                       eps: float, act: str) -> None:
    """Called by bn_act's autograd setup: under recompute_epilogues(), y gets the recipe that rebuilds it
    (the inference form of the same kernel, with the batch's statistics as the running ones)."""
    if not active():
        return

    def rebuild(x, w, b, r, mean, var):
        return torch.ops.pycnn.bn_act_forward(x, w, b, r, mean, var, False, eps, act)[0]

    recipe = Recipe([input, weight, bias, residual, save_mean, save_var], rebuild)
    recipe.output_version = y._version
    setattr(y, _RECIPE, recipe)


def _pack(t: Tensor):
    recipe = _recipe_of(t)  # an output changed in place after it was made is kept as it is now
    counter = getattr(_state, "counter", None)
    if counter is not None:
        counter.add(recipe.tensors() if recipe is not None else [t])
    if recipe is not None:
        return recipe
    return t, t._version


def _unpack(packed):
    if isinstance(packed, Recipe):
        return packed.materialize()
    t, version = packed
    _check_version(t, version)
    return t


@contextlib.contextmanager
def recompute_epilogues():
    """Within it, training forwards keep epilogues' recipes instead of their outputs (module docstring). Not
    for torch.compile, whose partitioner decides what to recompute itself (callers check is_compiling)."""
    if active():
        yield
        return
    _state.active = True
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _state.active = False


class _MaxPool2dKeepingInput(torch.autograd.Function):
    """max_pool2d that keeps its input (an epilogue's recipe, as a rule) and finds the argmax again in
    backward, instead of keeping int64 indices (twice the bytes of a float32 output)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x)
        return torch.ops.aten.max_pool2d_with_indices(x, *ctx.args)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        indices = torch.ops.aten.max_pool2d_with_indices(x, *ctx.args)[1]
        return (torch.ops.aten.max_pool2d_with_indices_backward(grad_output, x, *ctx.args, indices),
                None, None, None, None, None)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> Tensor:
    """F.max_pool2d; under recompute_epilogues() in training, without keeping the indices."""
    if not torch.compiler.is_compiling() and active() and x.requires_grad:
        stride = kernel_size if stride is None or stride == [] else stride
        return _MaxPool2dKeepingInput.apply(x, _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation),
                                            ceil_mode)
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d through `max_pool2d` (same arguments and state)."""

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class _Counter:
    """Unique storages among the saved tensors, parameters left out."""

    def __init__(self, exclude):
        self.exclude = exclude
        self.storages: Dict[int, int] = {}

    def add(self, tensors):
        for t in tensors:
            storage = t.untyped_storage()
            if storage.data_ptr() not in self.exclude:
                self.storages[storage.data_ptr()] = storage.nbytes()


def saved_activation_bytes(model: torch.nn.Module, *inputs) -> int:
    """Bytes autograd keeps for backward during one forward of `model(*inputs)`: every storage saved for
    backward counted once, the model's parameters left out, a recipe counted as the tensors it holds.
    Device-independent (sizes, not allocator state). Run the model once before, so that measurements the
    first call makes (the kernel choice) are not counted."""
    counter = _Counter({p.untyped_storage().data_ptr() for p in model.parameters()})
    previous = getattr(_state, "counter", None)
    _state.counter = counter
    try:
        # a model that recomputes installs its own hooks inside (the innermost hooks win); they count too
        with torch.autograd.graph.saved_tensors_hooks(_counting_pack, lambda t: t):
            model(*inputs)
    finally:
        _state.counter = previous
    return sum(counter.storages.values())


def _counting_pack(t: Tensor) -> Tensor:
    _state.counter.add([t])
    return t
