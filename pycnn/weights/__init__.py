"""Weight exchange with torchvision and timm models.

Names differ between libraries, structure does not: both sides are reduced to their parametrized layers in
definition order (state_dict order: each module's parameters and buffers under one prefix), paired one by one,
and every pair must agree on tensor names (weight, bias, running_mean, ...) and shapes. Any disagreement is
reported with both names and shapes; nothing is loaded then.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

__all__ = ["WeightMismatchError", "from_torchvision", "from_timm", "to_torchvision", "to_timm",
           "transfer_state_dict"]

# auxiliary classifiers of torchvision's GoogLeNet and Inception-v3: not part of the inference network
DEFAULT_IGNORE = ("AuxLogits.", "aux1.", "aux2.")


class WeightMismatchError(ValueError):
    """The two networks do not have the same structure; the message lists the first differences."""


def _state_dict(obj) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return obj
    raise TypeError(f"expected an nn.Module or a state_dict, got {type(obj).__name__}")


def _layers(sd: Mapping[str, torch.Tensor], ignore: Sequence[str] = ()) -> List[Tuple[str, Dict[str, torch.Tensor]]]:
    """[(module prefix, {tensor name: tensor})] in state_dict order."""
    layers: "OrderedDict[str, Dict[str, torch.Tensor]]" = OrderedDict()
    for key, value in sd.items():
        if any(key.startswith(p) for p in ignore):
            continue
        prefix, _, leaf = key.rpartition(".")
        layers.setdefault(prefix, OrderedDict())[leaf] = value
    return list(layers.items())


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def transfer_state_dict(source, target, *, source_name="source", target_name="target",
                        ignore: Sequence[str] = (), max_report: int = 10) -> "OrderedDict[str, torch.Tensor]":
    """A state_dict with `target`'s names holding `source`'s tensors, paired by structure."""
    src = _layers(_state_dict(source), ignore)
    dst = _layers(_state_dict(target))
    problems: List[str] = []
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for (sp, st), (dp, dt) in zip(src, dst):
        if set(st) != set(dt):
            problems.append(f"{target_name} '{dp}' has tensors {sorted(dt)} but {source_name} '{sp}' has {sorted(st)}")
            continue
        for leaf, tensor in dt.items():
            s = st[leaf]
            if tuple(s.shape) != tuple(tensor.shape):
                problems.append(f"{target_name} '{dp}.{leaf}' {_fmt(tensor.shape)} vs {source_name} '{sp}.{leaf}' "
                                f"{_fmt(s.shape)}")
            else:
                out[f"{dp}.{leaf}" if dp else leaf] = s
    if len(src) != len(dst):
        extra = src[len(dst):] if len(src) > len(dst) else dst[len(src):]
        who = source_name if len(src) > len(dst) else target_name
        problems.append(f"{source_name} has {len(src)} parametrized layers, {target_name} has {len(dst)}; "
                        f"first unpaired in {who}: '{extra[0][0]}'")
    if problems:
        shown = problems[:max_report]
        more = f"\n  ... and {len(problems) - max_report} more" if len(problems) > max_report else ""
        raise WeightMismatchError(f"{len(problems)} mismatch(es) between {source_name} and {target_name}:\n  "
                                  + "\n  ".join(shown) + more)
    return out


def _load(model: nn.Module, sd) -> nn.Module:
    on_meta = any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    model.load_state_dict(sd, assign=on_meta)  # a model built on the meta device takes the tensors themselves
    return model


def from_torchvision(model: nn.Module, tv_model_or_state_dict, ignore: Sequence[str] = DEFAULT_IGNORE) -> nn.Module:
    """Load a torchvision model's (or state_dict's) weights into a pycnn model of the same structure."""
    sd = transfer_state_dict(tv_model_or_state_dict, model, source_name="torchvision", target_name="pycnn",
                             ignore=ignore)
    return _load(model, sd)


def from_timm(model: nn.Module, timm_model_or_state_dict, ignore: Sequence[str] = ()) -> nn.Module:
    """Load a timm model's (or state_dict's) weights into a pycnn model of the same structure."""
    sd = transfer_state_dict(timm_model_or_state_dict, model, source_name="timm", target_name="pycnn", ignore=ignore)
    return _load(model, sd)


def _load_partial(reference: nn.Module, sd):
    # torchvision's auxiliary classifiers (if the reference has them) keep their own weights
    missing, unexpected = reference.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(DEFAULT_IGNORE)]
    if missing or unexpected:
        raise WeightMismatchError(f"export incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return reference


def to_torchvision(model: nn.Module, tv_model_or_state_dict):
    """Export a pycnn model's weights with torchvision's names: loads them into a torchvision model (returned),
    or, given a state_dict as a template, returns a new state_dict."""
    ref = tv_model_or_state_dict
    if isinstance(ref, nn.Module):
        template = OrderedDict((k, v) for k, v in ref.state_dict().items() if not k.startswith(DEFAULT_IGNORE))
        sd = transfer_state_dict(model, template, source_name="pycnn", target_name="torchvision")
        return _load_partial(ref, sd)
    return transfer_state_dict(model, ref, source_name="pycnn", target_name="torchvision")


def to_timm(model: nn.Module, timm_model_or_state_dict):
    """Export a pycnn model's weights with timm's names (see to_torchvision)."""
    ref = timm_model_or_state_dict
    sd = transfer_state_dict(model, ref, source_name="pycnn", target_name="timm")
    if isinstance(ref, nn.Module):
        ref.load_state_dict(sd)
        return ref
    return sd
