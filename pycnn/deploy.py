"""Deployment runners: a compiled network on an inference engine as one callable, tensors in, tensors out.

    run = pycnn.runner(model, engine="onnxruntime", threads=2)
    logits = run(torch.randn(8, 3, 224, 224))

Engines: "torch" (eager PyTorch, in the faster of NCHW and channels_last), "compile" (torch.compile, same
layout rule), "onnxruntime" and "openvino" (the network exported through pycnn.export's ONNX path; CPU).
ONNX Runtime runs with idle spinning off (`session.intra_op.allow_spinning=0`) so that its threads do not
steal time from whatever runs next; OpenVINO with the latency hint and f32 precision (bf16 when asked).
The ONNX engines are the optional extra `pip install "pycnn[deploy]"`.

The benchmark's variants (pycnn bench model --engines, pycnn explore --latency) are named in VARIANTS: which
model (pycnn's network or the baseline a user would pick instead) runs on which engine.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

ENGINES = ("torch", "compile", "onnxruntime", "openvino")

# variant name -> (which model: "pycnn" or "baseline", engine); the baseline is torchvision's/timm's model
# with the same weights when the network has one, else pycnn's reference flavour (plain eager modules)
VARIANTS: Dict[str, Tuple[str, str]] = {
    "torch": ("baseline", "torch"),
    "compile": ("baseline", "compile"),
    "pycnn": ("pycnn", "torch"),
    "pycnn-compile": ("pycnn", "compile"),
    "onnxruntime": ("pycnn", "onnxruntime"),
    "openvino": ("pycnn", "openvino"),
}

# engine -> the modules it imports (the first is the engine itself)
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino", "onnx", "onnxscript")}
PARITY_TOLERANCE = 1e-4      # relative error (max |a - b| / max |b|) an engine may have against PyTorch
BF16_TOLERANCE = 3e-2        # the same for OpenVINO's bf16 precision (8 mantissa bits)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


class EngineNotInstalled(ImportError):
    """An engine whose Python package is missing; the message says how to install it (one line)."""


class EngineError(RuntimeError):
    """A network the engine cannot run; the message names the layer when the engine says which."""


def install_hint(engine: str) -> str:
    packages = " ".join(_PACKAGES.get(engine, (engine,)))
    return f"engine {engine} is not installed: pip install \"pycnn[deploy]\" (or pip install {packages})"


def require(engine: str):
    """The engine's module, imported; EngineNotInstalled (with the pip line) when a package is missing."""
    if engine not in _PACKAGES:
        return torch
    try:
        modules = [importlib.import_module(name) for name in _PACKAGES[engine]]
    except ImportError:
        raise EngineNotInstalled(install_hint(engine)) from None
    return modules[0]


def installed(engine: str) -> bool:
    try:
        require(engine)
        return True
    except EngineNotInstalled:
        return False


def engine_version(engine: str) -> str:
    return getattr(require(engine), "__version__", "?")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (in float64): how far an engine's output is from PyTorch's."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        return float("inf")
    scale = ref.abs().max().item() or 1.0
    return (out - ref).abs().max().item() / scale


class Runner:
    """A model on an engine: `runner(x)` takes an NCHW tensor and returns the output as a CPU/device tensor.
    Attributes: engine, threads, batch (None: any), layout (torch engines: the one it runs in), precision."""

    def __init__(self, engine: str, fn: Callable[[torch.Tensor], torch.Tensor], *, threads: Optional[int],
                 batch: Optional[int], layout: str, precision: str = "f32", onnx_path: Optional[str] = None):
        self.engine, self._fn, self.threads, self.batch = engine, fn, threads, batch
        self.layout, self.precision, self.onnx_path = layout, precision, onnx_path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def __repr__(self):
        return (f"Runner(engine={self.engine!r}, threads={self.threads}, batch={self.batch}, layout={self.layout!r}"
                f", precision={self.precision!r})")


