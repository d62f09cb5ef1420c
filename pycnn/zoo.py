"""The model zoo by name: every network of the shipped .arch files (and of a user's folders), as timm offers
its models. `list_models("regnety*")`, `create_model("resnet50", pretrained="torchvision", features_only=True)`.

A name is found without parsing every file (a scan for `network NAME` lines); the folders given with `paths=`
are searched before the shipped archs, and the first file defining a name wins.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

__all__ = ["list_models", "create_model", "model_file", "UnknownModelError", "PretrainedError"]


class UnknownModelError(ValueError):
    """No .arch file defines a network of that name; the message lists close matches."""


class PretrainedError(ValueError):
    """Pretrained weights could not be found or read (the message says where pycnn looked)."""


def shipped_archs() -> Path:
    """The archs/ folder shipped with pycnn: inside the installed package, or the source checkout's."""
    from .dsl.elaborate import library_dirs
    dirs = library_dirs()
    return next((d for d in dirs if d.is_dir()), dirs[-1])


def _arch_files(paths: Optional[Sequence[Union[str, os.PathLike]]]) -> List[Path]:
    files: List[Path] = []
    for entry in list(paths or []) + [shipped_archs()]:
        entry = Path(entry)
        if entry.is_file():
            files.append(entry)
        elif entry.is_dir():
            files += sorted(p for p in entry.glob("*.arch") if p.is_file())  # top level only: archs/std holds block libraries
        else:
            raise FileNotFoundError(f"paths: no such file or folder: {entry}")
    return files


def _index(paths=None) -> Dict[str, Path]:
    """{network name: the .arch file defining it}, first definition wins."""
    from .dsl.elaborate import _definitions_in
    index: Dict[str, Path] = OrderedDict()
    for f in _arch_files(paths):
        for kind, name in _definitions_in(str(f), f.stat().st_mtime_ns):
            if kind == "network":
                index.setdefault(name, f)
    return index


