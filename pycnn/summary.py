"""`pycnn.summary`: per layer name, operation, output shape, parameters and FLOPs (multiply-adds, pycls's
convention), with totals. Works on a path, .arch text, an IR network or a compiled model; for a model also
what runs each layer (pycnn's kernel, PyTorch, or the choice still to be measured: pycnn.dispatch)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import ir
from .opspec import OPS


@dataclass
class Summary:
    network: str
    input_shape: Tuple[int, ...]
    rows: List[Tuple[str, str, Tuple[int, ...], int, int]]  # name, op, output shape, params, flops
    total_params: int
    total_flops: int
    kernels: Optional[Dict[str, str]] = None  # of a compiled model: {layer name: what runs it}
    ir: Optional[ir.NetworkIR] = None  # the network summarized (for the grouped table)

    def table(self, depth: int = 2) -> str:
        """The readable table: rows down to `depth` (1 parts, 2 blocks, 3 and more layers inside blocks),
        identical consecutive rows grouped (`s2.b2-b6  5 x xblock`), params and FLOPs in K/M/G, activation
        sizes per sample (float32), kernels in words; exact totals at the end. str(summary) lists every layer."""
        return format_grouped(self, depth)

    NUMERIC = (3, 4)  # the right-aligned columns of the full table

    def full_table(self):
        """(title, header, rows, total) of the table of every layer, as text cells: str() draws it as text,
        the command line with rich on a terminal."""
        header = ("layer", "op", "output", "params", "FLOPs") + (("kernel",) if self.kernels else ())
        body = [(n, op, ir.fmt_shape(s), f"{p:,}", f"{f:,}") + ((self.kernels.get(n, "-"),) if self.kernels else ())
                for n, op, s, p, f in self.rows]
        title = f"network {self.network}, input {ir.fmt_shape(self.input_shape)}"
        total = (f"total: {self.total_params:,} parameters, {self.total_flops:,} FLOPs (multiply-adds) = "
                 f"{self.total_flops / 1e9:.3f} GFLOPs")
        return title, header, body, total

    def __str__(self) -> str:
        title, header, body, total = self.full_table()
        cols = len(header)
        widths = [max(len(r[i]) for r in [header] + body) for i in range(cols)]
        line = lambda r: "  ".join(r[i].rjust(widths[i]) if i in self.NUMERIC else r[i].ljust(widths[i])
                                   for i in range(cols)).rstrip()
        out = [title, line(header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in body]
        out.append("  ".join("-" * w for w in widths))
        out.append(total)
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"Summary({self.network}: {self.total_params:,} params, {self.total_flops / 1e9:.3f} GFLOPs, "
                f"{len(self.rows)} layers)")


def _op_label(layers: List[ir.Layer]) -> str:
    """A module's label: its layer's, then those of the layers without a module that run with it ("bn+relu")."""
    return "+".join(OPS[layer.op].summary_label(layer.attrs) for layer in layers)


def _groups(node, prefix: str) -> List[Tuple[str, List[ir.Layer]]]:
    return list(ir.iter_layer_groups(node, prefix))


def summarize(network: ir.NetworkIR) -> Summary:
    rows = [(name, _op_label(group), group[0].out_shape, group[0].params, group[0].flops)
            for part in network.parts for name, group in _groups(part, part.name)]
    return Summary(network.name, network.input_shape, rows, sum(r[3] for r in rows), sum(r[4] for r in rows),
                   ir=network)


def summary(model_or_source, network: Optional[str] = None, *, show: bool = True, **overrides) -> Summary:
    """Print (unless show=False) and return the per-layer summary of a model, an IR network, a path or text."""
    kernels = None
    if isinstance(model_or_source, ir.NetworkIR):
        net = model_or_source
    elif hasattr(model_or_source, "ir") and isinstance(getattr(model_or_source, "ir"), ir.NetworkIR):
        net, kernels = model_or_source.ir, model_or_source.kernels()
    else:
        from .dsl.elaborate import elaborate
        net = elaborate(model_or_source, network, **overrides)
    s = summarize(net)
    s.kernels = kernels
    if show:
        print(s)
    return s


# ------------------------------------------------------------------------------------ the grouped table

def human(n: float) -> str:
    """1234 -> 1.2 K, 5_495_978 -> 5.50 M, 412_000_000_000 -> 412 G: three significant digits."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{n:g}"


def human_bytes(n: float) -> str:
    for scale, unit in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{n:g} B"


