"""pycnn: CNN architectures written in .arch files, compiled into torch modules."""
from .dsl.errors import ArchError
from .summary import summary


def parse(source, network=None, *, limits=None, **overrides):
    """Parse and elaborate an .arch path or text into the IR (`pycnn.ir.Network`). No torch involved."""
    from .dsl.elaborate import Limits, elaborate
    return elaborate(source, network, limits=limits or Limits(), **overrides)


def compile(source, network=None, *, limits=None, init=True, **overrides):
    """Compile an .arch path or text into a torch.nn.Module; overrides set network parameters
    (classes=100, input=(3, 160, 160), width_mult=1.25, ...)."""
    from .lower import lower
    return lower(parse(source, network, limits=limits, **overrides), init=init)


__all__ = ["compile", "parse", "summary", "ArchError"]