def _torch_fn(model: nn.Module, layout: str, device) -> Callable:
    fmt = LAYOUTS[layout]

    def run(x):
        with torch.no_grad():
            return model(x.to(device).contiguous(memory_format=fmt))
    return run


def fastest_layout(model: nn.Module, x: torch.Tensor, rounds: int = 3) -> str:
    """The layout ("nchw" or "channels_last") in which eager `model(x)` runs faster (interleaved, best of
    `rounds` after one warm-up each); converts `model` in place to that layout."""
    from .timing import compare
    device = x.device
    copies = {name: copy.deepcopy(model).to(memory_format=fmt) for name, fmt in LAYOUTS.items()}
    t = compare({name: (lambda m=m, name=name: _torch_fn(m, name, device)(x)) for name, m in copies.items()},
                device, repeats=rounds, warmup=1)
    best = min(t, key=lambda name: t[name].min_s)
    model.to(memory_format=LAYOUTS[best])
    return best


def _example(model, batch: int, input_shape=None) -> torch.Tensor:
    shape = tuple(input_shape or (model.ir.input_shape if hasattr(model, "ir") else ()))
    if not shape:
        raise ValueError("layout='auto' needs a pycnn model (model.ir.input_shape), input_shape= or a layout")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(0)).to(device)


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def model_fingerprint(model) -> str:
    """sha256 of what an export of `model` depends on: its network (a pycnn model's .arch text, overrides and
    backend; another module's class) and every state_dict entry (name, dtype, shape, bytes)."""
    from .checkpoint import CheckpointError, metadata
    try:
        network = json.dumps(metadata(model), sort_keys=True)
    except CheckpointError:  # not built by pycnn
        network = f"{type(model).__module__}.{type(model).__qualname__}"
    digest = hashlib.sha256(network.encode())
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _onnx_file(model, onnx_path: Optional[str]) -> str:
    """The model as ONNX (batch dynamic) at `onnx_path` (or a temp file). An existing file is reused only when
    the stamp beside it (`<onnx_path>.sha256`: the model's fingerprint and the file's own sha256) matches both:
    another network, other weights, or a file rewritten since, is exported afresh, never run by mistake."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if not onnx_path:
        path = os.path.join(tempfile.mkdtemp(prefix="pycnn-deploy-"), f"{model.ir.name}.onnx")
        return _export(model, path)
    stamp = Path(f"{onnx_path}.sha256")
    fingerprint = model_fingerprint(model)
    if os.path.isfile(onnx_path) and stamp.is_file() \
            and stamp.read_text().split() == [fingerprint, _file_sha256(onnx_path)]:
        return os.fspath(onnx_path)
    stamp.unlink(missing_ok=True)  # a failed export must not leave an old stamp beside a partial file
    _export(model, onnx_path)
    stamp.write_text(f"{fingerprint} {_file_sha256(onnx_path)}\n")
    return os.fspath(onnx_path)


def _export(model, path: str) -> str:
    from .export import ExportError, export_onnx
    try:
        export_onnx(model, path, batch=2, dynamic_batch=True)
    except ExportError as e:
        raise EngineError(str(e).splitlines()[0]) from e
    return path


def _layer_of(onnx_path: str, message: str) -> str:
    """' at layer s1.b2.conv2 (node X)' for the first ONNX node named in an engine's error message, from the
    exporter's name scopes; '' when the message names no node of the graph."""
    try:
        import onnx
        graph = onnx.load(onnx_path, load_external_data=False).graph
    except Exception:  # the message stays useful without the layer
        return ""
    for node in graph.node:
        if node.name and re.search(rf"\b{re.escape(node.name)}\b", message):
            scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
            names = [s for s in re.findall(r"'([^']*)'", scopes) if s]
            layer = names[-2] if len(names) >= 2 else (names[0] if names else "?")
            return f" at layer {layer} (ONNX node {node.name}, {node.op_type})"
    return ""


