"""Cells (blocks with named inputs, pycnn.ir.Cell) as modules, and the network that threads their inputs.

A cell's chains are Chains under their names (`left`, `c0_1`, ...); its forward evaluates the nodes in order
and merges the output. A network with a cell that reads earlier outputs runs its parts as one GraphStep, which
keeps every part's and stage block's output under its module path for the cells that read them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from . import ir


def merge(kind: Optional[str], values: List[torch.Tensor]) -> torch.Tensor:
    if kind is None:
        return values[0]
    if kind == "concat":
        return torch.cat(values, dim=1)
    y = values[0]
    for v in values[1:]:
        y = y + v if kind == "add" else y * v
    return y


class CellModule(nn.Module):
    """A cell: its chains as submodules; forward(x, prev, ...) takes its inputs in the order declared."""

    def __init__(self, chains, inputs: Tuple[str, ...], nodes, output):
        super().__init__()
        for name, module in chains:
            self.add_module(name, module)
        # underscored: the chains are named after the cell's nodes (`nodes`, `output`, ...), which users choose
        self._inputs, self._nodes, self._output = tuple(inputs), list(nodes), output

    def _operands(self, values: Dict[str, torch.Tensor], operands) -> List[torch.Tensor]:
        return [values[src] if chain is None else self._modules[chain](values[src]) for chain, src in operands]

    def forward(self, *inputs):
        values = dict(zip(self._inputs, inputs))
        for name, kind, operands in self._nodes:
            values[name] = merge(kind, self._operands(values, operands))
        kind, operands = self._output
        return merge(kind, self._operands(values, operands))

    def extra_repr(self):
        return f"inputs=({', '.join(self._inputs)}), nodes={len(self._nodes)}"


def lower_cell(node: ir.Cell, kernels: str) -> CellModule:
    from .lower import lower_list
    from .runtime import Chain
    chains = [(c.name, Chain(*lower_list(c.children, kernels))) for c in node.children]
    return CellModule(chains, node.inputs, node.nodes, node.output)


def graph_step(model: nn.Module) -> Optional["GraphStep"]:
    """The GraphStep a compiled network runs its parts with, None when they run one after another."""
    steps = getattr(model, "steps", None)
    return steps[0] if steps and isinstance(steps[0], GraphStep) else None


def is_wired(network: ir.NetworkIR) -> bool:
    """Whether a cell of the network reads outputs by name (a cell with several inputs)."""
    return any(isinstance(n, ir.Cell) and n.sources for _, n in network.nodes())


class GraphStep:
    """Runs a network's parts in order, keeping each part's and each stage block's output under its module path
    ("input" is the network's input); a cell with sources is called with those outputs, everything else with
    the output before it. The one step of a network with cells that read earlier outputs."""

    def __init__(self, network: ir.NetworkIR):
        self.names = [p.name for p in network.parts[:1]]  # pycnn.report.kernel_table reads a step's names
        # per part: (name, whether to run it child by child, [(child name, cell sources)], record children)
        self.plan = []
        for part in network.parts:
            cells = [c for c in part.children if isinstance(c, ir.Cell) and c.sources]
            children = [(c.name, tuple(c.sources) if isinstance(c, ir.Cell) else ()) for c in part.children
                        if not (isinstance(c, ir.Layer) and not c.own_module)]  # an act runs in its bn's step
            self.plan.append((part.name, bool(cells), children, part.kind == "stage"))

    def __call__(self, owner: nn.Module, x, residual=None):
        assert residual is None, "a network's step adds no residual"
        return self.run(owner, x)[0]

    def run(self, owner: nn.Module, x, parts: Optional[int] = None):
        """(the output of the first `parts` parts (all: None), {module path: output} of every part and stage
        block on the way); `owner` holds the parts under their names (a Network, a FeatureNetwork)."""
        outputs = {"input": x}
        for name, by_child, children, record in self.plan[:parts]:
            part = owner._modules[name]
            if not by_child and not record:
                x = part(x)
            else:
                steps = {s.names[0]: s for s in part.steps}
                for child, sources in children:
                    if sources:
                        x = part._modules[child](*[outputs[s] for s in sources])
                    else:
                        x = steps[child](part, x)
                    if record:
                        outputs[f"{name}.{child}"] = x
            outputs[name] = x
        return x, outputs

    def __repr__(self):
        return "graph(" + ", ".join(p[0] for p in self.plan) + ")"
