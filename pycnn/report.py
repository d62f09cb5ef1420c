"""What runs each layer of a compiled network (pycnn.summary(model) shows it in words)."""
from __future__ import annotations

from typing import Dict

from torch import nn

from .runtime import Block, Chain, FusedStep, step_lists


def kernel_table(model: nn.Module) -> Dict[str, str]:
    """{layer name: what runs it} for the layers of a compiled model: pycnn::<op> (pycnn's kernel), aten
    (PyTorch), auto (chosen on first run) or "fused into <layer>"."""
    table = {}
    for prefix, module in model.named_modules():
        for steps in step_lists(module):
            for step in steps:
                first = f"{prefix}.{step.names[0]}" if prefix else step.names[0]
                for name in step.names[1:]:
                    table[f"{prefix}.{name}" if prefix else name] = f"(fused into {first})"
                if isinstance(step, FusedStep):
                    table[first] = kernel_label(step, training=module.training)
                else:
                    sub = model.get_submodule(first)
                    if not isinstance(sub, (Chain, Block)):
                        table[first] = f"aten ({'+'.join([type(sub).__name__, *step.acts])})"
    return table


_PYCNN_KERNEL = {"depthwise": "pycnn::dwconv", "grouped": "pycnn::gconv"}
# a dense conv's pycnn side, and any conv's "folded": the BatchNorm folded in eval, pycnn's after the conv in training
_DENSE = {False: "aten::conv2d+folded BN", True: "aten::conv2d+pycnn::bn_act"}
# a 1x1 conv as matrix products: in training then pycnn's BatchNorm+act (fused.conv1x1_as_gemm), in eval on the
# folded weight (fused._gemm_shapes)
_GEMM = {True: "aten::mm+pycnn::bn_act", False: "aten::mm+folded BN"}


def kernel_label(step: FusedStep, training: bool = False) -> str:
    """What runs a fused step: pycnn's side (a depthwise or grouped conv_bn_act in training: the conv, then
    pycnn::bn_act), PyTorch's conv with the BatchNorm folded in eval or followed by pycnn::bn_act in training
    (a dense conv, or "folded"), "aten" (the eager composition) or, before its first run with kernels="auto",
    the candidates."""
    suffix = "+residual" if step.attrs.get("residual") else ""
    dense = _DENSE[training]
    if step.kind == "conv_bn_act":
        ours = (_PYCNN_KERNEL.get(step.attrs["conv"]) or dense) + suffix
    else:
        ours = f"pycnn::{step.kind}{suffix}"
    kernel = step.last_kernel or (step.kernels if step.kernels != "auto" else None)
    if kernel is None:
        return f"auto: {ours} | aten"
    return {"pycnn": ours, "folded": dense + suffix, "gemm": _GEMM[training] + suffix}.get(kernel, "aten")
