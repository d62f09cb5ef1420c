"""argparse types of the command line (pycnn.cli, python -m pycnn.bench.ops): a bad value is refused while the
arguments are parsed, as one line naming the argument (exit status 2), before any work starts."""
from __future__ import annotations

import argparse
from pathlib import Path


def shape(text: str):
    parts = text.lower().split("x")
    if len(text) > 64 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a shape like 3x224x224 with sizes >= 1, got {text[:64]!r}")
    return tuple(int(v) for v in parts)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or len(text) > 12:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text[:20]!r}")
    return value


def arch_file(text: str) -> Path:
    """An existing .arch file, always read as a path (never as source text, whatever its name)."""
    path = Path(text)
    try:
        ok = path.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"no such file: {text[:200]}")
    return path


def device(text: str):
    import torch
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text[:40]!r} (cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text} is not available ({count} CUDA device"
                                             f"{'' if count == 1 else 's'} here)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"benchmarks run on cpu or cuda, got {text[:40]!r}")
    return device


def out_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path
