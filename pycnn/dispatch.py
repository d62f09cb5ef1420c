"""Per-shape choice between pycnn's kernel and PyTorch's composition for each fused op of a compiled network.

`kernels` "pycnn" or "torch" forces one side; "auto" measures the candidates on first use per (op signature,
input shape, dtype, layout, device, train/eval, grad) and keeps the fastest, in memory and on disk
(`<cache>/kernels-pycnn<version>-s<CACHE_SCHEMA>-torch<version>.json`, cache = $PYCNN_CACHE_DIR, else
$XDG_CACHE_HOME/pycnn, else ~/.cache/pycnn). `kernels` comes from pycnn.compile(..., kernels=...), else $PYCNN_KERNELS, else "auto";
what one step runs, "pycnn", "torch", (a depthwise or grouped conv) "folded" or (a 1x1 conv) "gemm",
is its `kernel`.
Measuring runs the op a few times on the real input with autograd.grad (no .grad is touched) and restores the
BatchNorm running statistics afterwards. A fixed workload is timed with each race (`reference_ms`): a recorded race
whose reference ran LOADED times slower than the same workload runs now in this process (timed once per device
and thread count) was timed on a busier machine (another process on the cores slows a race 10-300x, unevenly)
and is measured again. Under torch.compile (and strict torch.export, which traces with dynamo too) a step's
choice is measured at trace time on stand-ins (pycnn.runtime); under non-strict export and with dynamic shapes it
keeps the kernel of its last eager run (pycnn's if none).

The cache file is data from a folder others may write to (docs/security.md): it is read only when it is a
regular file below a size cap, each entry is validated, new entries are written in batches through a fresh
temporary file (O_EXCL, random name, mode 0600) renamed over the old one, and writers merge under a lock.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import stat
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from . import ops

KERNELS = ("auto", "pycnn", "torch")  # the values of kernels=
CANDIDATES = ("pycnn", "folded", "gemm", "torch")  # what auto picks among (FusedStep.candidates: which apply)
ENV_KERNELS = "PYCNN_KERNELS"
ENV_CACHE = "PYCNN_CACHE_DIR"


def resolve_kernels(kernels: Optional[str]) -> str:
    kernels = kernels or os.environ.get(ENV_KERNELS) or "auto"
    if kernels not in KERNELS:
        raise ValueError(f"kernel choice {kernels!r} (argument kernels= or ${ENV_KERNELS}) must be one of "
                         f"{', '.join(KERNELS)}")
    return kernels


# Bumped when a change makes recorded choices wrong, so old files are left unread. 3: before 2026-12-04 a traced
# graph's race of an inverted-residual block timed its parts twice, and on CUDA "pycnn" ran the parts. 4: before
# 2026-12-05 pycnn's side of a residual+relu layer rebuilt its output in training's backward (a slower "pycnn").
# 5: a traced CPU graph's eval layer refolded its BatchNorm per call, so traced races timed a slower "pycnn".
# 6: after 5, for some hours of 2026-12-05, "traced" keys held races of pycnn's cached-fold ops at any input size
# (now "traced+folds", in graphs that hold the allocator scope only). 7: before the packed kernel for narrow
# groups (pycnn.gconv with 2, 4 or 8 channels a group, 2026-12-05) pycnn lost most such races. 8: before the staged
# forward of pycnn.gconv (wider groups, 2026-12-05) pycnn lost more of the others. 9: before its staged rows were
# reused from one output row to the next and rows of 13, 14, 25-28, 37-42, 49-56... pixels got tiles of 14 (avx512),
# its forward was up to 1.14x slower, and before the weight gradient did a 3x3 row's taps together, its backward
# up to 1.18x. 10: before races timed a reference workload (reference_ms), those timed on a busy machine were kept.
# 11: before eval layers on the CPU ran pycnn::eval_conv_bn_act's plans in C++, "pycnn" paid ~15 us more a layer.
# 12: before eval raced "gemm" for dense 1x1 convs and kept grouped convs' weight layouts, it had neither.
CACHE_SCHEMA = 12


def cache_path() -> Path:
    root = os.environ.get(ENV_CACHE)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pycnn")
    from .version import __version__
    torch_version = torch.__version__.replace("+", "_")
    return Path(root) / f"kernels-pycnn{__version__}-s{CACHE_SCHEMA}-torch{torch_version}.json"


MAX_CACHE_BYTES = 4 << 20     # a larger cache file is ignored (and replaced at the next write)
MAX_CACHE_ENTRIES = 20_000    # ~100 bytes each; the oldest are dropped beyond this
FLUSH_INTERVAL_S = 2.0        # new entries are written at most this often (and at exit)


REFERENCE = "reference"  # measure's name for the fixed workload it times with the candidates
LOADED = 3.0  # a race whose reference ran this many times slower than it runs now is measured again


def _valid_entry(key, entry) -> bool:
    return (isinstance(key, str) and len(key) <= 1024 and isinstance(entry, dict)
            and entry.get("choice") in CANDIDATES and f"{entry['choice']}_ms" in entry
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                    for k, v in entry.items() if k != "choice")
            and all(k == "choice" or k.removesuffix("_ms") in CANDIDATES + (REFERENCE,) for k in entry))


@contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on `path` (created if needed, never through a symlink)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX: no lock, the merge still keeps most entries
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


class KernelCache:
    """Measured choices {key: {"choice", "<candidate>_ms" for each candidate measured, "reference_ms"}}, loaded
    from and written to one JSON file."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: Dict[str, dict] = self._read()
        self.pending: Dict[str, dict] = {}
        self.last_flush = float("-inf")

    def _read(self) -> Dict[str, dict]:
        def ignore(why):
            warnings.warn(f"pycnn: ignoring the kernel-choice cache {self.path}: {why}")
            return {}

        try:  # O_NONBLOCK: a FIFO planted as the cache must not block the open
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return {}
        except OSError as e:
            return ignore(e.strerror or e)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ignore("not a regular file")
            if st.st_size > MAX_CACHE_BYTES:
                return ignore(f"larger than {MAX_CACHE_BYTES:,} bytes")
            data = f.read(MAX_CACHE_BYTES + 1)
        try:
            raw = json.loads(data)
        except ValueError as e:
            return ignore(e)
        if not isinstance(raw, dict):
            return ignore(f"expected a JSON object, got {type(raw).__name__}")
        return {k: v for k, v in raw.items() if _valid_entry(k, v)}

    def record(self, key: str, entry: dict) -> None:
        self.entries[key] = entry
        self.pending[key] = entry
        if time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Writes the pending entries, merged with what other processes wrote meanwhile, under a lock."""
        if not self.pending:
            return
        self.last_flush = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path.with_name(self.path.name + ".lock")):
                merged = {**self._read(), **self.pending}
                if len(merged) > MAX_CACHE_ENTRIES:
                    merged = dict(list(merged.items())[-MAX_CACHE_ENTRIES:])
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump(merged, f, indent=1, sort_keys=True)
                    os.replace(tmp, self.path)  # replaces a symlink itself, never its target
                except BaseException:
                    os.unlink(tmp)
                    raise
            self.pending.clear()
        except OSError as e:
            warnings.warn(f"pycnn: cannot write the kernel-choice cache {self.path}: {e}")


_caches: Dict[Path, KernelCache] = {}


def kernel_cache() -> KernelCache:
    path = cache_path()
    if path not in _caches:
        _caches[path] = KernelCache(path)
    return _caches[path]


@atexit.register
def flush_measurements() -> None:
    """Writes what was measured and not yet written (compiled networks call it at the end of a forward, so the
    measurements of one call are one write; and at exit)."""
    for cache in _caches.values():
        if cache.pending:
            cache.flush()


@functools.lru_cache(maxsize=None)
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index).replace(" ", "_")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return _cuda_name(device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "cpu":  # the kernel variant too: PYCNN_CPU_ISA changes which side is faster
        from . import _C
        return f"cpu{torch.get_num_threads()}t-{_C._cpu_isa()}"
    return device.type


def call_facts(x: Tensor) -> tuple:
    """The facts of an input, besides the BatchNorms' train/eval, that decide which kernel is faster: (shape,
    dtype, autocast dtype or None, layout "cl" | "nchw", device model (on the CPU with its threads and pycnn's
    kernel variant, pycnn._C._set_cpu_isa / $PYCNN_CPU_ISA), grad mode). The one list of them: a compiled network
    keys a call's kernel choices by them (pycnn.runtime), the on-disk cache by their text (shape_key)."""
    device = x.device
    autocast = torch.get_autocast_dtype(device.type) if device.type in ("cpu", "cuda") \
        and torch.is_autocast_enabled(device.type) else None
    layout = "cl" if ops.kernel_memory_format(x) == torch.channels_last else "nchw"
    return tuple(x.shape), x.dtype, autocast, layout, _device_name(device), torch.is_grad_enabled()


