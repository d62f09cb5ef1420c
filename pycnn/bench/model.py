"""Model benchmark: images/s and peak memory of a compiled .arch network, pycnn (fused kernels) against
the same network on eager PyTorch modules (reference) and against torch.compile of the reference."""

from __future__ import annotations

import copy
from typing import Dict, List, Optional

import torch
from torch import nn

from ..nn import BatchNormAct2d
from .timing import compare


class EagerBatchNormAct2d(nn.BatchNorm2d):
    """nn.BatchNorm2d [+ residual] + activation as separate eager PyTorch ops (same state_dict)."""

    ACTS = {"none": lambda z: z, "relu": torch.relu, "relu6": nn.functional.relu6, "silu": nn.functional.silu,
            "hardswish": nn.functional.hardswish}

    def forward(self, x, residual=None):
        y = super().forward(x)
        return self.ACTS[self.act](y + residual if residual is not None else y)


def to_reference(model: nn.Module) -> nn.Module:
    """A copy of `model` whose fused BatchNorm+activation modules run as eager PyTorch ops."""
    ref = copy.deepcopy(model)
    for name, module in list(ref.named_modules()):
        if isinstance(module, BatchNormAct2d):
            eager = EagerBatchNormAct2d(module.num_features, module.eps, module.momentum)
            eager.act = module.act
            eager.load_state_dict(module.state_dict())
            eager.train(module.training)
            parent = ref.get_submodule(name.rpartition(".")[0]) if "." in name else ref
            setattr(parent, name.rpartition(".")[2], eager)
    return ref


def bench_model(model: nn.Module, input_shape, batch: int, device: torch.device, dtype: torch.dtype,
                channels_last: bool, train: bool, with_compile: bool, repeats: int) -> List[Dict[str, object]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=fmt).train(train)
    variants = {"pycnn": model, "eager": to_reference(model)}
    if with_compile:
        variants["torch.compile"] = torch.compile(to_reference(model))
    x = torch.randn(batch, *input_shape, device=device, dtype=dtype).contiguous(memory_format=fmt)

    def step(m):
        if train:
            m.zero_grad(set_to_none=True)
            m(x).float().sum().backward()
        else:
            with torch.no_grad():
                m(x)

    peaks: Dict[str, Optional[int]] = {}
    for name, m in variants.items():
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        step(m)  # also the warm-up (and compilation) run
        peaks[name] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    t = compare({name: (lambda m=m: step(m)) for name, m in variants.items()}, device, repeats=repeats, warmup=1)
    rows = []
    for name in variants:
        rows.append(dict(variant=name, batch=batch, dtype=str(dtype).replace("torch.", ""),
                         layout="channels_last" if channels_last else "nchw", mode="train" if train else "eval",
                         ms=t[name].median_s * 1e3, images_per_s=batch / t[name].median_s,
                         peak_mib=None if peaks[name] is None else peaks[name] / 2**20,
                         speedup=t[name].median_s / t["pycnn"].median_s))
    return rows
