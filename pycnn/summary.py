"""`pycnn.summary`: per layer name, operation, output shape, parameters and FLOPs (multiply-adds, pycls's
convention), with totals. Works on a path, .arch text, an IR network or a compiled model; for a model also
what runs each layer (pycnn's kernel, PyTorch, or the choice still to be measured: pycnn.dispatch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import ir


@dataclass
class Summary:
    network: str
    input_shape: Tuple[int, ...]
    rows: List[Tuple[str, str, Tuple[int, ...], int, int]]  # name, op, output shape, params, flops
    total_params: int
    total_flops: int
    kernels: Optional[Dict[str, str]] = None  # of a compiled model: {layer name: what runs it}

    def __str__(self) -> str:
        header = ("layer", "op", "output", "params", "FLOPs") + (("kernel",) if self.kernels else ())
        body = [(n, op, ir.fmt_shape(s), f"{p:,}", f"{f:,}") + ((self.kernels.get(n, "-"),) if self.kernels else ())
                for n, op, s, p, f in self.rows]
        cols = len(header)
        widths = [max(len(r[i]) for r in [header] + body) for i in range(cols)]
        line = lambda r: "  ".join(r[i].rjust(widths[i]) if i in (3, 4) else r[i].ljust(widths[i])
                                   for i in range(cols)).rstrip()
        out = [f"network {self.network}, input {ir.fmt_shape(self.input_shape)}", line(header),
               "  ".join("-" * w for w in widths)]
        out += [line(r) for r in body]
        out.append("  ".join("-" * w for w in widths))
        out.append(f"total: {self.total_params:,} parameters, {self.total_flops:,} FLOPs (multiply-adds) = "
                   f"{self.total_flops / 1e9:.3f} GFLOPs")
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"Summary({self.network}: {self.total_params:,} params, {self.total_flops / 1e9:.3f} GFLOPs, "
                f"{len(self.rows)} layers)")


def _op_label(layer: ir.Layer) -> str:
    a = layer.attrs
    if layer.op in ("conv", "wsconv"):
        k = "x".join(map(str, a["k"]))
        s = a["s"][0] if a["s"][0] == a["s"][1] else "x".join(map(str, a["s"]))
        g = f" g{a['groups']}" if a["groups"] > 1 else ""
        return f"{layer.op} {k} s{s}{g}"
    if layer.op == "bn":
        return "bn+" + a["act"] if a.get("act") else "bn"
    if layer.op == "act":
        return a["kind"]
    if layer.op in ("maxpool", "avgpool"):
        return f"{layer.op} {'x'.join(map(str, a['k']))} s{a['s'][0]}"
    return layer.op


def summarize(network: ir.Network) -> Summary:
    rows = [(name, _op_label(layer), layer.out_shape, layer.params, layer.flops) for name, layer in network.layers()]
    return Summary(network.name, network.input_shape, rows, sum(r[3] for r in rows), sum(r[4] for r in rows))


def summary(model_or_source, network: Optional[str] = None, *, show: bool = True, **overrides) -> Summary:
    """Print (unless show=False) and return the per-layer summary of a model, an IR network, a path or text."""
    kernels = None
    if isinstance(model_or_source, ir.Network):
        net = model_or_source
    elif hasattr(model_or_source, "ir") and isinstance(getattr(model_or_source, "ir"), ir.Network):
        net, kernels = model_or_source.ir, model_or_source.kernels()
    else:
        from .dsl.elaborate import elaborate
        net = elaborate(model_or_source, network, **overrides)
    s = summarize(net)
    s.kernels = kernels
    if show:
        print(s)
    return s


def main(argv=None):
    """python -m pycnn.summary PATH [NETWORK] [--set name=value ...]"""
    import argparse
    from .dsl.errors import ArchError
    ap = argparse.ArgumentParser(prog="python -m pycnn.summary", description="Per-layer summary of an .arch network")
    ap.add_argument("path")
    ap.add_argument("network", nargs="?")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a network parameter (numbers, true/false, shapes like 3x160x160)")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = _parse_value(value)
    try:
        summary(args.path, args.network, **overrides)
    except ArchError as e:
        print(e)
        return 1
    return 0


def _parse_value(text: str):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    raise SystemExit(main())
