"""Checkpoints of a training run as safetensors files (no pickle anywhere): model weights with pycnn.save's
metadata (pycnn.checkpoint: the .arch source, network and overrides, so `pycnn.load` and `pycnn eval` rebuild the
model from the file alone) plus the run's own keys; optimizer state as tensors plus a JSON description of its
parameter groups."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..checkpoint import CheckpointError, overrides_of  # noqa: F401  (one error type and format for checkpoints)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_weights(path: Path, state: Dict[str, torch.Tensor], meta: Dict[str, str]) -> None:
    from safetensors.torch import save_file
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    _atomic(Path(path), lambda p: save_file(tensors, str(p), metadata={k: str(v) for k, v in meta.items()}))


def load_weights(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, metadata) of a safetensors file; CheckpointError if missing or corrupt."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # safetensors raises its own error types (and OSError, ValueError) on a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            key = f"{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value
            else:
                scalars[key] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    save_weights(path, tensors, meta)


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    tensors, meta = load_weights(path)
    try:
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta.get("scalars", "{}"))
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} is not an optimizer checkpoint") from None
    state: Dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(scalars.items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit this model's optimizer: {e}") from None


def load_state_into(model: torch.nn.Module, state: Dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        what = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
                f"{bad[0]} has shape {tuple(state[bad[0]].shape)}, the model {tuple(own[bad[0]].shape)}")
        raise CheckpointError(f"{path} does not fit the network ({what})")
    model.load_state_dict(state)
