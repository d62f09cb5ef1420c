"""Helpers for emulation tests: tensors inside guard bands that catch out-of-bounds reads and writes."""

from __future__ import annotations

import torch

GUARD = 64  # elements on each side


class Guarded:
    """A contiguous tensor living inside a larger buffer whose guard bands hold ``fill`` (NaN by default).

    A kernel reading past either end reads NaN (poisoning its result); one writing past either end changes
    a guard element, which ``check()`` reports. ``t`` is the tensor to hand to the binding.
    """

    def __init__(self, src: torch.Tensor | None = None, *, shape=None, dtype=None, fill=float("nan")):
        if src is not None:
            shape, dtype = src.shape, src.dtype
        n = 1
        for s in shape:
            n *= s
        if not dtype.is_floating_point:
            fill = torch.iinfo(dtype).max  # integers: the largest value (-1 for signed types is too common)
        self.buf = torch.full((n + 2 * GUARD,), fill, dtype=dtype)
        self.t = self.buf[GUARD:GUARD + n].view(shape)
        if src is not None:
            self.t.copy_(src)
        self._guard = torch.cat([self.buf[:GUARD], self.buf[GUARD + n:]]).clone()

    def check(self, name: str = "tensor"):
        n = self.t.numel()
        now = torch.cat([self.buf[:GUARD], self.buf[GUARD + n:]])
        same = (now == self._guard) | (now.isnan() & self._guard.isnan()) if now.is_floating_point() else \
            now == self._guard
        if not bool(same.all()):
            bad = (~same).nonzero().flatten().tolist()
            where = ["before" if i < GUARD else "after" for i in bad]
            raise AssertionError(f"{name}: out-of-bounds write into the guard band ({len(bad)} elements, "
                                 f"{where[0]} the tensor)")
        return self.t