def _engine_error(engine: str, onnx_path: str, error: Exception) -> EngineError:
    text = str(error).strip()
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    return EngineError(f"{engine} cannot run the network{_layer_of(onnx_path, text)}: {first[:300]}")


def _onnxruntime(path: str, threads: Optional[int]):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads spin by default and take the cores from whatever runs next (an interleaved benchmark)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise _engine_error("onnxruntime", path, e) from e
    name = session.get_inputs()[0].name

    def run(x):
        (out, *_) = session.run(None, {name: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out)
    return run


def _openvino(path: str, threads: Optional[int], batch: Optional[int], precision: str):
    ov = require("openvino")
    core = ov.Core()
    try:
        model = core.read_model(path)
        if batch:  # a static shape: OpenVINO plans its kernels for it (only the batch is dynamic in the export)
            dims = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
            model.reshape([int(batch)] + dims)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:
        raise _engine_error("openvino", path, e) from e
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
    return run


def runner(model, engine: str = "torch", *, threads: Optional[int] = None, batch: Optional[int] = None,
           layout: str = "auto", precision: str = "f32", onnx_path: Optional[str] = None,
           input_shape: Optional[Sequence[int]] = None, copy_model: bool = True, freeze: bool = False) -> Runner:
    """A callable running `model` (a compiled pycnn network; for "torch"/"compile" any nn.Module, for the ONNX
    engines also an .onnx path) on `engine`, in eval mode without autograd: tensors in, tensors out.

    threads: the engine's threads (torch: torch.set_num_threads, process-wide); batch: the batch size it is
    planned for (OpenVINO compiles for it; "auto" layout measures with it; default 1 / any); layout for the
    torch engines: "auto" (the faster of NCHW and channels_last, measured eagerly), "nchw" or "channels_last";
    precision: OpenVINO's "f32" (default) or "bf16"; onnx_path: where the ONNX export is written, or reused
    when the fingerprint beside it (`<onnx_path>.sha256`) is this model's;
    input_shape (C, H, W) of the "auto" layout's measurement for a model that is not pycnn's;
    freeze: "compile" with inductor's freezing (the weights become constants of the compiled code, folded and
    prepacked: the usual setting for CPU inference; a later change to the weights is not seen).
    Raises EngineNotInstalled (one line with the pip command) or EngineError (naming the layer)."""
    if engine not in ENGINES:
        from .dsl.errors import did_you_mean
        raise ValueError(f"unknown engine {engine!r}{did_you_mean(engine, ENGINES)}; one of {', '.join(ENGINES)}")
    if freeze and engine != "compile":
        raise ValueError(f"freeze applies to the 'compile' engine, not {engine!r}")
    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}")
    if engine in ("onnxruntime", "openvino"):
        require(engine)
        path = _onnx_file(model, onnx_path)
        if engine == "onnxruntime":
            if precision != "f32":
                raise ValueError("onnxruntime runs the f32 export only (precision='f32')")
            fn = _onnxruntime(path, threads)
        else:
            fn = _openvino(path, threads, batch, precision)
        return Runner(engine, fn, threads=threads, batch=batch, layout="nchw", precision=precision, onnx_path=path)
    if layout not in ("auto",) + tuple(LAYOUTS):
        raise ValueError(f"layout must be auto, nchw or channels_last, got {layout!r}")
    _set_threads(threads)
    model = (copy.deepcopy(model) if copy_model else model).eval()
    if layout == "auto":
        layout = fastest_layout(model, _example(model, batch or 1, input_shape))
    model.to(memory_format=LAYOUTS[layout])
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if engine == "compile":
        model = torch.compile(model, dynamic=False, options={"freezing": True} if freeze else None)
    return Runner(engine, _torch_fn(model, layout, device), threads=threads, batch=batch, layout=layout)


