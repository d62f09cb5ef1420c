"""pycnn: CNN architectures written in .arch files, compiled into torch modules running on fused kernels.

The language (pycnn.parse, pycnn.summary of a path, pycnn.dsl) never imports torch; the torch parts load on
first use (pycnn.compile, pycnn.ops, pycnn.nn, ...). torch.ops.pycnn.* are registered as soon as both pycnn and
torch are imported, in either order.
"""
import sys

from .build import compile, parse
from .dsl.errors import ArchError
from .summary import summary
from .version import __version__



class _RegisterOpsWithTorch:
    """A finder on sys.meta_path that, when torch is imported after pycnn, registers torch.ops.pycnn.* right after
    torch has loaded: `import pycnn, torch` then works as `import torch, pycnn` does, and the language alone
    still never loads torch."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # once; the real finders locate torch
        import importlib.util
        spec = importlib.util.find_spec("torch")
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_torch = spec.loader.exec_module

            def exec_then_register(module):
                exec_torch(module)
                try:
                    importlib.import_module("pycnn.ops")
                except Exception as e:  # never break `import torch`; the error comes back at first use of pycnn
                    import warnings
                    warnings.warn(f"pycnn: could not register torch.ops.pycnn ({type(e).__name__}: {e})",
                                  stacklevel=2)

            spec.loader.exec_module = exec_then_register
        return spec


if "torch" in sys.modules:  # torch is loaded already: registering the ops costs no import of torch
    from . import ops  # noqa: F401  (torch.ops.pycnn.*, their fake kernels and autograd)
elif not any(isinstance(f, _RegisterOpsWithTorch) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOpsWithTorch())


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
    import torch

    from . import _C, ops  # noqa: F401  (ops: registers the kernels)
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
_TORCH_SUBMODULES = ("ops", "nn", "fused", "lower", "dispatch", "features", "reparam", "checkpoint", "decompositions",
                     "timing", "zoo", "bench", "training", "explore")  # `pycnn.ops` & co. without importing them
_LAZY_FUNCTIONS = {"save": ".checkpoint", "load": ".checkpoint", "list_models": ".zoo", "create_model": ".zoo",
                   "export_onnx": ".export", "export_aoti": ".export", "runner": ".deploy"}


def __getattr__(name):
    """`pycnn.weights`, `pycnn.save`, `pycnn.create_model`, ... without importing them with the package."""
    import importlib
    if name in _LAZY or name in _TORCH_SUBMODULES:
        if name not in _LAZY:
            importlib.import_module(".ops", __name__)  # every torch part finds the kernels registered
        return importlib.import_module(_LAZY.get(name, "." + name), __name__)
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name], __name__), name)
    raise AttributeError(f"module 'pycnn' has no attribute {name!r}")


__all__ = ["compile", "parse", "summary", "ArchError", "build_info", "weights", "save", "load", "list_models",
           "create_model", "export_onnx", "export_aoti", "reparameterize", "train", "runner"]
