"""Model benchmark: images/s and memory of a compiled .arch network, pycnn (backend "fused") against the same
network and weights on eager PyTorch modules (backend "reference"), optionally the torchvision model with
those weights, and torch.compile of the baseline; in one or both memory layouts, all timed interleaved in one
run (docs/design.md section 7).

Memory: on CUDA the peak allocated during one step; everywhere (training) the bytes autograd keeps for
backward (distinct storages seen by saved_tensors_hooks), the activation memory of a training step.

bench_engines (pycnn bench model --engines): the network on every deployment engine of pycnn.deploy (torch and
torch.compile of the baseline a user would pick, pycnn eager and compiled, ONNX Runtime, OpenVINO), parity
checked, timed interleaved at batch 1 and the given batch; docs/deploy.md.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..lower import to_backend
from ..memory import saved_activation_bytes
from ..timing import compare

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def torchvision_baseline(model: nn.Module, name: str) -> nn.Module:
    """torchvision.models.<name> holding `model`'s weights (pycnn.weights.to_torchvision)."""
    import torchvision

    from .. import weights
    tv = getattr(torchvision.models, name)(num_classes=model.ir.out_shape[0])
    weights.to_torchvision(model, tv)
    return tv


def bench_model(model: nn.Module, input_shape, batch: int, device: torch.device, dtype: torch.dtype,
                layouts: Sequence[str], train: bool, with_compile: bool, repeats: int,
                torchvision: Optional[str] = None) -> List[Dict[str, object]]:
    """One row per (variant, layout): median ms, images/s, memory, and speedup = that time / pycnn's time
    in the same layout. Variants: pycnn, eager (the reference backend), torchvision (if named), torch.compile
    (of torchvision if named, else of the reference)."""
    model = model.to(device=device, dtype=dtype).train(train)
    baselines = {"eager": to_backend(model, "reference")}
    if torchvision:
        baselines["torchvision"] = torchvision_baseline(model, torchvision).to(device=device, dtype=dtype)
    x0 = torch.randn(batch, *input_shape, device=device, dtype=dtype)
    variants, inputs = {}, {}
    for layout in layouts:
        fmt = LAYOUTS[layout]
        copies = {"pycnn": copy.deepcopy(model)} | {name: copy.deepcopy(m) for name, m in baselines.items()}
        if with_compile:
            copies["torch.compile"] = torch.compile(copies["torchvision" if torchvision else "eager"])
        for name, m in copies.items():
            variants[(name, layout)] = m.to(memory_format=fmt).train(train)
        inputs[layout] = x0.contiguous(memory_format=fmt)

    def step(m, x):
        if train:
            m.zero_grad(set_to_none=True)
            m(x).float().sum().backward()
        else:
            with torch.no_grad():
                m(x)

    memory: Dict[tuple, Optional[float]] = {}
    saved: Dict[tuple, Optional[float]] = {}
    for key, m in variants.items():
        x = inputs[key[1]]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        step(m, x)  # the warm-up: compiles, and measures pycnn's kernel choices (auto)
        memory[key] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        saved[key] = saved_activation_bytes(m, x) / 2**20 if train and key[0] != "torch.compile" else None
    t = compare({key: (lambda m=m, x=inputs[key[1]]: step(m, x)) for key, m in variants.items()}, device,
                repeats=repeats, warmup=1)
    rows = []
    for (name, layout), timing in t.items():
        rows.append(dict(variant=name, batch=batch, dtype=str(dtype).replace("torch.", ""), layout=layout,
                         mode="train" if train else "eval", ms=timing.median_s * 1e3,
                         images_per_s=batch / timing.median_s, peak_mib=memory[(name, layout)],
                         saved_mib=saved[(name, layout)],
                         speedup=timing.median_s / t[("pycnn", layout)].median_s))
    return rows


def best_layout_summary(rows: List[Dict[str, object]]) -> Dict[str, Dict[str, object]]:
    """Per variant, its fastest layout's row; with `vs_pycnn` = that time / pycnn's best time."""
    best: Dict[str, Dict[str, object]] = {}
    for r in rows:
        if r["variant"] not in best or r["ms"] < best[r["variant"]]["ms"]:
            best[r["variant"]] = r
    return {name: dict(r, vs_pycnn=r["ms"] / best["pycnn"]["ms"]) for name, r in best.items()}


# ---------------------------------------------------------------------------------------------------------
# deployment engines side by side (pycnn bench model --engines)

def _variant_label(variant: str, precision: str) -> str:
    return variant if precision == "f32" else f"{variant}-{precision}"