AUTO = " (auto)"  # the choice is measured on first run (pycnn.dispatch)
_KERNEL_WORDS = [("pycnn::dwconv", "pycnn dwconv"), ("pycnn::gconv", "pycnn gconv"),
                 ("aten::conv2d+folded BN", "PyTorch conv (BN folded)"),
                 ("aten::conv2d+pycnn::bn_act", "PyTorch conv + pycnn BN+act"),
                 ("aten::mm+pycnn::bn_act", "1x1 conv as matrix products + pycnn BN+act"),
                 ("pycnn::bn_act", "pycnn BN+act"),
                 ("pycnn::se", "pycnn SE"), ("+residual", " + residual")]


def kernel_words(label: str) -> str:
    """A kernel label of pycnn.report.kernel_table in words: "pycnn::gconv" -> "pycnn gconv", "aten" ->
    "PyTorch", "auto: pycnn::gconv | aten" -> "pycnn gconv or PyTorch (measured on first run)"."""
    if label.startswith("(fused into "):
        return "fused into " + label[len("(fused into "):-1].rsplit(".", 1)[-1]
    if label.startswith("auto: "):
        ours, _, _ = label[len("auto: "):].partition(" | ")
        return f"{kernel_words(ours)} | PyTorch{AUTO}"
    if label.startswith("aten ("):  # aten (Conv2d+relu)
        return "PyTorch " + label[len("aten ("):-1]
    if label == "aten":
        return "PyTorch"
    for raw, words in _KERNEL_WORDS:
        label = label.replace(raw, words)
    return label


@dataclass
class Row:
    name: str
    op: str
    shape: Tuple[int, ...]
    params: int
    flops: int
    activations: int  # values written per sample by the layers of the row
    kernel: str
    count: int = 1


def _children(node, prefix: str):
    """(name, node, tail) one level down: a sequence's children; a block's pre, branch and post nodes. The
    layers without a module (pycnn.ir.Layer.own_module) are the `tail` of the layer before them, in its row."""
    join = lambda p, n: f"{p}.{n}" if p else n
    if isinstance(node, ir.Sequence):
        out = [(join(prefix, c.name), c) for c in node.children]
    elif isinstance(node, ir.BranchBlock):
        out = [(join(prefix, c.name), c) for c in node.pre]
        for br in node.branches:
            base = join(prefix, br.name) if br.nested else prefix
            out += [(join(base, c.name), c) for c in br.children]
        out += [(join(prefix, c.name), c) for c in node.post]
    else:
        return []
    rows = []
    for n, c in out:
        if isinstance(c, ir.Layer) and not c.own_module:
            rows[-1][2].append(c)
        else:
            rows.append((n, c, []))
    return rows


def _label(node, tail=()) -> str:
    if isinstance(node, ir.Layer):
        return _op_label([node, *tail])
    if isinstance(node, ir.BranchBlock):
        return node.block
    if getattr(node, "block", None) and node.kind == "block":
        return node.block
    kids = [c for _, c, _ in _children(node, "")]
    blocks = [c.block for c in kids if getattr(c, "block", None)]
    if kids and len(blocks) == len(kids):
        names = list(dict.fromkeys(blocks))
        return f"{node.kind}: {len(kids)} x {names[0]}" if len(names) == 1 else f"{node.kind}: {len(kids)} blocks"
    return f"{node.kind}: {len(kids)} layers" if node.kind in ("part", "stage") else (node.block or node.kind)


def _words(names, kernels: Dict[str, str]) -> str:
    """What runs a row: one layer's kernel in words; for a block or part, its layers' kernels (pycnn's side
    of automatic choices, "(auto)" once at the end)."""
    if len(names) == 1:
        return kernel_words(kernels[names[0]]) if names[0] in kernels else ("-" if kernels else "")
    words: List[str] = []
    auto = False
    for n in names:
        w = kernel_words(kernels[n]) if n in kernels else ""
        if w.endswith(AUTO):
            auto, w = True, w[:-len(AUTO)].rpartition(" | ")[0]
        w = w.replace(" + residual", "")
        if w and not w.startswith("fused into") and w not in words:
            words.append(w)
    return (", ".join(words) + (AUTO if auto else "")) or ("-" if kernels else "")


def _signature(node, name: str, kernels: Dict[str, str], tail=()):
    """What makes two sibling subtrees identical rows: every layer's relative name, operation, shapes,
    params, FLOPs and kernel."""
    groups = [(name, [node, *tail])] if isinstance(node, ir.Layer) else _groups(node, name)
    return tuple((n[len(name):], _op_label(g), g[0].in_shape, g[0].out_shape, g[0].params, g[0].flops,
                  kernel_words(kernels[n]) if n in kernels else None) for n, g in groups)