def train_eval_modules(modules) -> list:
    """The modules whose train/eval changes what a fused step computes: its BatchNorms (batch statistics or
    the running ones, folded); the other modules' flags change nothing."""
    return [m for m in modules if isinstance(m, torch.nn.BatchNorm2d)]


def shape_key(signature: str, x: Tensor, training: bool) -> str:
    shape, dtype, autocast, layout, device, grad = call_facts(x)
    dtype = str(dtype).replace("torch.", "") + (f"-autocast-{str(autocast).replace('torch.', '')}" if autocast else "")
    return (f"{signature}|{'x'.join(map(str, shape))}|{dtype}|{layout}|{device}|"
            f"{'train' if training else 'eval'}|{'grad' if grad else 'nograd'}")


def _reference_workload(device: torch.device) -> Callable[[], object]:
    """What measure times with the candidates: elementwise passes over 256 KiB, split among the threads as the
    kernels are, so that they slow down as the kernels do when other processes take the cores. Eight: the first
    finds its data evicted by the candidate timed before it (one pass alone ranged over 4.6x on an idle machine,
    eight over 1.5x)."""
    a = torch.ones(1 << 16, device=device)
    out = torch.empty_like(a)

    def passes():
        for _ in range(8):
            torch.mul(a, 1.0, out=out)
    return passes


