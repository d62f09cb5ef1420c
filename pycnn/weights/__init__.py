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


def _state_dict(obj, name: str = "state_dict") -> Mapping[str, torch.Tensor]:
    """obj's state_dict, or obj itself when it is one: string keys, real (not complex) tensors."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name}: expected an nn.Module or a state_dict, got {type(obj).__name__}")
    problems = [f"key {k!r} is not a string" for k in obj if not isinstance(k, str)]
    problems += [f"'{k}' is {type(v).__name__}, not a tensor" for k, v in obj.items()
                 if isinstance(k, str) and not isinstance(v, torch.Tensor)]
    problems += [f"'{k}' is complex ({v.dtype}); parameters and buffers are real" for k, v in obj.items()
                 if isinstance(v, torch.Tensor) and v.is_complex()]
    if problems:
        more = f" ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise WeightMismatchError(f"{name} is not a usable state_dict: " + "; ".join(problems[:5]) + more)
    return obj


def _layers(sd: Mapping[str, torch.Tensor], ignore: Sequence[str] = ()) -> List[Tuple[str, Dict[str, torch.Tensor]]]:
    """[(module prefix, {tensor name: tensor})] in state_dict order, except that a module's own tensors come
    after its submodules' (state_dict puts them first): torchvision's ConvNeXt block holds its `layer_scale`
    and timm's NFNet block its `skipinit_gain` next to the layers they scale, applied after them."""
    layers: "OrderedDict[str, Dict[str, torch.Tensor]]" = OrderedDict()
    for key, value in sd.items():
        if any(key.startswith(p) for p in ignore):
            continue
        prefix, _, leaf = key.rpartition(".")
        layers.setdefault(prefix, OrderedDict())[leaf] = value
    prefixes = list(layers)
    last = {}  # prefix -> index of its last descendant (or itself)
    for i, prefix in enumerate(prefixes):
        for ancestor in _ancestors(prefix):
            if ancestor in layers:
                last[ancestor] = i
    order = sorted(range(len(prefixes)), key=lambda i: (last[prefixes[i]], -prefixes[i].count(".")))
    return [(prefixes[i], layers[prefixes[i]]) for i in order]


