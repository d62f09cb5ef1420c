"""Self-describing checkpoints: `pycnn.save(model, "m.safetensors")` writes the weights as safetensors with
the .arch source, network name and overrides in the file's metadata; `pycnn.load(path)` rebuilds the
network from them, without the .arch file. Loading never unpickles: only safetensors files are read."""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

FORMAT = "pycnn.checkpoint.v1"  # metadata["format"]; bump when the metadata changes meaning


class CheckpointError(ValueError):
    """The file is not a checkpoint pycnn.load can rebuild a network from; the message says why and what to do."""


def _to_json(value):
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"override value {value!r} ({type(value).__name__}) cannot be stored in a checkpoint")


def _from_json(value):
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def overrides_of(meta: dict) -> dict:
    """The compile overrides stored in a checkpoint's metadata (shapes back to tuples)."""
    return {k: _from_json(v) for k, v in json.loads(meta["overrides"]).items()}


def _network_of(model):
    from .ir import NetworkIR
    net = getattr(model, "ir", None)
    if not isinstance(net, NetworkIR):
        raise CheckpointError(f"pycnn.save takes a model built by pycnn (compile, create_model or load), "
                              f"got {type(model).__name__}")
    return net


def metadata(model) -> dict:
    """The metadata pycnn.save writes: strings only (safetensors' rule)."""
    from .version import __version__
    net = _network_of(model)
    meta = {"format": FORMAT, "pycnn_version": __version__, "network": net.name, "arch": net.source,
            "file": net.file, "overrides": json.dumps({k: _to_json(v) for k, v in net.overrides.items()}),
            "backend": getattr(model, "backend", "fused")}
    features = getattr(model, "out_indices", None)
    if features is not None:  # a features_only model (pycnn.create_model)
        meta["features_only"] = json.dumps(list(features))
    return meta


def save(model, path, *, extra_metadata: Optional[dict] = None) -> None:
    """Write `model`'s state_dict to `path` (safetensors) with what rebuilds it: the .arch source, the network
    name, the overrides it was compiled with, its backend. `extra_metadata` (str -> str) is stored too."""
    from safetensors.torch import save_file
    meta = metadata(model)
    expected = _network_of(model).total_params
    actual = sum(p.numel() for p in model.parameters())
    if expected != actual and getattr(model, "out_indices", None) is None:
        raise CheckpointError(f"the model has {actual:,} parameters but its network '{meta['network']}' "
                              f"{expected:,}: its modules were changed after compiling, so the .arch text no "
                              f"longer describes it")
    for key, value in (extra_metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or key in meta:
            raise CheckpointError(f"extra_metadata: keys and values must be strings other than {sorted(meta)}")
        meta[key] = value
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata=meta)


def read_metadata(path) -> dict:
    """The metadata of a pycnn checkpoint; CheckpointError for anything else (never unpickles)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. Its first byte may be anything
    # (0x80 or "P" included), so the pickle and zip signatures are only tested when that shape is absent.
    is_safetensors = head[8:9] == b"{"
    if not is_safetensors and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: a PyTorch pickle checkpoint (torch.save), not safetensors; pycnn.load "
                              f"never unpickles. Load its state_dict yourself into a compiled model: "
                              f"model.load_state_dict(torch.load(path, weights_only=True))")
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        found = f"format {meta['format']!r}" if "format" in meta else "no pycnn metadata"
        raise CheckpointError(f"{path}: a safetensors file with {found}, not written by pycnn.save; build the "
                              f"network with pycnn.compile or pycnn.create_model and load the tensors with "
                              f"model.load_state_dict(safetensors.torch.load_file(path))")
    missing = [k for k in ("network", "arch", "overrides") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: pycnn metadata lacks {', '.join(missing)}")
    return meta


def load(path, *, backend: Optional[str] = None, kernels: Optional[str] = None, device="cpu"):
    """Rebuild the network saved by pycnn.save at `path` and load its weights (safetensors only).
    backend: "fused" or "reference" (default: the saved model's); the model is returned in eval mode."""
    from safetensors.torch import load_file

    from .build import compile as compile_arch
    meta = read_metadata(path)
    try:
        overrides = overrides_of(meta)
    except (ValueError, AttributeError) as e:
        raise CheckpointError(f"{os.fspath(path)}: unreadable overrides in the metadata ({e})") from None
    file = meta.get("file") or None
    with torch.device("meta"):
        model = compile_arch(meta["arch"], meta["network"], file=file, backend=backend or meta.get("backend", "fused"),
                             kernels=kernels, init=False, **overrides)
    if "features_only" in meta:
        from .features import FeatureNetwork
        model = FeatureNetwork(model, json.loads(meta["features_only"]))
    state = load_file(os.fspath(path), device=str(device))
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{os.fspath(path)}: the tensors do not fit network '{meta['network']}': "
                              f"{str(e).splitlines()[0]}") from None
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{os.fspath(path)}: no tensors for {', '.join(left[:5])}")
    return model.eval()
