"""A caching CPU allocator for large tensors: training without page faults.

glibc (the C library of most Linux systems) gives each allocation above its mmap threshold (at most 32 MiB)
fresh pages from the kernel, and hands freed heap memory back to the kernel once enough of it sits free at the
top of the heap. A CPU training step frees and reallocates the same activations and gradients every step, so
it page-faults on them again every step: about 1 us per 4 KiB page, several times what the memory-bound kernel
that first writes the page costs (`python -m pycnn.bench.allocator` measures it). PyTorch's CUDA allocator
caches device memory for the same reason; its CPU allocator does not cache.

`enable_cpu_cache()` installs, for the whole process, an allocator that keeps freed blocks of 128 KiB (glibc's
initial mmap threshold) and more in free lists by size class (up to 12.5% rounding) and hands them out again;
smaller requests go to the allocator it replaced. Everything that allocates CPU tensors in the process uses it
(PyTorch's own ops, torchvision models), not only pycnn's. It holds at most `max_cached_bytes` of freed blocks
(default: a quarter of the memory the process may use), blocks of sizes the program no longer asks for
included, and gives them back on `empty_cpu_cache()` or `disable_cpu_cache()`. `pycnn train` turns it on
(`--no-cpu-cache` keeps glibc's behaviour).

A fused network's forward in inference on the CPU caches for its own duration even when it is off (a scope: the
calling thread's requests of 128 KiB and more are served from the cache and what it frees is kept for the next
call, as ONNX Runtime's memory arena does), so inference stops page-faulting on its activations from call to call:
about a thousand faults a call at batch 1, seven thousand at batch 8, for RegNetX-400MF without it. What is
freed outside a forward (its output) goes back to glibc unless the cache is enabled; while it is not, cached
blocks no forward asks for again while three more forwards end (on any thread) are freed (a process running many
networks or batch sizes does not keep them all). A torch.compile'd inference graph holds the same scope as two
ordered side-effecting ops (compiled_scope_ops). `set_network_cache(False)`, `without_network_cache()` or
PYCNN_CPU_CACHE=0 turn the scope off; `empty_cpu_cache()` frees what it holds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from typing import Dict, Iterator, Optional

DEFAULT_MAX_CACHED_FRACTION = 0.25  # of the memory the process may use (_usable_bytes)
ENV_NETWORK_CACHE = "PYCNN_CPU_CACHE"  # "0": fused networks' forwards do not open a cache scope


def _usable_bytes() -> int:
    """The machine's memory, or the container's limit (cgroup v2 or v1) when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            with open(path) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def _ext():
    global _C
    if _C is None:
        from . import _C as ext
        _C = ext
    return _C


_C = None


def _default_bound() -> int:
    return int(_usable_bytes() * DEFAULT_MAX_CACHED_FRACTION)


def enable_cpu_cache(max_cached_bytes: Optional[int] = None) -> None:
    """Installs the caching allocator (module docstring) for the whole process; it keeps at most
    `max_cached_bytes` of freed blocks (default: a quarter of the memory the process may use: the machine's, or
    its container's limit). Calling it again changes the bound. Raises RuntimeError when another library installed its
    own CPU allocator with a higher priority."""
    if max_cached_bytes is None:
        max_cached_bytes = _default_bound()
    if not isinstance(max_cached_bytes, int) or isinstance(max_cached_bytes, bool) or max_cached_bytes < 0:
        raise ValueError(f"max_cached_bytes must be a non-negative integer, got {max_cached_bytes!r}")
    _ext()._cpu_cache_enable(max_cached_bytes)


def disable_cpu_cache(keep_cached: bool = False) -> None:
    """Passes every request to the allocator it replaced from now on (but those of fused networks' forwards, whose
    scopes still cache: set_network_cache) and frees the cached blocks (blocks in use are freed when their tensors
    are). It stays installed, in front: every block it handed out comes back to it. keep_cached: keeps the cached
    blocks for the next enable_cpu_cache() instead (a benchmark switching back and forth, pycnn.bench.allocator;
    a fused forward in between may use them, and frees them once they are stale)."""
    _ext()._cpu_cache_disable(keep_cached)