# ---------------------------------------------------------------------------------------------------------
# measuring a network on one engine (pycnn explore --latency; pycnn bench model --engines uses the parts)

def baseline_model(model) -> Tuple[nn.Module, str]:
    """(the model a user would run instead of pycnn's, its label): torchvision's or timm's model of the same
    name holding `model`'s weights when the network has such a counterpart, else pycnn's reference flavour
    (every layer its eager PyTorch module) as "torch eager"."""
    from . import weights
    from .lower import to_backend
    name, classes = model.ir.name, model.ir.out_shape[0]
    candidates = []
    if importlib.util.find_spec("torchvision"):
        import torchvision
        if name in torchvision.models.list_models():
            candidates.append(("torchvision", lambda: torchvision.models.get_model(name, num_classes=classes),
                               weights.to_torchvision))
    if importlib.util.find_spec("timm"):
        import timm
        if timm.is_model(name):
            candidates.append(("timm", lambda: timm.create_model(name, num_classes=classes), weights.to_timm))
    for library, make, transfer in candidates:
        try:
            other = make()
            transfer(model, other)
            param = next(model.parameters())
            return other.to(device=param.device, dtype=param.dtype).eval(), f"{library}.{name}"
        except Exception:  # another structure (overridden input, classes, widths): the next choice
            continue
    return to_backend(model, "reference").eval(), "pycnn reference (torch eager)"


def parse_latency_spec(text: str) -> Tuple[str, int]:
    """'ENGINE[@BATCH]' -> (variant, batch); ValueError with the choices when it is not one."""
    variant, _, batch = text.partition("@")
    if variant not in VARIANTS:
        from .dsl.errors import did_you_mean
        raise ValueError(f"--latency {text[:40]!r}: unknown engine{did_you_mean(variant, VARIANTS)}; "
                         f"one of {', '.join(VARIANTS)} (optionally @BATCH)")
    if batch and not (batch.isdigit() and 1 <= int(batch) <= 65536):
        raise ValueError(f"--latency {text[:40]!r}: the batch after @ must be an integer >= 1")
    return variant, int(batch or 1)


def variant_runner(variant: str, model, batch: int, threads: Optional[int], *, baseline=None,
                   onnx_path: Optional[str] = None, layout: str = "auto", precision: str = "f32",
                   freeze: bool = False) -> Runner:
    """The Runner of a benchmark variant (VARIANTS) for a pycnn model; `baseline` is baseline_model's module
    (made when needed); `freeze` applies to the compiled variants (runner)."""
    which, engine = VARIANTS[variant]
    subject = model if which == "pycnn" else (baseline if baseline is not None else baseline_model(model)[0])
    if engine in ("onnxruntime", "openvino"):
        return runner(model, engine, threads=threads, batch=batch, onnx_path=onnx_path, precision=precision)
    return runner(subject, engine, threads=threads, batch=batch, layout=layout, input_shape=model.ir.input_shape,
                  freeze=freeze and engine == "compile")


