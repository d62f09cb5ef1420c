"""Model benchmark: images/s and peak memory of a compiled .arch network, pycnn (backend "fused") against
the same network and weights on eager PyTorch modules (backend "reference") and torch.compile of it."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from ..lower import to_backend
from .timing import compare


def bench_model(model: nn.Module, input_shape, batch: int, device: torch.device, dtype: torch.dtype,
                channels_last: bool, train: bool, with_compile: bool, repeats: int) -> List[Dict[str, object]]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=fmt).train(train)
    reference = lambda: to_backend(model, "reference").to(memory_format=fmt)
    variants = {"pycnn": model, "eager": reference()}
    if with_compile:
        variants["torch.compile"] = torch.compile(reference())
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
