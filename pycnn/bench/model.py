"""Model benchmark: images/s and memory of a compiled .arch network, pycnn (backend "fused") against the same
network and weights on eager PyTorch modules (backend "reference"), optionally the torchvision model with
those weights, and torch.compile of the baseline; in one or both memory layouts, all timed interleaved in one
run (docs/design.md section 7).

Memory: on CUDA the peak allocated during one step; everywhere (training) the bytes autograd keeps for
backward (distinct storages seen by saved_tensors_hooks), the activation memory of a training step.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..lower import to_backend
from ..memory import saved_activation_bytes
from ..timing import compare

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def torchvision_baseline(model: nn.Module, name: str) -> nn.Module:
    """torchvision.models.<name> holding `model`'s weights (pycnn.weights.to_torchvision)."""
    import torchvision

    from .. import weights
    tv = getattr(torchvision.models, name)(num_classes=model.ir.out_shape[0])
    weights.to_torchvision(model, tv)
    return tv


def bench_model(model: nn.Module, input_shape, batch: int, device: torch.device, dtype: torch.dtype,
                layouts: Sequence[str], train: bool, with_compile: bool, repeats: int,
                torchvision: Optional[str] = None) -> List[Dict[str, object]]:
    """One row per (variant, layout): median ms, images/s, memory, and speedup = that time / pycnn's time
    in the same layout. Variants: pycnn, eager (the reference backend), torchvision (if named), torch.compile
    (of torchvision if named, else of the reference)."""
    model = model.to(device=device, dtype=dtype).train(train)
    baselines = {"eager": to_backend(model, "reference")}
    if torchvision:
        baselines["torchvision"] = torchvision_baseline(model, torchvision).to(device=device, dtype=dtype)
    x0 = torch.randn(batch, *input_shape, device=device, dtype=dtype)
    variants, inputs = {}, {}
    for layout in layouts:
        fmt = LAYOUTS[layout]
        copies = {"pycnn": copy.deepcopy(model)} | {name: copy.deepcopy(m) for name, m in baselines.items()}
        if with_compile:
            copies["torch.compile"] = torch.compile(copies["torchvision" if torchvision else "eager"])
        for name, m in copies.items():
            variants[(name, layout)] = m.to(memory_format=fmt).train(train)
        inputs[layout] = x0.contiguous(memory_format=fmt)

    def step(m, x):
        if train:
            m.zero_grad(set_to_none=True)
            m(x).float().sum().backward()
        else:
            with torch.no_grad():
                m(x)

    memory: Dict[tuple, Optional[float]] = {}
    saved: Dict[tuple, Optional[float]] = {}
    for key, m in variants.items():
        x = inputs[key[1]]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        step(m, x)  # the warm-up: compiles, and measures pycnn's kernel choices (auto)
        memory[key] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        saved[key] = saved_activation_bytes(m, x) / 2**20 if train and key[0] != "torch.compile" else None
    t = compare({key: (lambda m=m, x=inputs[key[1]]: step(m, x)) for key, m in variants.items()}, device,
                repeats=repeats, warmup=1)
    rows = []
    for (name, layout), timing in t.items():
        rows.append(dict(variant=name, batch=batch, dtype=str(dtype).replace("torch.", ""), layout=layout,
                         mode="train" if train else "eval", ms=timing.median_s * 1e3,
                         images_per_s=batch / timing.median_s, peak_mib=memory[(name, layout)],
                         saved_mib=saved[(name, layout)],
                         speedup=timing.median_s / t[("pycnn", layout)].median_s))
    return rows


def best_layout_summary(rows: List[Dict[str, object]]) -> Dict[str, Dict[str, object]]:
    """Per variant, its fastest layout's row; with `vs_pycnn` = that time / pycnn's best time."""
    best: Dict[str, Dict[str, object]] = {}
    for r in rows:
        if r["variant"] not in best or r["ms"] < best[r["variant"]]["ms"]:
            best[r["variant"]] = r
    return {name: dict(r, vs_pycnn=r["ms"] / best["pycnn"]["ms"]) for name, r in best.items()}
