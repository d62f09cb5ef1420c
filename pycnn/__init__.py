"""pycnn: CNN architectures written in .arch files, compiled into torch modules running on fused kernels.

The language (pycnn.parse, pycnn.summary of a path, pycnn.dsl) never imports torch; the torch parts load on
first use (pycnn.compile, pycnn.ops, pycnn.nn, ...). With torch already imported, `import pycnn` registers
torch.ops.pycnn.* at once, as it always did.
"""
import sys

from .build import compile, parse
from .dsl.errors import ArchError
from .summary import summary
from .version import __version__

if "torch" in sys.modules:  # torch is loaded already: registering the ops costs no import of torch
    from . import ops  # noqa: F401  (torch.ops.pycnn.*, their fake kernels and autograd)


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
    architectures (TORCH_CUDA_ARCH_LIST) and the compilers."""
    import torch

    from . import _C, ops  # noqa: F401  (ops: registers the kernels)
    info = dict(_C.build_info())
    info["cuda_kernels_registered"] = torch._C._dispatch_has_kernel_for_dispatch_key(
        "pycnn::bn_act_forward", "CUDA")
    return info


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
