"""Feature maps and the classifier of a compiled network, as timm offers them: `feature_info` (channels and
reduction of each stage's output), a features_only network returning the per-stage maps (backbones for
detection and segmentation), `forward_features`, `forward_head` and `reset_classifier(num_classes)`.

The feature points come from the IR: walking the network's parts in order, the parts with an image output
up to the last one holding parameters (trailing pooling-only parts such as an adaptive pool are head); of
each run of parts at the same reduction, the last. MobileNetV2 gives its stages at reductions 2, 4, 8, 16,
32 with 16, 24, 32, 96, 320 channels, as timm's features_only model does.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from . import ir
from .runtime import DropsFolds, KeepsInputLayout


def _reduction(input_size: int, size: int) -> int:
    """The nominal stride: the power of two nearest input/size (299 -> 35 is 8, as timm reports it)."""
    return 2 ** round(math.log2(input_size / size))


def feature_points(net: ir.NetworkIR) -> List[Dict]:
    """[{"module": part name, "num_chs": channels, "reduction": stride, "index": part index}] in order."""
    if len(net.input_shape) != 3:
        return []
    spatial = []
    for i, part in enumerate(net.parts):
        if len(part.out_shape) != 3:
            break
        spatial.append(i)
    while spatial and not any(layer.params for _, layer in ir.iter_layers(net.parts[spatial[-1]], "")):
        spatial.pop()  # a trailing pooling-only part belongs to the head
    points: List[Dict] = []
    for i in spatial:
        part = net.parts[i]
        point = {"module": part.name, "num_chs": part.out_shape[0],
                 "reduction": _reduction(net.input_shape[1], part.out_shape[1]), "index": i}
        if points and points[-1]["reduction"] == point["reduction"]:
            points[-1] = point
        else:
            points.append(point)
    return points


class FeatureInfo:
    """timm's FeatureInfo: the selected feature points, as dicts (num_chs, reduction, module) and by column."""

    def __init__(self, points: List[Dict], out_indices: Sequence[int]):
        self.info = [{k: p[k] for k in ("num_chs", "reduction", "module")} for p in points]
        self.out_indices = tuple(out_indices)

    def _get(self, key: str, idx=None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def channels(self, idx=None):
        return self._get("num_chs", idx)

    def reduction(self, idx=None):
        return self._get("reduction", idx)

    def module_name(self, idx=None):
        return self._get("module", idx)

    def get_dicts(self, keys=None, idx=None):
        rows = [self.info[i] for i in (self.out_indices if idx is None else idx)]
        return [{k: r[k] for k in (keys or r)} for r in rows]

    def __getitem__(self, idx):
        return self.info[idx]

    def __len__(self):
        return len(self.info)

    def __iter__(self):
        return iter(self.info)

    def __repr__(self):
        return f"FeatureInfo({self.get_dicts()})"


def _check_indices(points, out_indices, name) -> tuple:
    n = len(points)
    if n == 0:
        raise ValueError(f"network '{name}' has no image-shaped stage outputs to return as features")
    if out_indices is None:
        return tuple(range(n))
    indices = tuple(int(i) + n if int(i) < 0 else int(i) for i in out_indices)
    bad = [i for i in indices if not 0 <= i < n]
    if bad or not indices:
        raise ValueError(f"out_indices {tuple(out_indices)}: network '{name}' has {n} feature levels "
                         f"(0..{n - 1}: {', '.join(p['module'] for p in points)})")
    return indices


class FeatureNetwork(KeepsInputLayout, DropsFolds, nn.Module):
    """The stages of a compiled network up to its deepest selected feature point; forward returns the selected
    feature maps (a list, shallow to deep). Parameter names are the full network's, so its checkpoints load
    (with strict=False: the head is not here). `feature_info` as timm's; `ir`, `arch`, `backend` as the network's."""

    def __init__(self, network: nn.Module, out_indices: Optional[Sequence[int]] = None):
        super().__init__()
        points = feature_points(network.ir)
        self.out_indices = _check_indices(points, out_indices, network.ir.name)
        self.feature_info = FeatureInfo(points, self.out_indices)
        last = points[max(self.out_indices)]["index"]
        for part in network.ir.parts[:last + 1]:
            self.add_module(part.name, getattr(network, part.name))
        self._returned = {points[i]["module"] for i in self.out_indices}
        self.ir, self.arch, self.backend = network.ir, network.arch, network.backend
        self.input_layout = getattr(network, "input_layout", None)
        from .cells import graph_step
        self.graph = graph_step(network)  # cells that read earlier outputs: the parts run as the network's graph

    def forward(self, x) -> List[torch.Tensor]:
        from .runtime import enter_layout, leave_layout
        x, caller = enter_layout(x, self.input_layout)  # the maps come back in the caller's layout
        if self.graph is not None:
            outputs = self.graph.run(self, x, len(self._modules))[1]
            return [leave_layout(outputs[name], caller) for name in self._modules if name in self._returned]
        out = []
        for name, part in self.named_children():
            x = part(x)
            if name in self._returned:
                out.append(leave_layout(x, caller))
        return out


# ---------------------------------------------------------------------- the full network's features and head

def _head_start(network) -> int:
    points = feature_points(network.ir)
    if not points:
        raise ValueError(f"network '{network.ir.name}' has no image-shaped stage outputs")
    return points[-1]["index"] + 1


def forward_features(network, x):
    """The last feature map (before pooling and classifier), as timm's forward_features, in the caller's layout."""
    from .runtime import enter_layout, leave_layout
    x, caller = enter_layout(x, getattr(network, "input_layout", None))
    from .cells import graph_step
    graph = graph_step(network)
    if graph is not None:  # cells that read earlier outputs
        return leave_layout(graph.run(network, x, _head_start(network))[0], caller)
    for part in network.ir.parts[:_head_start(network)]:
        x = getattr(network, part.name)(x)
    return leave_layout(x, caller)


def _classifier(network):
    """(owner Chain's name, the Chain, its step index, layer name, module) of the network's classifier: the
    last linear layer (or the Identity that reset_classifier(0) left in its place)."""
    from .runtime import Chain
    name = getattr(network, "_classifier_removed", None)
    if name is None:
        name = next((n for n, m in reversed(list(network.named_modules())) if isinstance(m, nn.Linear)), None)
    if name is None:
        raise ValueError(f"network '{network.ir.name}' has no linear classifier")
    owner_name, _, leaf = name.rpartition(".")
    owner = network.get_submodule(owner_name)
    if not isinstance(owner, Chain) or owner_name not in [p.name for p in network.ir.parts]:
        raise ValueError(f"the classifier {name} is inside a block; pycnn resets a classifier in a part only")
    index = next(i for i, step in enumerate(owner.steps) if step.names[0] == leaf)
    return owner_name, owner, index, leaf, getattr(owner, leaf)


def forward_head(network, x, pre_logits: bool = False):
    """The head on a forward_features map; pre_logits=True stops before the classifier (pooled features)."""
    from .runtime import run_steps
    parts = network.ir.parts[_head_start(network):]
    if not pre_logits:
        for part in parts:
            x = getattr(network, part.name)(x)
        return x
    owner_name, owner, index, _, _ = _classifier(network)
    for part in parts:
        chain = getattr(network, part.name)
        if part.name == owner_name:
            return run_steps(chain, chain.steps[:index], x)
        x = chain(x)
    raise ValueError("the classifier is not in the head")  # pragma: no cover


def reset_classifier(network, num_classes: int) -> None:
    """Replace the classifier (the last linear layer) by a freshly initialized one with `num_classes` outputs;
    0 removes it (the network then returns pooled features). The IR is re-elaborated with
    classes=num_classes, so summaries and pycnn.save describe the new network (not after 0)."""
    from . import passes
    from .build import parse
    owner_name, owner, _, leaf, old = _classifier(network)
    in_features = getattr(network, "_classifier_in", None) or old.in_features
    device = dtype = None
    if isinstance(old, nn.Linear):
        device, dtype = old.weight.device, old.weight.dtype
    if num_classes == 0:
        setattr(owner, leaf, nn.Identity())
        network._classifier_removed, network._classifier_in = f"{owner_name}.{leaf}", in_features
        return
    net = network.ir
    if "classes" not in net.params:
        raise ValueError(f"network '{net.name}' has no `classes` parameter to reset its classifier with")
    new_ir = parse(net.source, net.name, file=net.file, **{**net.overrides, "classes": int(num_classes)})
    layer = dict(new_ir.layers()).get(f"{owner_name}.{leaf}")
    if layer is None or layer.op != "linear" or layer.attrs["out"] != num_classes or layer.in_shape != (in_features,):
        raise ValueError(f"network '{net.name}': its last linear layer does not have `classes` outputs")
    new = nn.Linear(in_features, num_classes, bias=layer.attrs["bias"], device=device, dtype=dtype)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=0.01)  # as pycnn.initialize.init_weights
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    setattr(owner, leaf, new)
    network.__dict__.pop("_classifier_removed", None)
    network.__dict__.pop("_classifier_in", None)
    network.ir = new_ir
    network.plan = passes.run(new_ir) if network.backend == "fused" else new_ir