def _ancestors(prefix: str) -> List[str]:
    """'a.b.c' -> ['a.b.c', 'a.b', 'a', '']."""
    parts = prefix.split(".") if prefix else []
    return [".".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _units(model, layer_names: List[str]) -> List[List[List[str]]]:
    """The pycnn model's parametrized layers grouped as the IR knows them: one unit per layer, and one unit per
    block whose alternatives are the orders in which its branches may be registered in the other library."""
    import itertools
    from .. import ir

    def under(name):
        return [n for n in layer_names if n == name or n.startswith(name + ".")]

    def flat(node, name):
        return [n for n, _ in _iter_named(node, name)]

    def _iter_named(node, name):
        for sub, layer in ir.iter_layers(node, name):
            for leaf in under(sub):
                yield leaf, layer

    units: List[List[List[str]]] = []

    def walk(node, name):
        if isinstance(node, ir.Layer):
            leaves = under(name)
            if leaves:
                units.append([leaves])
        elif isinstance(node, ir.Sequence):
            for child in node.children:
                walk(child, f"{name}.{child.name}")
        elif isinstance(node, ir.BranchBlock):
            for child in node.pre:
                walk(child, f"{name}.{child.name}")
            groups = []
            for br in node.branches:
                base = f"{name}.{br.name}" if br.nested else name
                leaves = []
                for child in br.children:
                    leaves += flat(child, f"{base}.{child.name}")
                groups.append(leaves)
            if len(groups) <= 5:
                orders = list(itertools.permutations(range(len(groups))))
            else:
                orders = [tuple(range(len(groups)))]
            alternatives = []
            for order in orders:
                alt = [leaf for k in order for leaf in groups[k]]
                if alt not in alternatives:
                    alternatives.append(alt)
            if alternatives and alternatives[0]:
                units.append(alternatives)
            for child in node.post:
                walk(child, f"{name}.{child.name}")

    for part in model.ir.parts:
        walk(part, part.name)
    return units


def _pair(ours, theirs, our_name, their_name, ours_is_target, units=None):
    """[(our prefix, their prefix)] and a list of problems."""
    problems: List[str] = []
    mine = dict(ours)
    if units is None:
        units = [[[prefix]] for prefix, _ in ours]
    pairs = []
    k = 0

    def describe(a, b):
        out = []
        ta, tb = mine[a], theirs[b][1]
        if set(ta) != set(tb):
            return [f"{our_name} '{a}' has tensors {sorted(ta)} but {their_name} '{theirs[b][0]}' has {sorted(tb)}"]
        for leaf, tensor in ta.items():
            if tuple(tensor.shape) != tuple(tb[leaf].shape):
                x = f"{our_name} '{a}.{leaf}' {_fmt(tensor.shape)}"
                y = f"{their_name} '{theirs[b][0]}.{leaf}' {_fmt(tb[leaf].shape)}"
                out.append(f"{x} vs {y}" if ours_is_target else f"{y} vs {x}")
        return out

    for alternatives in units:
        n = len(alternatives[0])
        chunk = list(range(k, min(k + n, len(theirs))))
        chosen = None
        for alt in alternatives:
            if len(chunk) == n and all(not describe(a, b) for a, b in zip(alt, chunk)):
                chosen = alt
                break
        if chosen is None:
            for a, b in zip(alternatives[0], chunk):
                problems += describe(a, b)
            chosen = alternatives[0]
        pairs += list(zip(chosen, chunk))
        k += n
    n_ours = sum(len(u[0]) for u in units)
    if n_ours != len(theirs):
        problems.append(f"{our_name} has {n_ours} parametrized layers, {their_name} has {len(theirs)}")
    return pairs, problems


def transfer_state_dict(source, target, *, source_name="source", target_name="target",
                        ignore: Sequence[str] = (), max_report: int = 10) -> "OrderedDict[str, torch.Tensor]":
    """A state_dict with `target`'s names holding `source`'s tensors, paired by structure. When one side is a
    compiled pycnn model, the branches of each of its blocks may appear in any order on the other side."""
    src = _layers(_state_dict(source, source_name), ignore)
    dst = _layers(_state_dict(target, target_name))
    if _is_pycnn(source) and not _is_pycnn(target):
        units = _units(source, [p for p, _ in src])
        pairs, problems = _pair(src, dst, source_name, target_name, ours_is_target=False, units=units)
        pairs = [(theirs, ours) for ours, theirs in pairs]  # (target index, source prefix)
        src_by, dst_list = dict(src), dst
        mapping = [(dst_list[t][0], s) for t, s in pairs]
    else:
        units = _units(target, [p for p, _ in dst]) if _is_pycnn(target) else None
        pairs, problems = _pair(dst, src, target_name, source_name, ours_is_target=True, units=units)
        src_by = dict(src)
        mapping = [(d, src[s][0]) for d, s in pairs]
    if problems:
        shown = problems[:max_report]
        more = f"\n  ... and {len(problems) - max_report} more" if len(problems) > max_report else ""
        raise WeightMismatchError(f"{len(problems)} mismatch(es) between {source_name} and {target_name}:\n  "
                                  + "\n  ".join(shown) + more)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    dst_by = dict(dst)
    position = {}  # the target's state_dict order
    for key in _state_dict(target):
        position.setdefault(key.rpartition(".")[0], len(position))
    for d, s in sorted(mapping, key=lambda m: position[m[0]]):
        for leaf in dst_by[d]:
            out[f"{d}.{leaf}" if d else leaf] = src_by[s][leaf]
    return out


def _is_pycnn(obj) -> bool:
    from .. import ir
    return isinstance(obj, nn.Module) and isinstance(getattr(obj, "ir", None), ir.NetworkIR)


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
