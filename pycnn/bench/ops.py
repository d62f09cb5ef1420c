"""Operator benchmarks: pycnn's fused kernels against the eager PyTorch composition they replace (and,
with --compile, against torch.compile of that composition), over the layer shapes of real networks.

    python -m pycnn.bench.ops bn_act|dwconv|gconv|se [--arch FILE.arch[:NETWORK] ...] [--network NAME ...]
        [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--batch N ...] [--repeats N] [--threads N]
        [--compile | --no-compile] [--cpu-isa baseline|avx2|avx512 ...] [--quick]

The shapes come from the networks (`pycnn.parse(file, network).layers()`): depthwise convs followed by a
BatchNorm (dwconv), grouped convs followed by a BatchNorm (gconv), every BatchNorm with its activation and
fused residual (bn_act), every squeeze-and-excitation layer (se); identical shapes are measured once and
labelled with every network they occur in. Default networks: MobileNetV2, EfficientNet-B0, RegNetX-400MF,
RegNetX-32GF and ResNeXt-50 32x4d (archs/ of the repository); --quick: a tiny built-in network.

Prints, per layer shape and layout, the median time of each side measured side by side (interleaved),
the speedup (eager / pycnn; with --compile also torch.compile / pycnn and the compile time), and on CUDA
the achieved GB/s and % of the measured copy bandwidth (gconv: also GFLOP/s on the CPU, TFLOP/s on CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import pycnn
from .. import argtypes
from pycnn.nn import BatchNormAct2d, DepthwiseConvBNAct2d, SqueezeExcite

from ..timing import compare, peak_bandwidth_gbs
from ..fused import ACT_FNS
from ..opspec import ACTIVATIONS

# ------------------------------------------------------------------------------------ layer shapes

# The networks benchmarked by default: (file in the repository's archs/, network).
DEFAULT_NETWORKS = [
    ("mobilenet_v2.arch", "mobilenet_v2"),
    ("efficientnet.arch", "efficientnet_b0"),
    ("regnet.arch", "regnet_x_400mf"),
    ("regnet.arch", "regnet_x_32gf"),
    ("resnext.arch", "resnext50_32x4d"),
]
ARCHS_DIR = Path(__file__).resolve().parents[2] / "archs"

# --quick: a tiny network with every benchmarked op (a smoke run, seconds on a CPU).
QUICK_ARCH = """
network quick(input = 3x12x12, classes = 10) {
    stem = conv(16, k=3) bn relu
    body = conv(16, k=3, groups=16) bn relu6
           conv(24, k=3, s=2, groups=4) bn relu
           se(6, act=silu)
           conv(24, k=5, s=2, groups=24) bn silu
    head = avgpool flatten linear(classes)
}
"""


class BnShape(NamedTuple):
    networks: str
    c: int
    h: int
    w: int
    act: str
    residual: bool  # act(bn(x) + residual): the residual add of a block, fused into its last BatchNorm


class DwShape(NamedTuple):
    networks: str
    c: int
    h: int
    w: int
    k: int
    stride: int
    dilation: int
    padding: int
    act: str


class GconvShape(NamedTuple):
    networks: str
    cin: int
    cout: int
    h: int
    w: int
    k: int
    groups: int
    stride: int
    padding: int
    act: str


class SeShape(NamedTuple):
    networks: str
    c: int
    reduced: int
    h: int
    w: int
    act: str
    residual: bool  # relu(se(x) + residual): SE-ResNet's merge after the SE


def network_shapes(networks: Iterable) -> Dict[str, list]:
    """The layer shapes of `networks` (pycnn.ir.NetworkIR) that the fused backend runs on each op, per op,
    deduplicated in order of first occurrence; each shape's `networks` names every network it occurs in
    ("a+b"). The passes decide: conv_bn_act's depthwise and grouped convs; every BatchNorm as bn_act (the
    training half of a conv_bn_act too: the pass plan without conv_bn_act), with the residual pass's adds;
    every SE."""
    from pycnn import passes

    found: Dict[str, Dict[tuple, List[str]]] = {"bn_act": {}, "dwconv": {}, "gconv": {}, "se": {}}

    def add(op, key, name):
        nets = found[op].setdefault(key, [])
        if name not in nets:
            nets.append(name)

    for net in networks:
        for node in passes.fused_nodes(passes.run(net, disable=["conv_bn_act"])):
            (c, h, w), a = node.in_shape, node.attrs
            if node.kind == "bn_act":
                add("bn_act", (c, h, w, a["act"] or "none", bool(a.get("residual"))), net.name)
            elif node.kind == "se":
                add("se", (c, node.layers[0].attrs["reduced"], h, w, a["act"], bool(a.get("residual"))), net.name)
        for node in passes.fused_nodes(passes.run(net, disable=["mbconv"])):  # the per-layer ops
            if node.kind != "conv_bn_act" or node.attrs["conv"] == "dense":
                continue
            (c, h, w), conv, act = node.in_shape, node.layers[0].attrs, node.attrs["act"] or "none"
            k, s, d, p = conv["k"][0], conv["s"][0], conv["d"][0], conv["p"][0]
            if conv["p"][0] != conv["p"][1] or conv["s"][0] != conv["s"][1]:
                continue
            if node.attrs["conv"] == "depthwise":
                add("dwconv", (c, h, w, k, s, d, p, act), net.name)
            else:
                add("gconv", (c, conv["out"], h, w, k, conv["groups"], s, p, act), net.name)
    types = {"bn_act": BnShape, "dwconv": DwShape, "gconv": GconvShape, "se": SeShape}
    return {op: [types[op]("+".join(nets), *key) for key, nets in keys.items()] for op, keys in found.items()}


def parse_network_specs(archs: Optional[Sequence[str]], networks: Optional[Sequence[str]]) -> List[Tuple[str, Optional[str]]]:
    """(file, network) pairs from --arch FILE[:NETWORK] ... and --network NAME ...: a file without
    `:NETWORK` gets every --network name (none: the file's first network). No --arch: DEFAULT_NETWORKS
    (--network then picks among them)."""
    if not archs:
        specs = [(str(ARCHS_DIR / f), n) for f, n in DEFAULT_NETWORKS]
        if networks:
            specs = [s for s in specs if s[1] in networks]
            missing = set(networks) - {n for _, n in specs}
            if missing:
                raise SystemExit(f"--network {', '.join(sorted(missing))}: not a default network "
                                 f"({', '.join(n for _, n in DEFAULT_NETWORKS)}); give its file with --arch")
        return specs
    specs = []
    for arch in archs:
        path, name = arch, None
        if not Path(arch).exists() and ":" in arch:
            path, _, name = arch.rpartition(":")
        specs += [(path, name)] if name or not networks else [(path, n) for n in networks]
    return specs


def load_shapes(specs: Sequence[Tuple[str, Optional[str]]], overrides: Optional[dict] = None) -> Dict[str, list]:
    """network_shapes of the (file or .arch text, network) pairs, parsed with pycnn.parse (with `overrides`:
    network parameters set in every network, e.g. input)."""
    return network_shapes(pycnn.parse(source, name, **(overrides or {})) for source, name in specs)


# ------------------------------------------------------------------------------------ timing one case

def _timed(ours, eager, inputs, grad, mode: str, device: torch.device, repeats: int, with_compile: bool,
           warmup: int = 3, folded=None):
    """Times ours(*inputs) against eager(*inputs) and, with_compile, torch.compile(eager) (compiled afresh
    for this case, dynamic=False), and `folded` (the conv with the BatchNorm folded in, as the dispatch's
    "folded" candidate runs it in eval) where given, interleaved: `forward` under no_grad, `forward+backward` as
    f(*inputs).backward(grad). Returns (timings, row fields)."""
    fns = {"pycnn": ours, "eager": eager}
    if device.type == "cpu" and _CPU_ISAS:
        # One pycnn candidate per CPU kernel variant, interleaved with the others; "pycnn" is the last.
        fns = {("pycnn" if v == _CPU_ISAS[-1] else f"pycnn@{v}"): _with_cpu_isa(ours, v) for v in _CPU_ISAS}
        fns["eager"] = eager
    if with_compile:
        torch._dynamo.reset()  # a fresh compilation per case: no recompile limit, no dynamic shapes
        fns["compile"] = torch.compile(eager, dynamic=False, backend=compile_backend())
    if folded is not None:
        fns["folded"] = folded

    def make(f):
        if mode == "forward":
            def run():
                with torch.no_grad():
                    f(*inputs)
        else:
            def run():
                f(*inputs).backward(grad)
        return run

    runs = {name: make(f) for name, f in fns.items()}
    fields = {}
    if with_compile:
        started = time.perf_counter()
        runs["compile"]()  # compiles
        if device.type == "cuda":
            torch.cuda.synchronize()
        fields["compile_s"] = time.perf_counter() - started
    t = compare(runs, device, repeats=repeats, warmup=warmup)
    fields.update(pycnn_ms=t["pycnn"].median_s * 1e3, eager_ms=t["eager"].median_s * 1e3,
                  speedup=t["eager"].median_s / t["pycnn"].median_s)
    if "pycnn" in fns and len(_CPU_ISAS) > 1 and device.type == "cpu":
        for v in _CPU_ISAS:
            tv = t["pycnn" if v == _CPU_ISAS[-1] else f"pycnn@{v}"]
            fields[f"pycnn_ms_{v}"] = tv.median_s * 1e3
            fields[f"speedup_{v}"] = t["eager"].median_s / tv.median_s
    if with_compile:
        fields.update(compile_ms=t["compile"].median_s * 1e3,
                      speedup_vs_compile=t["compile"].median_s / t["pycnn"].median_s)
    if folded is not None:
        fields.update(folded_ms=t["folded"].median_s * 1e3,
                      speedup_vs_folded=t["folded"].median_s / t["pycnn"].median_s)
    return t, fields


# The CPU kernel variants (pycnn._C._set_cpu_isa) that run() times side by side; empty: the one that runs.
_CPU_ISAS: Tuple[str, ...] = ()


def _with_cpu_isa(f, variant: str):
    from pycnn import _C

    def run(*args):
        _C._set_cpu_isa(variant)
        return f(*args)
    return run


def compile_backend() -> str:
    """torch.compile's backend for --compile: inductor, or $PYCNN_BENCH_COMPILE_BACKEND (the tests use
    "eager", which traces with dynamo but generates no code, to stay fast)."""
    return os.environ.get("PYCNN_BENCH_COMPILE_BACKEND", "inductor")


LAYOUTS = (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last))


EAGER_ACT = {"none": lambda z: z, **ACT_FNS}
ACT_MODULE = {"none": nn.Identity, **{a.name: getattr(nn, a.module) for a in ACTIVATIONS.values()}}


def _prepare(device: torch.device) -> Optional[float]:
    """cudnn.benchmark for the baseline (docs/design.md section 7); the measured copy bandwidth on CUDA (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.backends.cudnn.benchmark = True
    return peak_bandwidth_gbs(device)


def _modes():
    return ("forward", "forward+backward")


def _add_row(rows, row, t, traffic_bytes, peak: Optional[float]) -> None:
    """Prints the row and appends it to rows; with a known peak bandwidth (CUDA) the row also gets the pycnn
    op's GB/s for traffic_bytes moved per call and its share of the peak."""
    if peak:
        gbs = traffic_bytes / t["pycnn"].median_s / 1e9
        row.update(gbs=gbs, peak_pct=100 * gbs / peak)
    rows.append(row)
    print_row(row)


def _bench_same_shape_op(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes, with_compile: bool,
                         layouts, make, label, passes):
    """The loop of bench_bn_act and bench_se: ours(x, residual) against eager(x, residual), both giving x's
    shape, the residual (when the shape has one) and the gradient random tensors of x's shape.
    make(s) -> (ours, eager) for one layer shape; label(batch, s): the row's shape column; passes(residual,
    mode): how many tensors of x's size the fused op reads and writes at the least (for GB/s on CUDA)."""
    peak = _prepare(device)
    rows = []
    for batch in batches:
        for s in shapes:
            shape = (batch, s.c, s.h, s.w)
            ours, eager_op = make(s)
            for layout, fmt in layouts:
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                r = torch.randn_like(x) if s.residual else None
                grad = torch.randn_like(x)

                def run_ours(x, r=r, ours=ours):
                    return ours(x, r)

                def eager(x, r=r, eager_op=eager_op):
                    return eager_op(x, r)

                for mode in _modes():
                    inputs = (x,) if mode == "forward" else (x.detach().requires_grad_(),)
                    t, fields = _timed(run_ours, eager, inputs, grad, mode, device, repeats, with_compile)
                    row = dict(networks=s.networks, shape=label(batch, s),
                               act=s.act + ("+res" if s.residual else ""), layout=layout, mode=mode, **fields)
                    _add_row(rows, row, t, passes(s.residual, mode) * x.numel() * x.element_size(), peak)
    return rows


def bench_bn_act(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes: Sequence[BnShape],
                 with_compile: bool = False, layouts=LAYOUTS):
    """BatchNormAct2d (training mode: batch statistics) against nn.BatchNorm2d [+ residual] + activation."""

    def make(s):
        ours = BatchNormAct2d(s.c, act=s.act).to(device=device, dtype=dtype)
        ref = nn.BatchNorm2d(s.c).to(device=device, dtype=dtype)

        def eager(x, r, act=EAGER_ACT[s.act]):
            y = ref(x)
            return act(y + r if r is not None else y)
        return ours, eager

    def passes(residual, mode):
        # Minimum traffic: forward reads x twice (stats, apply) [and the residual] and writes y;
        # backward reads x and dy twice and writes dx [and dresidual].
        fwd = 3 + residual
        return fwd if mode == "forward" else fwd + 5 + residual

    return _bench_same_shape_op(device, dtype, repeats, batches, shapes, with_compile, layouts, make,
                                lambda batch, s: f"{batch}x{s.c}x{s.h}x{s.w}", passes)


def eager_se(x, fc1, fc2, act, residual=None):
    """The eager composition SqueezeExcite replaces (torchvision.ops.SqueezeExcitation, then the merge)."""
    s = F.adaptive_avg_pool2d(x, 1)
    s = torch.sigmoid(fc2(EAGER_ACT[act](fc1(s))))
    y = x * s
    return F.relu(y + residual) if residual is not None else y


def bench_se(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes: Sequence[SeShape],
             with_compile: bool = False, layouts=LAYOUTS):
    """SqueezeExcite (one fused op) against pool, fc1, act, fc2, sigmoid, scale [+ residual, relu]."""

    def make(s):
        ours = SqueezeExcite(s.c, s.reduced, act=s.act, post_act="relu" if s.residual else "none").to(
            device=device, dtype=dtype)
        fc1, fc2 = ours.fc1, ours.fc2  # the same parameters, run by nn.Conv2d
        return ours, lambda x, r: eager_se(x, fc1, fc2, s.act, r)

    def passes(residual, mode):
        # Minimum traffic: forward reads x twice (pool, scale) [+ residual] and writes y;
        # backward reads x and dy twice [+ residual twice] and writes dx [+ dresidual].
        fwd = 3 + (1 if residual else 0)
        return fwd if mode == "forward" else fwd + 5 + (3 if residual else 0)

    return _bench_same_shape_op(device, dtype, repeats, batches, shapes, with_compile, layouts, make,
                                lambda batch, s: f"{batch}x{s.c}x{s.h}x{s.w}/{s.reduced}", passes)


def bench_dwconv(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes: Sequence[DwShape],
                 with_compile: bool = False, layouts=LAYOUTS):
    """DepthwiseConvBNAct2d against nn.Conv2d(groups=C) + nn.BatchNorm2d + activation. forward: eval
    (pycnn: one fused kernel, BN folded); forward+backward: training (batch statistics)."""
    peak = _prepare(device)
    rows = []
    for batch in batches:
        for s in shapes:
            shape = (batch, s.c, s.h, s.w)
            oh, ow = ((n + 2 * s.padding - s.dilation * (s.k - 1) - 1) // s.stride + 1 for n in (s.h, s.w))
            ours = DepthwiseConvBNAct2d(s.c, s.k, stride=s.stride, padding=s.padding, dilation=s.dilation,
                                        act=s.act).to(device=device, dtype=dtype)
            ref = nn.Sequential(nn.Conv2d(s.c, s.c, s.k, s.stride, s.padding, s.dilation, groups=s.c, bias=False),
                                nn.BatchNorm2d(s.c), ACT_MODULE[s.act]()).to(device=device, dtype=dtype)
            ref.load_state_dict({k_.replace("conv.", "0.").replace("bn.", "1."): v
                                 for k_, v in ours.state_dict().items()})
            for layout, fmt in layouts:
                ours.to(memory_format=fmt)
                ref.to(memory_format=fmt)
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                grad = torch.randn(batch, s.c, oh, ow, device=device, dtype=dtype).contiguous(memory_format=fmt)
                for mode in _modes():
                    train = mode != "forward"
                    ours.train(train)
                    ref.train(train)
                    inputs = (x.detach().requires_grad_(),) if train else (x,)
                    t, fields = _timed(ours, ref, inputs, grad, mode, device, repeats, with_compile)
                    row = dict(networks=s.networks, shape=f"{batch}x{s.c}x{s.h}x{s.w} k{s.k}s{s.stride}"
                               + (f"d{s.dilation}" if s.dilation != 1 else ""), act=s.act, layout=layout,
                               mode=mode, **fields)
                    # Minimum traffic of a fused op: forward reads x and writes y; backward also reads
                    # x and dy and writes dx.
                    elems = (x.numel() + grad.numel()) if not train else (3 * x.numel() + 2 * grad.numel())
                    _add_row(rows, row, t, elems * x.element_size(), peak)
    return rows


def bench_gconv(device: torch.device, dtype: torch.dtype, repeats: int, batches, shapes: Sequence[GconvShape],
                with_compile: bool = False, layouts=LAYOUTS):
    """pycnn.gconv (conv + folded-BN scale/bias + activation in one op) against eager
    act(conv2d(x, w, groups) * scale + bias), in NCHW and channels_last, forward (no grad) and
    forward+backward (grads of x, w, scale, bias). Rows also give the ratio of the best runs
    (robust to preemption on a loaded machine) and pycnn's GFLOP/s (TFLOP/s on CUDA) of its best run."""
    from pycnn import ops

    peak = _prepare(device)
    rows = []
    for batch in batches:
        for s in shapes:
            shape = (batch, s.cin, s.h, s.w)
            oh, ow = ((n + 2 * s.padding - s.k) // s.stride + 1 for n in (s.h, s.w))
            flops = 2 * batch * s.cout * oh * ow * (s.cin // s.groups) * s.k * s.k
            for layout, fmt in layouts:
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                w = torch.randn(s.cout, s.cin // s.groups, s.k, s.k, device=device, dtype=dtype) * 0.1
                scale = torch.rand(s.cout, device=device) + 0.5
                bias = torch.randn(s.cout, device=device) * 0.1
                grad = torch.randn(batch, s.cout, oh, ow, device=device, dtype=dtype).contiguous(memory_format=fmt)

                def ours(x, w, scale, bias, s=s):
                    return ops.gconv(x, w, scale, bias, stride=s.stride, padding=s.padding, groups=s.groups,
                                     act=s.act)

                def eager(x, w, scale, bias, s=s):
                    z = F.conv2d(x, w, None, s.stride, s.padding, 1, s.groups)
                    return EAGER_ACT[s.act](z * scale.to(z.dtype).view(1, -1, 1, 1) + bias.to(z.dtype).view(1, -1, 1, 1))

                for mode in _modes():
                    inputs = (x, w, scale, bias)
                    if mode != "forward":
                        inputs = tuple(v.detach().requires_grad_() for v in inputs)
                    folded = _onednn_folded(x, w, scale, bias, s) if mode == "forward" else None
                    t, fields = _timed(keeping_layouts(ours) if mode == "forward" else ours, eager, inputs, grad,
                                       mode, device, repeats, with_compile, warmup=2, folded=folded)
                    total_flops = flops * (1 if mode == "forward" else 3)
                    row = dict(networks=s.networks, shape=f"{batch}x{s.cin}x{s.h}x{s.w} g{s.groups} k{s.k}s{s.stride}"
                               + (f" ->{s.cout}" if s.cout != s.cin else ""), act=s.act, layout=layout, mode=mode,
                               **fields, speedup_best=t["eager"].min_s / t["pycnn"].min_s,
                               gflops=total_flops / t["pycnn"].min_s / 1e9)
                    # Minimum traffic: forward reads x and w, writes y; backward also reads dy, x and
                    # the saved conv, writes dx and dw.
                    el = x.element_size()
                    act_bytes = x.numel() * el + grad.numel() * el
                    traffic = act_bytes if mode == "forward" else 3 * act_bytes + 2 * x.numel() * el
                    _add_row(rows, row, t, traffic, peak)
    return rows


def keeping_layouts(fn):
    """fn inside the scope that keeps pycnn's kernels' weight layouts between inference calls, as a network's eval
    runs them (csrc/cpu/weight_forms.h; a direct op call reorders its weight on every call, which no eval does)."""
    from pycnn import _C

    def run(*args):
        with _C._WeightFormsScope():
            return fn(*args)
    return run


def _onednn_folded(x, w, scale, bias, s):
    """The eval alternative the dispatch races pycnn's grouped kernel against ("folded"), run by the code that runs
    it (pycnn.fused.folded_forward on a dense fold): oneDNN's fused convolution with the weights prepacked once
    where it takes the case, else conv2d and the in-place epilogue."""
    from pycnn import fused

    fold = fused.EvalFold()
    fold.weight, fold.bias = fused.fold_into_weights(w, scale, bias)
    fold.packed = {}
    geometry = ((s.stride, s.stride), (s.padding, s.padding), (1, 1), s.groups)
    return lambda x, w, scale, bias: fused.folded_forward(x, fold, w, geometry, "dense", s.act, None)


BENCHES = {"bn_act": bench_bn_act, "dwconv": bench_dwconv, "gconv": bench_gconv, "se": bench_se}


def print_row(row):
    extra = f"  {row['gbs']:8.1f} GB/s {row['peak_pct']:5.1f}% of peak" if "gbs" in row else ""
    if "compile_ms" in row:
        extra += f"  compile {row['compile_ms']:8.3f} ms x{row['speedup_vs_compile']:5.2f} (compiled in {row['compile_s']:.1f} s)"
    if "speedup_best" in row:
        extra += f"  best-of x{row['speedup_best']:5.2f}"
    if "folded_ms" in row:
        extra += f"  folded {row['folded_ms']:8.3f} ms x{row['speedup_vs_folded']:5.2f}"
    if "gflops" in row:
        extra += (f"  {row['gflops'] / 1e3:7.2f} TFLOP/s" if "gbs" in row else f"  {row['gflops']:6.1f} GFLOP/s")
    print(f"{row['shape']:>24} {row['act']:>10} {row['layout']:>13} {row['mode']:>16}  "
          f"pycnn {row['pycnn_ms']:8.3f} ms  eager {row['eager_ms']:8.3f} ms  x{row['speedup']:5.2f}{extra}",
          flush=True)


def geomean(values) -> float:
    values = list(values)
    return torch.tensor(values, dtype=torch.float64).log().mean().exp().item() if values else float("nan")


def print_summary(rows):
    if not rows:
        return
    print(f"geometric mean speedup over {len(rows)} cases: x{geomean(r['speedup'] for r in rows):.2f} "
          f"(min x{min(r['speedup'] for r in rows):.2f})")
    if "speedup_vs_compile" in rows[0]:
        print(f"geometric mean speedup over torch.compile: x{geomean(r['speedup_vs_compile'] for r in rows):.2f}")
    if "speedup_best" in rows[0]:
        print(f"geometric mean speedup of the best runs: x{geomean(r['speedup_best'] for r in rows):.2f}")
    folded = [r["speedup_vs_folded"] for r in rows if "speedup_vs_folded" in r]
    if folded:
        print(f"geometric mean speedup over the BatchNorm folded into a dense grouped conv (the dispatch's 'folded': "
              f"oneDNN's, or conv2d below pycnn.fused.ONEDNN_MIN_MACS; {len(folded)} forward cases): "
              f"x{geomean(folded):.2f} (min x{min(folded):.2f})")


# ------------------------------------------------------------------------------------ command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `pycnn bench ops` and `python -m pycnn.bench.ops`."""
    parser.add_argument("--arch", nargs="+", action="extend", metavar="FILE[:NETWORK]",
                        help="benchmark the layer shapes of these .arch files (repeatable); FILE:NETWORK picks a "
                             "network, otherwise --network or the file's first network. Default: MobileNetV2, "
                             "EfficientNet-B0, RegNetX-400MF, RegNetX-32GF, ResNeXt-50 32x4d (archs/)")
    parser.add_argument("--network", nargs="+", action="extend", metavar="NAME",
                        help="networks of the --arch files (each file without :NETWORK gets every name); without "
                             "--arch, a subset of the default networks")
    parser.add_argument("--device", type=argtypes.device, default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch", type=argtypes.positive_int, nargs="+", default=None,
                        help="batch sizes (default 8 on the CPU, 64 on CUDA; 2 with --quick)")
    parser.add_argument("--repeats", type=argtypes.positive_int, default=None,
                        help="timed rounds per case, interleaved (default 15; 3 with --quick)")
    parser.add_argument("--threads", type=argtypes.positive_int, default=None,
                        help="CPU threads (torch.set_num_threads; default torch's); 1 gives steadier figures on a "
                             "shared machine. Recorded in the JSON's environment")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="also time torch.compile (inductor) of the eager composition, compiled afresh per shape, "
                             "layout and mode (dynamic=False); rows get compile_ms, speedup_vs_compile and compile_s "
                             "(the compile time). Off by default: each of the ~580 cases of the default networks "
                             "compiles for 4-7 s on a 2-core CPU (about +50 min), seconds on CUDA as well")
    parser.add_argument("--layout", choices=["nchw", "channels_last", "both"], default="both",
                        help="memory layout(s) of the cases (default both)")
    parser.add_argument("--max-shapes", type=argtypes.positive_int, default=None, metavar="N",
                        help="at most N shapes per op, spread evenly over the networks' layers (a compact run)")
    parser.add_argument("--cpu-isa", nargs="+", default=None, choices=["baseline", "avx2", "avx512"],
                        metavar="VARIANT",
                        help="CPU kernel variants to time side by side (baseline, avx2, avx512; those the CPU "
                             "lacks run its best): rows get pycnn_ms_<variant> and speedup_<variant>, and "
                             "pycnn_ms/speedup are the last one's. Default: the variant that runs "
                             "($PYCNN_CPU_ISA caps it)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 2, 3 repeats, and without --arch a tiny built-in network")


def settings(args) -> dict:
    """device, batches, repeats, with_compile and the shapes per op from parsed add_arguments options;
    applies --threads."""
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick and not args.arch:
        specs = [(QUICK_ARCH, None)]
    else:
        specs = parse_network_specs(args.arch, args.network)
    shapes = load_shapes(specs, getattr(args, "overrides", None))
    if args.max_shapes:
        shapes = {op: spread(found, args.max_shapes) for op, found in shapes.items()}
    layouts = tuple((name, fmt) for name, fmt in LAYOUTS if args.layout in (name, "both"))
    return dict(device=device, shapes=shapes, layouts=layouts,
                batches=args.batch or ([2] if args.quick else [64] if device.type == "cuda" else [8]),
                repeats=args.repeats or (3 if args.quick else 15),
                with_compile=args.compile, cpu_isas=tuple(getattr(args, "cpu_isa", None) or ()))


def spread(items: Sequence, n: int) -> list:
    """At most `n` of `items`, evenly spaced from first to last (a network's early, middle and late layers)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def run(op: str, device: torch.device, dtype: Optional[torch.dtype], repeats: int, batches, shapes: Dict[str, list],
        with_compile: bool, layouts=LAYOUTS, cpu_isas: Sequence[str] = ()) -> List[dict]:
    """Benchmarks `op` over its shapes (from load_shapes / network_shapes); prints every row and a summary.
    On the CPU, cpu_isas: the kernel variants to time side by side (rows record the variant as cpu_isa)."""
    global _CPU_ISAS
    from pycnn import _C
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    info = pycnn.build_info()
    # What each requested variant runs as on this CPU (avx512 on an AVX2 machine runs avx2), once each.
    variants = tuple(dict.fromkeys(_C._set_cpu_isa(v) for v in cpu_isas)) if device.type == "cpu" else ()
    _C._set_cpu_isa("avx512")  # back to the default ($PYCNN_CPU_ISA's cap)
    print(f"{op}: pycnn {pycnn.__version__} on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, {torch.get_num_threads()} "
          f"threads), torch {torch.__version__}, {dtype}, CUDA kernels: {info['cuda']}, {len(shapes[op])} shapes")
    if device.type == "cpu":
        print(f"CPU kernels: {', '.join(variants) if variants else info['cpu_isa']} (best on this CPU: "
              f"{info['cpu_isa_best']}; flags {' '.join(info['cpu_flags']) or 'unknown'})")
    print("speedup = eager median / pycnn median, measured interleaved in this run"
          + ("; with torch.compile of the eager composition" if with_compile else ""))
    _CPU_ISAS = variants
    try:
        rows = BENCHES[op](device, dtype, repeats, batches, shapes[op], with_compile, layouts)
    finally:
        _CPU_ISAS = ()
        _C._set_cpu_isa("avx512")
    if device.type == "cpu":
        for r in rows:
            r["cpu_isa"] = variants[-1] if variants else info["cpu_isa"]
    print_summary(rows)
    for v in (variants if len(variants) > 1 else ()):
        key = f"speedup_{v}"
        print(f"  {v}: geometric mean speedup x{geomean(r[key] for r in rows if key in r):.2f}, "
              f"faster than eager on {sum(r[key] > 1 for r in rows if key in r)} of {len(rows)} cases")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pycnn.bench.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("op", choices=sorted(BENCHES))
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="default float16 on CUDA, float32 on the CPU")
    add_arguments(parser)
    args = parser.parse_args(argv)
    s = settings(args)
    return run(args.op, s["device"], getattr(torch, args.dtype) if args.dtype else None, s["repeats"], s["batches"],
               s["shapes"], s["with_compile"], s["layouts"], s["cpu_isas"])


if __name__ == "__main__":
    main(sys.argv[1:])
