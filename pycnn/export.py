"""Deployment: ONNX (onnxruntime) and torch.export / AOTInductor packages of compiled networks, fused or
reference, with a dynamic batch size.

ONNX: pycnn's fused ops have ATen compositions (pycnn.decompositions) that torch.onnx's dynamo exporter
applies inside `onnx_decompositions()`, so the graph holds standard ONNX operators only; a plain
`torch.onnx.export(model, (x,), path)` works inside `with pycnn.export.onnx_decompositions():`. torch.export /
AOTInductor keep pycnn's ops: the package calls pycnn's kernels, so the process that loads it imports pycnn
first (`pycnn.export.load_aoti` does).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .decompositions import onnx_decompositions

__all__ = ["ExportError", "example_input", "export_program", "export_onnx", "export_aoti", "load_aoti",
           "onnx_decompositions"]


class ExportError(RuntimeError):
    """The network cannot be exported; the message names the layer or operation at fault."""


def example_input(model, batch: int = 2) -> torch.Tensor:
    """A random input of the model's shape (`model.ir.input_shape`) on its device and dtype."""
    param = next(model.parameters(), None)
    kwargs = dict(device=param.device, dtype=param.dtype) if param is not None and param.is_floating_point() else {}
    return torch.randn((batch,) + tuple(model.ir.input_shape), generator=torch.Generator().manual_seed(0)).to(**kwargs)


def _dynamic_shapes(dynamic_batch: bool):
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


class _Eval:
    """Runs the export in eval mode (BatchNorm folded, dropout off) and restores the model's mode after."""

    def __init__(self, model):
        self.model, self.training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.training)


def _explain(model, error: Exception, what: str, attempt=None, x=None) -> ExportError:
    """An ExportError naming the innermost module that fails to export alone (found by exporting the failing
    container's children one by one on the inputs they get in a forward pass), with the exporter's first line;
    its full report stays on the exception's __cause__."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporters color their reports
    first_line = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    where = _locate(model, attempt, x) if attempt is not None else None
    at = f" at layer {where[0]} ({where[1]})" if where else ""
    return ExportError(f"{what} of network '{model.ir.name}' failed{at}: {first_line}")


def _child_inputs(module, x):
    """{child name: its positional inputs} of one forward of `module` on x."""
    seen, hooks = {}, []
    for name, child in module.named_children():
        hooks.append(child.register_forward_pre_hook(
            lambda m, args, name=name: seen.setdefault(name, tuple(a for a in args))))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _locate(model, attempt, x):
    """(dotted name, type) of the innermost module on the failing path, or None when every part exports."""
    prefix, module, args, found = "", model, (x,), None
    while True:
        inputs = _child_inputs(module, *args)
        failing = None
        for name, child in module.named_children():
            if name not in inputs or len(inputs[name]) != 1:
                continue
            try:
                attempt(child, inputs[name])
            except Exception:
                failing = name
                break
        if failing is None:
            return found
        prefix = f"{prefix}.{failing}" if prefix else failing
        module, args = getattr(module, failing), inputs[failing]
        found = (prefix, type(module).__name__)


def _torch_export(module, args):
    return torch.export.export(module, args)


def export_program(model, *, batch: int = 2, dynamic_batch: bool = True) -> "torch.export.ExportedProgram":
    """torch.export of the model in eval mode on an input of its shape; batch size dynamic unless told."""
    x = example_input(model, batch)
    with _Eval(model), torch.no_grad():
        try:
            return torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(dynamic_batch))
        except Exception as e:  # torch.export raises many types (UserError, Unsupported, ...)
            raise _explain(model, e, "torch.export", _torch_export, x) from e


def export_onnx(model, path, *, batch: int = 2, dynamic_batch: bool = True, opset: Optional[int] = None,
                verbose: bool = False):
    """Write the model (eval mode) to `path` as ONNX with input "input" [batch, C, H, W] (batch dynamic unless
    told) and output "output" (a features_only model: "features.0", ...). Returns the torch.onnx.ONNXProgram."""
    x = example_input(model, batch)
    n_out = len(model.out_indices) if hasattr(model, "out_indices") else 1
    outputs = [f"features.{i}" for i in range(n_out)] if hasattr(model, "out_indices") else ["output"]
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2 ** 30  # ONNX's 2 GB protobuf limit
    with _Eval(model), torch.no_grad(), onnx_decompositions():
        try:
            program = torch.onnx.export(model, (x,), os.fspath(path), dynamo=True, input_names=["input"],
                                        output_names=outputs, opset_version=opset,
                                        dynamic_shapes=_dynamic_shapes(dynamic_batch), external_data=big,
                                        verbose=verbose)
        except Exception as e:
            raise _explain(model, e, "ONNX export", _onnx_export, x) from e
    return program


def _onnx_export(module, args):
    with onnx_decompositions():
        torch.onnx.export(module, args, dynamo=True, verbose=False)


def export_aoti(model, path, *, batch: int = 2, dynamic_batch: bool = True) -> str:
    """Compile the model (eval mode) ahead of time with AOTInductor into the package `path` (.pt2); load it
    with pycnn.export.load_aoti(path). Takes a C++ compile: tens of seconds on a small CPU."""
    from torch._inductor import aoti_compile_and_package
    program = export_program(model, batch=batch, dynamic_batch=dynamic_batch)
    try:
        return aoti_compile_and_package(program, package_path=os.fspath(path))
    except Exception as e:
        raise _explain(model, e, "AOTInductor compilation") from e


def load_aoti(path, device_index: int = -1):
    """The callable of an AOTInductor package written by export_aoti (pycnn's ops registered first)."""
    from torch._inductor import aoti_load_package

    from . import ops  # noqa: F401  (the package calls torch.ops.pycnn.*)
    return aoti_load_package(os.fspath(path), device_index=device_index)
