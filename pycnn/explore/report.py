"""Reading explorations: error EDFs (as pycls plots them), the table of the best trials, and the fit of the
quantized linear width parameterization (w0, wa, wm) of Radosavovic et al. 2020 to the best networks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np


def errors(trials: List[dict]) -> np.ndarray:
    return np.sort(np.array([t["error"] for t in trials if t.get("error") is not None], dtype=float))


def edf(errs: np.ndarray):
    """(sorted errors, cumulative fraction): F(e) = (1/n) * #{e_i <= e}."""
    e = np.sort(errs)
    return e, np.arange(1, len(e) + 1) / max(1, len(e))


def plot_edfs(path: Path, runs: Dict[str, List[dict]], title: str = "error EDF") -> None:
    """One EDF per named trial list on one chart; legend `name: n, min, mean` (pycls's)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    draw_edfs(ax, runs, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_edfs(ax, runs: Dict[str, List[dict]], title: str) -> None:
    """One EDF per named trial list on the matplotlib axes `ax`."""
    for name, trials in runs.items():
        e, f = edf(errors(trials))
        if len(e):
            ax.plot(e, f, label=f"{name}: n={len(e)}, min={e.min():.2f}, mean={e.mean():.2f}")
    ax.set_xlabel("error (%)")
    ax.set_ylabel("cumulative prob.")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)


def table(trials: List[dict], top: int = 10) -> str:
    """The `top` best trials: error, MF, params, activations, seconds, sampled values."""
    ok = sorted((t for t in trials if t.get("error") is not None), key=lambda t: t["error"])
    failed = [t for t in trials if t.get("error") is None]
    timed = any("latency_ms" in t for t in trials)
    lines = [f"{'trial':>5} {'error%':>7} {'MF':>8} {'Mparams':>8} {'Macts':>7}" + (f" {'ms':>8}" if timed else "")
             + f" {'s':>6}  values"]
    for t in ok[:top]:
        values = " ".join(f"{k}={v}" for k, v in t["values"].items())
        ms = (f" {t['latency_ms']:>8.3f}" if t.get("latency_ms") is not None else f" {'-':>8}") if timed else ""
        lines.append(f"{t['index']:>5} {t['error']:>7.2f} {t['flops'] / 1e6:>8.2f} {t['params'] / 1e6:>8.3f} "
                     f"{t['acts'] / 1e6:>7.3f}{ms} {t.get('seconds', 0):>6.1f}  {values}")
    e = errors(trials)
    if len(e):
        lines.append(f"{len(e)} trials: error min {e.min():.2f}, mean {e.mean():.2f}, median {np.median(e):.2f}"
                     + (f"; {len(failed)} failed" if failed else ""))
    return "\n".join(lines)


def block_widths(values: dict, stages: int = 4) -> Optional[List[int]]:
    """Per-block widths of an AnyNet sample (w_i repeated d_i times); None if the sample has no such params."""
    try:
        return [int(values[f"w{i}"]) for i in range(1, stages + 1) for _ in range(int(values[f"d{i}"]))]
    except KeyError:
        return None


@dataclass
class WidthFit:
    w0: float
    wa: float
    wm: float
    error: float  # mean |log(w_j / fitted w_j)| over the blocks (the paper's e_fit)


def quantized_widths(w0: float, wa: float, wm: float, depth: int, q: int = 8) -> np.ndarray:
    """The RegNet rule (docs/design.md section 8): u_j = w0 + wa*j, s_j = round(log(u_j/w0)/log(wm)),
    w_j = q * round(w0 * wm**s_j / q)."""
    u = w0 + wa * np.arange(depth)
    s = np.round(np.log(u / w0) / np.log(wm))
    return q * np.round(w0 * wm ** s / q)


def fit_widths(widths: Sequence[int]) -> WidthFit:
    """Grid search for (w0, wa, wm) whose quantized linear widths best match `widths` (least mean |log| error)."""
    w = np.asarray(widths, dtype=float)
    d = len(w)
    best = WidthFit(math.nan, math.nan, math.nan, math.inf)
    w0s = np.unique(np.clip(8 * np.round(np.geomspace(8, max(16, w.max()), 40) / 8), 8, None))
    was = np.concatenate([[0.0], np.geomspace(0.5, max(1.0, w.max()), 60)])
    wms = np.linspace(1.5, 3.0, 31)
    j = np.arange(d)
    for w0 in w0s:
        u = w0 + was[:, None] * j[None, :]  # (wa, j)
        for wm in wms:
            s = np.round(np.log(u / w0) / np.log(wm))
            fitted = np.maximum(8, 8 * np.round(w0 * wm ** s / 8))
            err = np.abs(np.log(w[None, :] / fitted)).mean(1)
            k = int(err.argmin())
            if err[k] < best.error:
                best = WidthFit(float(w0), float(was[k]), float(wm), float(err[k]))
    return best


def fit_report(trials: List[dict], top: int = 5, stages: int = 4) -> str:
    """The (w0, wa, wm) fit of the `top` best trials' block widths, one line each, and the median."""
    ok = sorted((t for t in trials if t.get("error") is not None), key=lambda t: t["error"])[:top]
    rows, fits = [], []
    for t in ok:
        ws = block_widths(t["values"], stages)
        if not ws:
            continue
        f = fit_widths(ws)
        fits.append(f)
        rows.append(f"trial {t['index']:>4} error {t['error']:6.2f}%  widths {ws}  ->  w0={f.w0:.0f} wa={f.wa:.1f} "
                    f"wm={f.wm:.2f}  e_fit={f.error:.3f}")
    if not fits:
        return "width fit: the trials have no per-stage widths and depths (w1.., d1..)"
    med = lambda xs: float(np.median(xs))
    rows.append(f"median of the {len(fits)} best: w0={med([f.w0 for f in fits]):.0f} wa={med([f.wa for f in fits]):.1f} "
                f"wm={med([f.wm for f in fits]):.2f} e_fit={med([f.error for f in fits]):.3f}")
    return "\n".join(rows)