def list_models(pattern: Union[str, Sequence[str]] = "*", paths=None) -> List[str]:
    """Sorted names of the networks matching `pattern` (fnmatch wildcards, or a list of patterns), from the
    shipped .arch files and the files or folders in `paths`."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in _index(paths) if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def model_file(name: str, paths=None) -> Path:
    """The .arch file that defines network `name`; UnknownModelError with close matches otherwise."""
    index = _index(paths)
    if name in index:
        return index[name]
    close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; pycnn.list_models() lists them"
    raise UnknownModelError(f"unknown model '{name}'{hint}")


def create_model(name: str, pretrained: Union[bool, str, os.PathLike] = False, features_only: bool = False,
                 out_indices: Optional[Sequence[int]] = None, *, paths=None, backend: str = "fused",
                 kernels: Optional[str] = None, download: Optional[bool] = None, **overrides):
    """Build network `name` without naming its file (overrides set its parameters: classes=10, input=...).

    pretrained: False; "torchvision" or "timm" (that library's model of the same name; "torchvision:NAME" or
    "timm:NAME" for another name; True tries torchvision, then timm), loaded from their caches and downloaded
    only when `download` (default: unless $PYCNN_OFFLINE, $HF_HUB_OFFLINE or $TORCH_HUB_OFFLINE is set) allows;
    or a PATH to a checkpoint: pycnn.save's safetensors, any safetensors state_dict, or a torch state_dict file
    (read with weights_only=True), with pycnn's, torchvision's or timm's names (paired by structure).
    With classes=N different from the weights' classes, the classifier is reset (new, untrained).

    features_only=True returns a pycnn.features.FeatureNetwork: forward gives the per-stage feature maps
    selected by out_indices (default all), `feature_info` their channels and reductions."""
    from .build import compile as compile_arch
    path = model_file(name, paths)
    classes = overrides.pop("classes", None) if pretrained else None
    model = compile_arch(str(path), name, backend=backend, kernels=kernels, init=not pretrained, **overrides)
    if pretrained:
        load_pretrained(model, pretrained, name, download=download)
        if classes is not None and classes != model.ir.params.get("classes"):
            model.reset_classifier(classes)
    if features_only:
        from .features import FeatureNetwork
        return FeatureNetwork(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices is for features_only=True")
    return model


# ------------------------------------------------------------------------------------------- pretrained

def _offline(download: Optional[bool]) -> bool:
    if download is not None:
        return not download
    return any(os.environ.get(v, "") not in ("", "0") for v in ("PYCNN_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"))


def load_pretrained(model, pretrained, name: str, download: Optional[bool] = None):
    """Load weights into a compiled model (see create_model's `pretrained`); returns the model."""
    from . import weights
    if pretrained is True:
        import importlib.util
        pretrained = "torchvision" if importlib.util.find_spec("torchvision") and _torchvision_has(name) else "timm"
    spec = os.fspath(pretrained)
    library, _, other = spec.partition(":")
    if library in ("torchvision", "timm") and not os.path.exists(spec):
        source_name = other or name
        if library == "torchvision":
            return weights.from_torchvision(model, _torchvision_state_dict(source_name, _offline(download)))
        return weights.from_timm(model, _timm_state_dict(source_name, _offline(download)))
    return _load_file(model, spec)


def _torchvision_has(name: str) -> bool:
    import torchvision
    return name in torchvision.models.list_models()


def _torchvision_state_dict(name: str, offline: bool):
    import torch
    import torchvision
    if not _torchvision_has(name):
        close = difflib.get_close_matches(name, torchvision.models.list_models(), n=3)
        raise PretrainedError(f"torchvision has no model '{name}'"
                              + (f"; did you mean {', '.join(close)}? (pretrained='torchvision:NAME')" if close else ""))
    w = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    if offline:
        raise PretrainedError(f"torchvision weights {w} are not in the cache ({cached}) and downloads are off")
    try:
        return w.get_state_dict(progress=True)
    except OSError as e:  # no network: URLError is an OSError
        raise PretrainedError(f"torchvision weights {w}: not in the cache ({cached}) and the download failed: {e}")


def _timm_state_dict(name: str, offline: bool):
    import contextlib

    import timm
    try:
        with _hf_offline() if offline else contextlib.nullcontext():
            return timm.create_model(name, pretrained=True).state_dict()
    except RuntimeError as e:
        if "Unknown model" in str(e):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise PretrainedError(f"timm has no model '{name}'"
                                  + (f"; did you mean {', '.join(close)}? (pretrained='timm:NAME')" if close else ""))
        raise PretrainedError(f"timm weights for '{name}': {e}") from None
    except OSError as e:  # not in the Hugging Face cache and offline, or the download failed
        raise PretrainedError(f"timm weights for '{name}' are not in the local cache and could not be "
                              f"downloaded: {str(e).splitlines()[0]}") from None


class _hf_offline:
    """Hugging Face Hub downloads off for the duration (its own switch, read by huggingface_hub at import)."""

    def __enter__(self):
        from huggingface_hub import constants
        self.saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True

    def __exit__(self, *exc):
        from huggingface_hub import constants
        constants.HF_HUB_OFFLINE = self.saved


def read_state_dict(path: str):
    """A state_dict from a safetensors file or a torch file (torch.load with weights_only=True: no code runs)."""
    import torch
    if not os.path.isfile(path):
        raise PretrainedError(f"pretrained={path!r}: not 'torchvision', 'timm' nor an existing file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PretrainedError(f"{path}: cannot read it as a state_dict with weights_only=True: "
                                  f"{str(e).splitlines()[0]}") from None
        for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise PretrainedError(f"{path}: not a state_dict (a mapping of names to tensors)")
        return sd
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except Exception as e:
        raise PretrainedError(f"{path}: neither a torch state_dict nor a safetensors file ({e})") from None


def _library_order(keys, name: str) -> Optional[List[str]]:
    """The definition order of `keys` when they are the state_dict names of torchvision's or timm's model
    `name` (built on the meta device: no memory, no weights), else None."""
    import importlib.util

    import torch
    templates = []
    with torch.device("meta"):
        if importlib.util.find_spec("torchvision") and _torchvision_has(name):
            import torchvision
            templates.append(lambda: torchvision.models.get_model(name))
        if importlib.util.find_spec("timm"):
            import timm
            if timm.is_model(name):
                templates.append(lambda: timm.create_model(name))
        for make in templates:
            order = list(make().state_dict())
            if set(order) == set(keys):
                return order
    return None


def _load_file(model, path: str):
    from . import weights
    sd = read_state_dict(path)
    own = model.state_dict()
    if set(sd) == set(own):  # pycnn's own names (pycnn.save, model.state_dict())
        try:
            return weights._load(model, {k: sd[k] for k in own})
        except RuntimeError as e:  # load_state_dict: shapes differ
            raise PretrainedError(f"{path}: the tensors do not fit network '{model.ir.name}' (another "
                                  f"configuration?): {str(e).splitlines()[-1].strip()}") from None
    if path.endswith(".safetensors") or not _has_order(path):
        # weights are paired by definition order, which safetensors files do not keep (keys are sorted)
        order = _library_order(sd, model.ir.name)
        if order is None:
            raise PretrainedError(f"{path}: its tensor names are neither pycnn's nor those of torchvision's or "
                                  f"timm's '{model.ir.name}', and a safetensors file does not keep the order "
                                  f"they were defined in; load the library's model and use "
                                  f"pycnn.weights.from_torchvision/from_timm")
        sd = {k: sd[k] for k in order}
    return weights._load(model, weights.transfer_state_dict(sd, model, source_name=os.path.basename(path),
                                                            target_name="pycnn"))


def _has_order(path: str) -> bool:
    """torch.save files keep the state_dict's (insertion) order; safetensors files sort the names."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:2] == b"PK" or head[:1] == b"\x80"