def empty_cpu_cache() -> None:
    """Frees the cached blocks, as torch.cuda.empty_cache() does for the CUDA allocator."""
    _ext()._cpu_cache_empty()


def cpu_cache_stats() -> Dict[str, int]:
    """enabled (by enable_cpu_cache), scopes (forwards caching now on the calling thread), hits and misses (large
    requests served from the cache / newly allocated), cached_bytes, live_bytes (large blocks in use),
    max_cached_bytes (enable_cpu_cache's bound), min_cached_bytes (smaller requests are not cached)."""
    return dict(_ext()._cpu_cache_stats())


@contextlib.contextmanager
def cpu_cache(max_cached_bytes: Optional[int] = None) -> Iterator[None]:
    """The caching allocator within a block; afterwards it is as before (left on if it was on)."""
    before = cpu_cache_stats()
    enable_cpu_cache(max_cached_bytes)
    try:
        yield
    finally:
        if before["enabled"]:
            enable_cpu_cache(before["max_cached_bytes"])
        else:
            disable_cpu_cache()


class _NetworkScope:
    on = os.environ.get(ENV_NETWORK_CACHE, "1") != "0"
    bound: Optional[int] = None  # the default bound, computed once


def set_network_cache(on: bool) -> None:
    """Whether fused networks' forwards open a cache scope (module docstring; default on, PYCNN_CPU_CACHE=0 off)."""
    _NetworkScope.on = bool(on)


def network_cache() -> bool:
    return _NetworkScope.on


@contextlib.contextmanager
def without_network_cache() -> Iterator[None]:
    """Fused networks' forwards without their cache scope within a block (glibc's malloc, as PyTorch's modules)."""
    before = _NetworkScope.on
    _NetworkScope.on = False
    try:
        yield
    finally:
        _NetworkScope.on = before


def enter_network_scope() -> bool:
    """Opens a cache scope for a fused network's forward; False when none was opened (switched off, or another
    library's CPU allocator has a higher priority: then said once, and not tried again)."""
    if not _NetworkScope.on:
        return False
    if _NetworkScope.bound is None:
        _NetworkScope.bound = _default_bound()
    try:
        _ext()._cpu_cache_enter_scope(_NetworkScope.bound)
    except RuntimeError as e:
        _NetworkScope.on = False
        warnings.warn(f"pycnn: networks run without the CPU cache: {e}", RuntimeWarning, stacklevel=3)
        return False
    return True


def exit_network_scope() -> None:
    _ext()._cpu_cache_exit_scope()


@contextlib.contextmanager
def outside_scopes() -> Iterator[None]:
    """Allocations in the block skip the calling thread's open scopes: for tensors a forward makes that outlive it
    (pycnn.fused's BatchNorm folds and packed weights), which would otherwise hold blocks of the activations'
    cache for good, and make the next call's activation of that size miss."""
    ext = _ext()
    suspended = ext._cpu_cache_suspend_scopes()
    try:
        yield
    finally:
        ext._cpu_cache_resume_scopes(suspended)