def bench_engines(model: nn.Module, variants: Sequence[str], batches: Sequence[int], threads: int, repeats: int,
                  *, bf16: bool = False, freeze: bool = False, baseline: Optional[tuple] = None,
                  workdir: Optional[str] = None, log=print, advance=lambda *_: None) -> List[Dict[str, object]]:
    """One row per (variant, batch) of pycnn.deploy.VARIANTS on the CPU, eval, all timed interleaved in one run
    (round-robin repeats, each timed call right after an untimed one of the same row, medians). Torch-based variants run in their faster layout (eager ones measured in
    both during the warm-up; compiled ones in the layout their eager model won, the row says so). Each
    variant's output is checked against the reference backend on the same input first: relative error
    <= pycnn.deploy.PARITY_TOLERANCE (bf16: BF16_TOLERANCE), else the row says so and is not timed. An engine
    that is not installed or cannot run the network is one line (`log`) and one untimed row. `freeze`: the
    compiled rows with inductor's freezing (deploy.runner). Rows: ms,
    images_per_s, vs_best (best time / this time, per batch) and vs_torch (the baseline's time / this time)."""
    import tempfile

    from .. import deploy
    from ..lower import to_backend
    from ..timing import compare
    model = model.eval()
    torch.set_num_threads(threads)
    base_module, base_label = baseline or deploy.baseline_model(model)
    reference = to_backend(model, "reference").eval()
    onnx_dir = workdir or tempfile.mkdtemp(prefix="pycnn-engines-")
    onnx_path = f"{onnx_dir}/{model.ir.name}.onnx"
    variants = [v for v in deploy.VARIANTS if v in variants]  # eager before compiled: they lend their layout
    jobs = [(v, "f32") for v in variants] + ([("openvino", "bf16")] if bf16 and "openvino" in variants else [])
    rows: Dict[tuple, Dict[str, object]] = {}
    runs: Dict[tuple, tuple] = {}
    unavailable: Dict[str, str] = {}
    eager_layout: Dict[tuple, str] = {}
    for batch in batches:
        x = torch.randn((batch,) + tuple(model.ir.input_shape), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = reference(x)
        for variant, precision in jobs:
            label = _variant_label(variant, precision)
            which, engine = deploy.VARIANTS[variant]
            row = dict(network=model.ir.name, engine=label, runs=base_label if which == "baseline" else
                       ("pycnn (ONNX export)" if engine in ("onnxruntime", "openvino") else "pycnn"),
                       batch=batch, threads=threads, layout="-", ms=None, images_per_s=None, vs_best=None,
                       vs_torch=None, parity=None, note="")
            rows[(label, batch)] = row
            if label in unavailable:  # by label: a failing bf16 row must not take the f32 one with it
                row["note"] = unavailable[label]
                advance()
                continue
            layout, lent = "auto", False
            if engine == "compile":  # compiling in both layouts would double the slowest warm-up
                eager = ("torch" if which == "baseline" else "pycnn", batch)
                layout, lent = eager_layout.get(eager, "channels_last"), eager in eager_layout
            try:
                run = deploy.variant_runner(variant, model, batch, threads, baseline=base_module, onnx_path=onnx_path,
                                            layout=layout, precision=precision, freeze=freeze)
                out = run(x)
            except deploy.EngineNotInstalled as e:
                unavailable[label] = row["note"] = str(e)
                log(str(e))
                advance()
                continue
            except Exception as e:  # EngineError names the layer; anything else: the engine's first line
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                unavailable[label] = row["note"] = f"cannot run: {first[:300]}"
                log(f"{label}: {row['note']}")
                advance()
                continue
            if engine in ("torch", "compile"):
                row["layout"] = run.layout + (" (measured best)" if engine == "torch" else
                                              " (eager's best)" if lent else " (default)") + \
                    (", frozen" if freeze and engine == "compile" else "")
                if engine == "torch":
                    eager_layout[(which if which == "pycnn" else "torch", batch)] = run.layout
            else:
                row["layout"] = "nchw (engine's own)"
            err = deploy.relative_error(out, ref)
            row["parity"] = err
            tolerance = deploy.BF16_TOLERANCE if precision == "bf16" else deploy.PARITY_TOLERANCE
            if not err <= tolerance:
                row["note"] = f"parity failed: relative error {err:.1e} > {tolerance:g}; not timed"
                log(f"{label} batch {batch}: {row['note']}")
            else:
                runs[(label, batch)] = (run, x)
            advance()
    if runs:
        t = compare({key: (lambda r=r, x=x: r(x)) for key, (r, x) in runs.items()}, torch.device("cpu"),
                    repeats=repeats, warmup=2, on_round=lambda: advance(), warm_each=True)
        for key, timing in t.items():
            rows[key].update(ms=timing.median_s * 1e3, images_per_s=key[1] / timing.median_s)
    for batch in batches:
        timed = [r for r in rows.values() if r["batch"] == batch and r["ms"] is not None]
        if not timed:
            continue
        best = min(r["ms"] for r in timed)
        torch_row = rows.get(("torch", batch))
        for r in timed:
            r["vs_best"] = best / r["ms"]
            if torch_row and torch_row["ms"]:
                r["vs_torch"] = torch_row["ms"] / r["ms"]
    return list(rows.values())


ENGINE_COLUMNS = ["network", "engine", "runs", "batch", "layout", "ms", "images_per_s", "vs_best", "vs_torch",
                  "parity", "note"]


def engines_markdown(rows: List[Dict[str, object]]) -> str:
    """The engines table: one section per network and batch, ratios as 1.23x, missing values as -."""
    out = []
    for network in dict.fromkeys(r["network"] for r in rows):
        for batch in dict.fromkeys(r["batch"] for r in rows if r["network"] == network):
            sel = [r for r in rows if r["network"] == network and r["batch"] == batch]
            out.append(f"## {network}, batch {batch}\n")
            out.append("| engine | runs | layout | ms | img/s | vs best | vs torch | parity | note |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            for r in sel:
                f = lambda v, spec: "-" if v is None else format(v, spec)
                out.append(f"| {r['engine']} | {r['runs']} | {r['layout']} | {f(r['ms'], '.2f')} | "
                           f"{f(r['images_per_s'], '.1f')} | {f(r['vs_best'], '.2f')}x | {f(r['vs_torch'], '.2f')}x | "
                           f"{f(r['parity'], '.1e')} | {r['note']} |".replace("| -x |", "| - |"))
            out.append("")
    return "\n".join(out)


def engines_chart(rows: List[Dict[str, object]], path, title: str) -> None:
    """Horizontal bars of images/s per engine, one subplot per network and batch; untimed rows are labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = list(dict.fromkeys((r["network"], r["batch"]) for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(7, 0.9 + (0.3 * len(engines) + 0.6) * len(panels)))
    for ax, (network, batch) in zip(axes[:, 0], panels):
        sel = {r["engine"]: r for r in rows if r["network"] == network and r["batch"] == batch}
        values = [sel[e]["images_per_s"] or 0 if e in sel else 0 for e in engines]
        colors = ["tab:orange" if e.startswith("pycnn") else "tab:blue" for e in engines]
        ax.barh(range(len(engines)), values, color=colors)
        for i, e in enumerate(engines):
            r = sel.get(e)
            text = (f" {r['ms']:.1f} ms, {r['vs_best']:.2f}x" if r and r["ms"] is not None else
                    " not timed" if r else "")
            ax.text(values[i], i, text, va="center", fontsize=7)
        ax.set_yticks(range(len(engines)), engines, fontsize=7)
        ax.set_ylim(len(engines) - 0.5, -0.5)
        ax.set_xlim(0, max(values + [1]) * 1.35)
        ax.set_title(f"{network}, batch {batch}", fontsize=8)
        ax.set_xlabel("images/s (higher is better)", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
    fig.suptitle(title, fontsize=8, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_engine_results(out_dir, name: str, env: Dict[str, object], rows: List[Dict[str, object]]) -> list:
    """NAME.json (rows and environment), NAME.md (the table per network and batch), NAME.png (the chart)."""
    import json
    from pathlib import Path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps({"environment": env, "results": rows}, indent=1, default=str) + "\n")
    engines = ", ".join(f"{k} {v}" for k, v in env.get("engines", {}).items())
    header = (f"# {name}\n\n{env['device_name']} ({env['device']}, {env['threads']} threads), torch {env['torch']}, "
              f"{engines}, pycnn {env['pycnn']}, {env['date']}\n\n`{env['command']}`\n\n"
              "Eval, float32, medians of repeats interleaved round by round across every row; vs best = the "
              "fastest row's time / this row's time (per batch); vs torch = the `torch` row's time / this row's.\n\n")
    paths[1].write_text(header + engines_markdown(rows))
    engines_chart(rows, paths[2], f"{name}: {env['device_name']}, {env['threads']} threads, torch {env['torch']}")
    return paths