def pareto_front(trials: List[dict]) -> List[dict]:
    """The trials no other trial beats in both measured latency and error, fastest first."""
    ok = sorted((t for t in trials if t.get("error") is not None and t.get("latency_ms") is not None),
                key=lambda t: (t["latency_ms"], t["error"]))
    front, best = [], math.inf
    for t in ok:
        if t["error"] < best:
            front.append(t)
            best = t["error"]
    return front


def latency_report(trials: List[dict], budget_ms: Optional[float] = None) -> str:
    """The Pareto front (latency, error) in lines, and how many trials are within the budget."""
    front = pareto_front(trials)
    if not front:
        return "latency: no trial has both an error and a measured latency"
    spec = next(t["latency"] for t in trials if t.get("latency"))
    lines = [f"Pareto front (error vs latency on {spec['engine']}@{spec['batch']}, {spec['threads']} threads):"]
    lines += [f"  trial {t['index']:>4}  {t['latency_ms']:8.3f} ms  error {t['error']:6.2f}%  "
              f"{t['flops'] / 1e6:.2f} MF" for t in front]
    if budget_ms is not None:
        n = sum(1 for t in trials if t.get("latency_ms") is not None and t["latency_ms"] <= budget_ms)
        lines.append(f"{n} of {len(trials)} trials within {budget_ms:g} ms")
    return "\n".join(lines)


def plot_latency(path: Path, trials: List[dict], budget_ms: Optional[float] = None, name: str = "") -> None:
    """Left: error against measured latency, every trial a dot, the Pareto front as a step line, the budget as
    a vertical line. Right: the error EDF of the trials within the budget (and of all, when a budget is set)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [t for t in trials if t.get("error") is not None and t.get("latency_ms") is not None]
    spec = next((t["latency"] for t in trials if t.get("latency")), {"engine": "?", "batch": "?", "threads": "?"})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    ax.scatter([t["latency_ms"] for t in ok], [t["error"] for t in ok], s=14, alpha=0.7, label="trials")
    front = pareto_front(trials)
    if front:
        ax.step([t["latency_ms"] for t in front], [t["error"] for t in front], where="post", color="tab:red",
                label=f"Pareto front ({len(front)})")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="black", linestyle="--", linewidth=0.8, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel(f"latency (ms) on {spec['engine']}, batch {spec['batch']}, {spec['threads']} threads")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    under = [t for t in ok if budget_ms is None or t["latency_ms"] <= budget_ms]
    runs = {("within budget" if budget_ms is not None else "all"): under}
    if budget_ms is not None:
        runs["all trained"] = [t for t in trials if t.get("error") is not None]
    draw_edfs(bx, runs, "error EDF" + (f" under {budget_ms:g} ms" if budget_ms is not None else ""))
    ax.set_title(f"{name} error vs measured latency".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