_reference_now: Dict[str, float] = {}  # device name (threads, CPU variant) -> the workload's best ms, this process


def reference_now_ms(device: torch.device) -> float:
    """The REFERENCE workload's best time in this process on device, at the current thread count: what an entry's
    reference_ms is compared with (measured once per device name; a machine that is slow all along, or busy now,
    re-measures nothing). Each time right after a pass over 16 MiB, as in a race, where the candidate timed before
    it evicts its data from the caches (timed cache-warm instead, races of 56x56 layers had references 2.5-3.7x
    it on an idle machine, and the bigger were measured again in every process)."""
    name = _device_name(device)
    if name not in _reference_now:
        from .timing import compare
        evicting = torch.empty(4 << 20, device=device)
        timing = compare({"evict": lambda: evicting.fill_(1.0), REFERENCE: _reference_workload(device)}, device,
                         repeats=5, warmup=1)[REFERENCE]
        _reference_now[name] = timing.min_s * 1e3
    return _reference_now[name]


def timed_on_a_busier_machine(entry: dict, device: torch.device) -> bool:
    """The entry's reference ran LOADED times slower than it runs now."""
    reference = entry.get(f"{REFERENCE}_ms")
    return reference is not None and reference > LOADED * reference_now_ms(device)


def measure(run: Callable[[str, Tensor, Optional[Tensor]], Tensor], x: Tensor, residual: Optional[Tensor],
            params: List[Tensor], buffers: List[Tensor], kernels=("pycnn", "torch"),
            repeats: int = 5) -> Dict[str, float]:
    """Best-of-`repeats` seconds of run(kernel, x, residual) for each of `kernels`, interleaved; with grad
    mode on, including autograd.grad of the inputs and parameters that require grad; and of the REFERENCE workload
    timed with them. The inputs are detached first (the measurement must not reach into the network's real graph)
    and `buffers` (running statistics) are restored afterwards."""
    from .timing import compare
    saved = [b.detach().clone() for b in buffers]
    grad = torch.is_grad_enabled()
    x, residual = (t if t is None else t.detach().requires_grad_(grad and t.requires_grad) for t in (x, residual))
    wrt = [t for t in [x, residual] + params if t is not None and t.requires_grad] if grad else []

    def timed(kernel):
        def fn():
            y = run(kernel, x, residual)
            if wrt:
                torch.autograd.grad(y, wrt, torch.ones_like(y))
        return fn

    try:
        candidates = {kernel: timed(kernel) for kernel in kernels}
        candidates[REFERENCE] = _reference_workload(x.device)
        t = compare(candidates, x.device, repeats=repeats, warmup=1)
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
    return {kernel: t[kernel].min_s for kernel in t}  # the best run: robust to preemption on a busy machine


def choose(step, run: Callable[[str, Tensor, Optional[Tensor]], Tensor], x: Tensor, residual: Optional[Tensor],
           modules: List[torch.nn.Module]) -> str:
    """The kernel (one of CANDIDATES) a fused step runs for input x; see the module docstring."""
    if step.kernels != "auto":
        return step.kernels
    if torch.compiler.is_compiling() or x.device.type not in ("cpu", "cuda"):
        return step.last_kernel or "pycnn"
    return measured_choice(step, run, x, residual, modules)


def measured_choice(step, run: Callable[[str, Tensor, Optional[Tensor]], Tensor], x: Tensor,
                    residual: Optional[Tensor], modules: List[torch.nn.Module], traced: str = "") -> str:
    """The faster kernel for x's facts: from the cache, else measured on x (and recorded). `traced`: measured
    while torch.compile traces, where the ops take their traced paths (the fold in the graph or, in graphs that
    hold the allocator scope, the cached-fold ops: pycnn.fused.GRAPH_FOLDS), so kept under a key of its own
    ("traced", "traced+folds")."""
    training = any(m.training for m in train_eval_modules(modules))
    candidates = step.candidates(training, modules, x)
    if len(candidates) == 1:
        return candidates[0]
    key = shape_key(step.signature, x, training=training) + (f"|{traced}" if traced else "")
    cache = kernel_cache()
    entry = cache.entries.get(key)
    if entry is None or entry["choice"] not in candidates or any(f"{k}_ms" not in entry for k in candidates) \
            or timed_on_a_busier_machine(entry, x.device):
        params = [p for m in modules for p in m.parameters()]
        buffers = [b for m in modules for b in m.buffers()]
        times = measure(run, x, residual, params, buffers, candidates)
        reference = times.pop(REFERENCE, None)
        entry = {"choice": min(times, key=times.get), **{f"{k}_ms": times[k] * 1e3 for k in candidates}}
        if reference is not None:
            entry[f"{REFERENCE}_ms"] = reference * 1e3
        cache.record(key, entry)
    return entry["choice"]
