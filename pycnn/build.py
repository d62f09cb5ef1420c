"""Text to IR to module: what pycnn.parse and pycnn.compile do, for the modules above the compiler (checkpoints,
the zoo, features) to call without importing the package's facade. parse never imports torch."""
from __future__ import annotations


def parse(source, network=None, *, file=None, limits=None, **overrides):
    """Parse and elaborate an .arch path or text into the IR (`pycnn.ir.NetworkIR`); no torch involved.
    `network` picks one of the file's networks (default: the first); overrides set network parameters."""
    from .dsl.elaborate import Limits, elaborate
    net = elaborate(source, network, file=file, limits=limits or Limits(), **overrides)
    net.overrides = dict(overrides)
    return net


def compile(source, network=None, *, file=None, limits=None, init=True, backend="fused", disable_passes=(),
            kernels=None, **overrides):
    """Compile an .arch path or text into a torch.nn.Module; overrides set network parameters
    (classes=100, input=(3, 160, 160), width_mult=1.25, ...). The source is kept on `model.arch`.

    backend="fused" (default) runs conv+BN+act, BN+act, SE and residual epilogues as fused ops (pycnn.passes;
    `disable_passes` names passes to skip); "reference" runs every layer as its eager PyTorch module. Both have
    the same parameter names. `kernels` ("auto", "pycnn", "torch"; default $PYCNN_KERNELS or "auto") says
    who runs each fused op: measured per shape on first use, or forced (pycnn.dispatch)."""
    from .lower import lower
    return lower(parse(source, network, file=file, limits=limits, **overrides), init=init, backend=backend,
                 disable_passes=disable_passes, kernels=kernels)