# A graph torch.compile traces cannot call the two functions above: a Python side effect breaks the graph (and
# fullgraph=True refuses it). It holds them as two custom ops instead, registered as ordered side effects (effect
# tokens: AOTAutograd threads a token through them, inductor keeps them and their order): the first takes the
# forward's input, the last its output, so it runs once that is computed. A compiled call that raises between
# the two leaves its scope open; the thread's next compiled call, or its next outermost eager forward, closes it.
# Only where the network's first activation (its first convolution's output) has COMPILED_SCOPE_MIN_ACTIVATION_BYTES
# and more (runtime.Network.first_activation_bytes). Fresh processes, python -m pycnn.bench.allocator --scope
# --compiled [--compiled-scope-min-bytes 0]: at batch 1, 224x224 (first activations of 1.6 MB), compiled graphs
# faulted 0-2 times a call without the scope and ran 4-5% slower with it in 2026-12-04's runs (level in
# 2026-12-05's, MobileNetV2: 8.9 / 8.4 ms without, 8.8 / 9.3 with); at batch 8 up to 7,800 faults a call went to
# 0 and the graphs ran 1.04-1.13x faster. Keyed on the input's bytes before (1 MiB), which a one-channel image
# understates 32-fold: RegNetX-32 on 1x96x96 images (the README's main job) at batch 16 (first activation 4.7 MB)
# ran 13.5-14.3 ms compiled without the scope, 11.9-13.5 with it; at batch 8 (2.4 MB) 8.7-8.8 without, 7.4-8.8
# with; ResNeXt-50 at batch 1 (64 channels at 112x112: 3.2 MB) 51.7-54.8 without, 47.6-48.0 with (ad hoc, 2 runs
# each, median of 30 calls). 2 MiB until pycnn::eval_conv_bn_act ran its plans in C++ (2026-12-05, evening); since,
# at batch 1, 224x224, the scope and the cached-fold ops it brings are as fast or faster (two runs of
# `--batch 1 --scope --compiled --compiled-scope-min-bytes 0`: RegNetX-400MF 10.55 / 10.04 ms with them against
# 12.84 / 12.64 without, EfficientNet-B0 13.29 / 12.58 against 13.29 / 12.73, MobileNetV2 8.27 / 8.04 against
# 8.26 / 8.25): 1.5 MiB takes them in. Smaller activations (CIFAR-sized inputs, the README's 96x96 grey images
# below batch 6) were not measured with them and keep the fold in the graph.
COMPILED_SCOPE_MIN_ACTIVATION_BYTES = 1536 << 10
_compiled = threading.local()  # .open: a compiled forward's scope is open on this thread


def compiled_scope_enter() -> None:
    if getattr(_compiled, "open", False):
        _compiled.open = False
        exit_network_scope()
    _compiled.open = enter_network_scope()


def compiled_scope_exit() -> None:
    if getattr(_compiled, "open", False):
        _compiled.open = False
        exit_network_scope()


@functools.lru_cache(maxsize=None)
def compiled_scope_ops():
    """(enter, exit): torch.ops.pycnn.network_scope_enter(input) and network_scope_exit(output), ordered side
    effects; None where this torch cannot mark an op as one (compiled graphs then run without the scope)."""
    import torch

    # schemas spelled out: this module's annotations are strings (from __future__), which custom_op cannot read
    @torch.library.custom_op("pycnn::network_scope_enter", mutates_args=(), schema="(Tensor input) -> ()")
    def network_scope_enter(input):
        compiled_scope_enter()

    @torch.library.custom_op("pycnn::network_scope_exit", mutates_args=(), schema="(Tensor output) -> ()")
    def network_scope_exit(output):
        compiled_scope_exit()

    for op in (network_scope_enter, network_scope_exit):
        op.register_fake(lambda t: None)
    try:
        for name in ("pycnn::network_scope_enter", "pycnn::network_scope_exit"):
            torch.library._register_effectful_op(name, torch.library.EffectType.ORDERED)
    except AttributeError:  # an older torch: the registration lives elsewhere, or not at all
        try:
            from torch._higher_order_ops.effects import _EffectType, _register_effectful_op
            for op in (torch.ops.pycnn.network_scope_enter.default, torch.ops.pycnn.network_scope_exit.default):
                _register_effectful_op(op, _EffectType.ORDERED)
        except (ImportError, AttributeError):
            return None
    return torch.ops.pycnn.network_scope_enter, torch.ops.pycnn.network_scope_exit