def _rows(node, name: str, depth: int, level: int, kernels: Dict[str, str], tail=()) -> List[Row]:
    """Rows of `node` down to `depth`; identical consecutive children are one group, expanded once."""
    if isinstance(node, ir.Layer) or level >= depth:
        layers = list(ir.iter_layers(node, name))
        return [Row(name, _label(node, tail), node.out_shape, sum(l.params for _, l in layers),
                    sum(l.flops for _, l in layers), sum(math.prod(l.out_shape) for _, l in layers),
                    _words([n for n, _ in layers], kernels))]
    groups: List[list] = []
    for child_name, child, tail in _children(node, name):
        sig = _signature(child, child_name, kernels, tail)
        if groups and groups[-1][0] == sig and groups[-1][1][-1][0].rpartition(".")[0] == child_name.rpartition(".")[0]:
            groups[-1][1].append((child_name, child, tail))
        else:
            groups.append([sig, [(child_name, child, tail)]])
    rows: List[Row] = []
    for _, members in groups:
        (first_name, first, first_tail), n = members[0], len(members)
        label = _group_name(first_name, members[-1][0]) if n > 1 else first_name
        for r in _rows(first, first_name, depth, level + 1, kernels, first_tail):
            r.name = label + r.name[len(first_name):]
            r.count, r.params, r.flops, r.activations = r.count * n, r.params * n, r.flops * n, r.activations * n
            rows.append(r)
    return rows


def _group_name(first: str, last: str) -> str:
    head, _, a = first.rpartition(".")
    head2, _, b = last.rpartition(".")
    return f"{first}-{b}" if head == head2 else f"{first}-{last}"


def grouped_rows(network: ir.NetworkIR, kernels: Optional[Dict[str, str]] = None, depth: int = 2) -> List[Row]:
    """The rows down to `depth` (1: parts, 2: their children, ...); identical consecutive siblings (same
    layers, shapes, params, FLOPs and kernels) are one row, or one expanded subtree, with their count and sums."""
    rows: List[Row] = []
    for part in network.parts:
        rows += _rows(part, part.name, depth, 1, kernels or {})
    return rows


def format_grouped(s: Summary, depth: int = 2) -> str:
    if s.ir is None:
        raise ValueError("this Summary has no network to group (made without pycnn.summary/summarize)")
    rows = grouped_rows(s.ir, s.kernels, depth)
    header = ("layer", "op", "output", "params", "FLOPs", "act/sample") + (("kernel",) if s.kernels else ())
    body = [(r.name, (f"{r.count} x " if r.count > 1 else "") + r.op, ir.fmt_shape(r.shape), human(r.params),
             human(r.flops), human_bytes(4 * r.activations)) + ((r.kernel,) if s.kernels else ()) for r in rows]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    numeric = (3, 4, 5)
    line = lambda row: "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                                 for i, (v, w) in enumerate(zip(row, widths))).rstrip()
    acts = sum(math.prod(layer.out_shape) for _, layer in s.ir.layers())
    out = [f"network {s.network}, input {ir.fmt_shape(s.input_shape)}", line(header)]
    out += [line(row) for row in body]
    out.append(f"total: {s.total_params:,} parameters ({human(s.total_params)}), {s.total_flops:,} FLOPs "
               f"(multiply-adds, {human(s.total_flops)}); activations {human_bytes(4 * acts)} per sample "
               f"(float32, every layer's output)")
    if any(r.kernel.endswith(AUTO) for r in rows):
        out.append("(auto): pycnn's kernel or PyTorch's, whichever is faster, measured per shape on the first run")
    return "\n".join(out)


def plot(s: Summary, path) -> None:
    """A PNG bar chart of FLOPs and parameters per part (stem, stages, head) of the summarized network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if s.ir is None:
        raise ValueError("this Summary has no network to plot")
    names = [p.name for p in s.ir.parts]
    flops = [sum(l.flops for _, l in ir.iter_layers(p, p.name)) for p in s.ir.parts]
    params = [sum(l.params for _, l in ir.iter_layers(p, p.name)) for p in s.ir.parts]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.6 * len(names) + 4), 4))
    for ax, values, title in ((axes[0], flops, "FLOPs (multiply-adds)"), (axes[1], params, "parameters")):
        bars = ax.bar(names, values, color="tab:blue" if ax is axes[0] else "tab:orange")
        ax.set_title(f"{title}: {human(sum(values))}")
        ax.tick_params(axis="x", labelrotation=45)
        for bar, v in zip(bars, values):
            ax.annotate(human(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    fig.suptitle(f"{s.network}, input {ir.fmt_shape(s.input_shape)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    from .dsl.literal import parse_assignment
    try:
        overrides = dict(parse_assignment(item) for item in args.set)
        summary(args.path, args.network, **overrides)
    except ArchError as e:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
