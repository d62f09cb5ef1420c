"""Structural re-parameterization (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021):
a block whose branches are each a k x k conv + BatchNorm, a smaller centered conv + BatchNorm, a BatchNorm
alone or the identity, summed (`merge add`), computes in eval mode one k x k convolution with a bias. This
module finds such blocks in a compiled network and replaces each by that convolution (`reparam_conv`, timm's
name) followed by the block's post-merge layers.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch

from . import ir

__all__ = ["reparameterize", "reparameterizable"]


def _branch_form(branch: ir.Branch) -> Optional[Tuple[Optional[ir.Layer], Optional[ir.Layer]]]:
    """(conv or None, bn or None) when the branch is conv+bn, bn or empty; None otherwise."""
    layers = branch.children
    if not all(isinstance(n, ir.Layer) for n in layers):
        return None
    ops = [n.op for n in layers]
    if ops in ([], ["bn"]):
        return None, (layers[0] if layers else None)
    if ops == ["conv", "bn"]:
        a = layers[0].attrs
        (kh, kw), p = a["k"], a["p"]
        if kh == kw and kh % 2 == 1 and p == (kh // 2, kw // 2) and a["d"] == (1, 1):
            return layers[0], layers[1]
    return None


def reparameterizable(block) -> bool:
    """Whether an IR block is a sum of conv+bn / bn / identity branches that one convolution can replace."""
    if not isinstance(block, ir.BranchBlock) or block.merge != "add" or block.pre or len(block.branches) < 2:
        return False
    forms = [_branch_form(b) for b in block.branches]
    if any(f is None for f in forms):
        return False
    convs = [conv for conv, _ in forms if conv is not None]
    if not convs:
        return False
    geometry = {(c.attrs["s"], c.attrs["groups"], c.attrs["out"]) for c in convs}
    return len(geometry) == 1 and len(block.in_shape) == 3


def _deploy_ir(node, path: str, found: List[Tuple[str, ir.BranchBlock]]):
    """The IR with every re-parameterizable block replaced by a Sequence [reparam_conv, post...]."""
    if isinstance(node, ir.Sequence):
        node.children = [_deploy_ir(c, f"{path}.{c.name}", found) for c in node.children]
        return node
    if isinstance(node, ir.BranchBlock):
        if reparameterizable(node):
            found.append((path, node))
            conv = next(c for b in node.branches for c in b.children if c.op == "conv")
            k = max(c.attrs["k"][0] for b in node.branches for c in b.children if c.op == "conv")
            attrs = dict(out=node.branches[0].out_shape[0], k=(k, k), s=conv.attrs["s"], p=(k // 2, k // 2),
                         d=(1, 1), groups=conv.attrs["groups"], bias=True)
            out_shape, params, flops = ir.infer("conv", attrs, node.in_shape)
            layer = ir.Layer("reparam_conv", "conv", attrs, node.in_shape, out_shape, params, flops, conv.loc)
            return ir.Sequence(node.name, [layer] + node.post, node.in_shape, node.out_shape, node.loc,
                               kind="block", block=node.block)
        for group in [node.pre, node.post] + [b.children for b in node.branches]:
            group[:] = [_deploy_ir(c, f"{path}.{c.name}", found) for c in group]
        return node
    return node


def _bn_affine(bn, channels: int, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """bn(y) = y * scale + shift with the running statistics (eval mode); the identity without a bn."""
    if bn is None:
        return torch.ones(channels, dtype=dtype), torch.zeros(channels, dtype=dtype)
    scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -bn.running_mean.to(dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return scale, shift


def _fused_kernel(model, path: str, block: ir.BranchBlock, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    conv_attrs = next(c for b in block.branches for c in b.children if c.op == "conv").attrs
    k = max(c.attrs["k"][0] for b in block.branches for c in b.children if c.op == "conv")
    out, groups, cin = conv_attrs["out"], conv_attrs["groups"], block.in_shape[0]
    weight = torch.zeros(out, cin // groups, k, k, dtype=dtype)
    bias = torch.zeros(out, dtype=dtype)
    for branch in block.branches:
        prefix = f"{path}.{branch.name}" if branch.nested else path
        conv_ir, bn_ir = _branch_form(branch)
        bn = model.get_submodule(f"{prefix}.{bn_ir.name}") if bn_ir is not None else None
        scale, shift = _bn_affine(bn, out, dtype)
        if conv_ir is not None:
            conv = model.get_submodule(f"{prefix}.{conv_ir.name}")
            w = conv.weight.detach().to(dtype)
            m = (k - w.shape[-1]) // 2
            w = torch.nn.functional.pad(w, (m, m, m, m))
            b = conv.bias.detach().to(dtype) if conv.bias is not None else torch.zeros(out, dtype=dtype)
        else:  # the identity as a k x k kernel: channel c reads its own input at the center
            w = torch.zeros(out, cin // groups, k, k, dtype=dtype)
            w[torch.arange(out), torch.arange(out) % (cin // groups), k // 2, k // 2] = 1
            b = torch.zeros(out, dtype=dtype)
        weight += w * scale.view(-1, 1, 1, 1)
        bias += b * scale + shift
    return weight, bias


@torch.no_grad()
def reparameterize(model):
    """The deploy form of a compiled model: each block that sums conv+BatchNorm, BatchNorm-only and identity
    branches (RepVGG's) becomes one convolution with a bias (`<block>.reparam_conv`), its post-merge layers
    kept. BatchNorm's running statistics are folded in, so the result (returned in eval mode, on the model's
    device and dtype) computes what `model.eval()` computes; `model` itself is left as it is."""
    from .lower import lower
    deploy = copy.deepcopy(model.ir)
    found: List[Tuple[str, ir.BranchBlock]] = []
    deploy.parts = [_deploy_ir(p, p.name, found) for p in deploy.parts]
    if not found:
        raise ValueError("reparameterize: the network has no block of summed conv+bn / bn / identity branches")
    param = next(model.parameters())
    new = lower(deploy, init=False, backend=model.backend).to(device=param.device, dtype=param.dtype)
    state: Dict[str, torch.Tensor] = dict(model.state_dict())
    target = new.state_dict()
    acc = torch.float64
    for path, block in found:
        weight, bias = _fused_kernel(model, path, block, acc)
        state[f"{path}.reparam_conv.weight"] = weight.to(param.dtype)
        state[f"{path}.reparam_conv.bias"] = bias.to(param.dtype)
    new.load_state_dict({key: state[key] for key in target})
    return new.eval()
