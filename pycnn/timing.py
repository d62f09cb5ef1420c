"""Timing harness: warm-up, interleaved A/B repeats (drift hits both sides), medians, CUDA events."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch


@dataclass
class Timing:
    median_s: float
    repeats: int
    min_s: float = 0.0  # best run: robust to preemption on a shared, loaded machine


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(candidates: Dict[str, Callable[[], object]], device: torch.device, repeats: int = 20,
            warmup: int = 3, min_time_s: float = 0.0,
            on_round: Optional[Callable[[], object]] = None, warm_each: bool = False) -> Dict[str, Timing]:
    """Times every candidate, interleaved round by round; returns medians and best runs. `on_round` is called
    after each round (progress). warm_each: an untimed call right before each timed one, so that a candidate
    with its own thread pool (ONNX Runtime, OpenVINO) is timed with its threads awake rather than charged for
    waking them after another candidate ran (milliseconds on a loaded machine)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    samples = {name: [] for name in candidates}
    rounds, started = 0, time.perf_counter()
    while rounds < repeats or time.perf_counter() - started < min_time_s:
        for name, fn in candidates.items():
            if warm_each:
                fn()
            samples[name].append(_time_once(fn, device))
        rounds += 1
        if on_round:
            on_round()
    out = {}
    for name, s in samples.items():
        out[name] = Timing(statistics.median(s), len(s), min(s))
    return out


def peak_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured device-to-device copy bandwidth (read + write bytes per second), in GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = compare({"copy": lambda: dst.copy_(src)}, device, repeats=20)["copy"].median_s
    return 2 * nbytes / t / 1e9
