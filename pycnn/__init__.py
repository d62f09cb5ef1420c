"""pycnn: CNN architectures written in .arch files, compiled into torch modules."""
from .dsl.errors import ArchError
from .summary import summary


def parse(source, network=None, *, file=None, limits=None, **overrides):
    """Parse and elaborate an .arch path or text into the IR (`pycnn.ir.Network`); no torch involved.
    `network` picks one of the file's networks (default: the first); overrides set network parameters."""
    from .dsl.elaborate import Limits, elaborate
    return elaborate(source, network, file=file, limits=limits or Limits(), **overrides)


def compile(source, network=None, *, file=None, limits=None, init=True, **overrides):
    """Compile an .arch path or text into a torch.nn.Module; overrides set network parameters
    (classes=100, input=(3, 160, 160), width_mult=1.25, ...). The source is kept on `model.arch`."""
    from .lower import lower
    return lower(parse(source, network, file=file, limits=limits, **overrides), init=init)


__all__ = ["compile", "parse", "summary", "ArchError"]
