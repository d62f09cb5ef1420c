"""pycnn: CNN architectures as text, compiled to PyTorch modules running on fused CPU/CUDA kernels."""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # registers torch.ops.pycnn.*
from . import ops  # noqa: F401  (fake kernels and autograd for the ops)

__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built: torch version, whether CUDA kernels are compiled, the GPU
    architectures (TORCH_CUDA_ARCH_LIST) and the compilers."""
    info = dict(_C.build_info())
    info["cuda_kernels_registered"] = torch._C._dispatch_has_kernel_for_dispatch_key(
        "pycnn::bn_act_forward", "CUDA")
    return info
