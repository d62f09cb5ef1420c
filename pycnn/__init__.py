"""pycnn: CNN architectures written in .arch files, compiled into torch modules running on fused kernels."""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # registers torch.ops.pycnn.*
from . import ops  # noqa: F401  (fake kernels and autograd for the ops)
from .dsl.errors import ArchError
from .summary import summary

__version__ = "0.1.0"


def parse(source, network=None, *, file=None, limits=None, **overrides):
    """Parse and elaborate an .arch path or text into the IR (`pycnn.ir.Network`); no torch involved.
    `network` picks one of the file's networks (default: the first); overrides set network parameters."""
    from .dsl.elaborate import Limits, elaborate
    net = elaborate(source, network, file=file, limits=limits or Limits(), **overrides)
    net.overrides = dict(overrides)
    return net


def compile(source, network=None, *, file=None, limits=None, init=True, backend="fused", disable_passes=(),
            kernels=None, **overrides):
    """Compile an .arch path or text into a torch.nn.Module; overrides set network parameters
    (classes=100, input=(3, 160, 160), width_mult=1.25, ...). The source is kept on `model.arch`.

    backend="fused" (default) runs conv+BN+act, BN+act, SE and residual epilogues as fused ops (pycnn.passes;
    `disable_passes` names passes to skip); "reference" runs every layer as its eager PyTorch module. Both have
    the same parameter names. `kernels` ("auto", "pycnn", "torch"; default $PYCNN_KERNELS or "auto") says
    who runs each fused op: measured per shape on first use, or forced (pycnn.dispatch)."""
    from .lower import lower
    return lower(parse(source, network, file=file, limits=limits, **overrides), init=init, backend=backend,
                 disable_passes=disable_passes, kernels=kernels)


def reparameterize(model):
    """The deploy form of a compiled model: each block summing conv+BN, BN and identity branches (RepVGG)
    becomes one convolution; see pycnn.reparam."""
    from .reparam import reparameterize as _reparameterize
    return _reparameterize(model)


def train(arch, network=None, **options):
    """Train the network of an .arch path or text on a dataset into a run folder (pycnn.training.loop.train:
    data="digits", epochs=..., lr=..., out=..., resume=...); returns a RunResult."""
    from .training.loop import train as _train
    return _train(arch, network, **options)


def build_info() -> dict:
    """How the extension was built: torch version, whether CUDA kernels are compiled, the GPU
    architectures (TORCH_CUDA_ARCH_LIST) and the compilers; the CPU kernel variant that runs (cpu_isa:
    baseline, avx2 or avx512, capped by $PYCNN_CPU_ISA), the best one this CPU has and its ISA flags."""
    info = dict(_C.build_info())
    info["cpu_flags"] = _cpu_isa_flags()
    info["cuda_kernels_registered"] = torch._C._dispatch_has_kernel_for_dispatch_key(
        "pycnn::bn_act_forward", "CUDA")
    return info


def _cpu_isa_flags() -> list:
    """The CPU's vector ISA flags (AVX*, FMA, F16C, AMX) from /proc/cpuinfo; [] where it is not readable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(w for w in line.split(":", 1)[1].split()
                                  if w.startswith(("avx", "amx")) or w in ("fma", "f16c"))
    except OSError:
        pass
    return []


_LAZY = {"weights": ".weights", "export": ".export"}  # submodules loaded on first use (they import more)
_LAZY_FUNCTIONS = {"save": ".checkpoint", "load": ".checkpoint", "list_models": ".zoo", "create_model": ".zoo",
                   "export_onnx": ".export", "export_aoti": ".export"}


def __getattr__(name):
    """`pycnn.weights`, `pycnn.save`, `pycnn.create_model`, ... without importing them with the package."""
    import importlib
    if name in _LAZY:
        return importlib.import_module(_LAZY[name], __name__)
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name], __name__), name)
    raise AttributeError(f"module 'pycnn' has no attribute {name!r}")


__all__ = ["compile", "parse", "summary", "ArchError", "build_info", "weights", "save", "load", "list_models",
           "create_model", "export_onnx", "export_aoti", "reparameterize", "train"]