def machine_id() -> str:
    """What a measured latency belongs to: host, CPU model and logical cores, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node()}|{cpu}|{os.cpu_count()} cpus|torch {torch.__version__}"


def latency_key(canonical_text: str, variant: str, batch: int, threads: int, machine: Optional[str] = None,
                build: str = "") -> str:
    """The cache key of one measurement: sha256 over the candidate's canonical text, engine (with its version),
    batch, threads, machine, how the candidate was built (`build`: backend and kernels) and pycnn's version and
    CPU kernel variant."""
    from ._C import build_info
    from .version import __version__
    which, engine = VARIANTS[variant]
    version = engine_version(engine) if engine in _PACKAGES else torch.__version__
    fields = [canonical_text, variant, version, str(batch), str(threads), machine or machine_id(), build,
              __version__, build_info().get("cpu_isa", "")]
    return hashlib.sha256("\n\0".join(fields).encode()).hexdigest()


class LatencyCache:
    """Measured latencies in one JSON file {key: {"ms", "variant", "batch", "threads", "parity", ...}}.
    Read defensively (a regular file below a size cap, entries validated; never pickle); written whole through
    a temporary file renamed over the old one, merged with what others wrote meanwhile."""

    MAX_BYTES = 16 << 20

    def __init__(self, path):
        self.path = Path(path)
        self.entries = self._read()

    def _read(self) -> Dict[str, dict]:
        try:
            if not self.path.is_file() or self.path.stat().st_size > self.MAX_BYTES:
                return {}
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, dict)
                and isinstance(v.get("ms"), (int, float)) and not isinstance(v.get("ms"), bool)}

    def get(self, key: str) -> Optional[dict]:
        return self.entries.get(key)

    def update(self, new: Dict[str, dict]) -> None:
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**self._read(), **self.entries, **new}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.entries = merged


def default_cache_path() -> Path:
    """<cache>/latency.json beside the kernel-choice cache ($PYCNN_CACHE_DIR, $XDG_CACHE_HOME/pycnn, ~/.cache/pycnn)."""
    from .dispatch import cache_path
    return cache_path().parent / "latency.json"


def measure_latencies(models: Sequence[Tuple[str, Callable[[], nn.Module]]], variant: str, batch: int,
                      threads: int, *, repeats: int = 10, cache: Optional[LatencyCache] = None,
                      log: Callable[[str], None] = lambda *_: None, group: int = 8,
                      build: str = "") -> Dict[str, dict]:
    """{canonical text: {"ms", "parity", ...} or {"failure"}} for (canonical text, model factory) pairs on one
    variant: cached ones are read, the others measured `group` at a time, interleaved round by round after a
    warm-up, each checked once against its reference backend (relative error <= PARITY_TOLERANCE, else its
    entry is a failure and it is not timed). New entries are written to the cache at the end. `build` (e.g. the
    backend and kernels the factories compile with) is part of the cache key."""
    from .timing import compare
    from .lower import to_backend
    machine = machine_id()
    results, todo = {}, []
    for text, make in models:
        key = latency_key(text, variant, batch, threads, machine, build)
        hit = cache.get(key) if cache else None
        if hit is not None:
            results[text] = dict(hit, cached=True)
        else:
            todo.append((text, make, key))
    new: Dict[str, dict] = {}
    for start in range(0, len(todo), group):
        runners = {}
        for text, make, key in todo[start:start + group]:
            model = make().eval()
            x = torch.randn((batch,) + tuple(model.ir.input_shape), generator=torch.Generator().manual_seed(0))
            try:
                run = variant_runner(variant, model, batch, threads)
                with torch.no_grad():
                    ref = to_backend(model, "reference").eval()(x)
                err = relative_error(run(x), ref)
            except Exception as e:  # one candidate an engine cannot run (or compile) does not end the exploration
                results[text] = {"failure": (str(e).strip().splitlines() or [type(e).__name__])[0][:300]}
                continue
            if not err <= PARITY_TOLERANCE:
                results[text] = {"failure": f"parity: relative error {err:.1e} > {PARITY_TOLERANCE:g}"}
                continue
            runners[text] = (run, x, key, err)
        if not runners:
            continue
        t = compare({text: (lambda r=r, x=x: r(x)) for text, (r, x, _, _) in runners.items()}, torch.device("cpu"),
                    repeats=repeats, warmup=2, warm_each=True)
        for text, (run, x, key, err) in runners.items():
            entry = {"ms": t[text].median_s * 1e3, "min_ms": t[text].min_s * 1e3, "variant": variant,
                     "batch": batch, "threads": threads, "layout": run.layout, "parity": err,
                     "machine": machine, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
            results[text] = entry
            new[key] = entry
        log(f"measured {len(runners)} candidates on {variant}@{batch}")
    if cache is not None:
        cache.update(new)
    return results
