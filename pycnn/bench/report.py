"""Benchmark results as files: JSON (every run, with its environment), a markdown table, a PNG chart."""

from __future__ import annotations

import datetime
import json
import math
import platform
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch


def environment(device: torch.device) -> Dict[str, object]:
    """Device, driver and library versions, date and command line of this run."""
    import pycnn

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:]),
        "device": str(device),
        "pycnn": pycnn.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "build": pycnn.build_info(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, sm_count=props.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   driver=_nvidia_driver())
    else:
        env["device_name"] = "CPU"
    return env


def _nvidia_driver() -> Optional[str]:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def markdown_table(rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _groups(rows, keys) -> Dict[tuple, list]:
    """Rows grouped by the values of `keys`, in order of first occurrence."""
    out: Dict[tuple, list] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _geomean(values) -> float:
    values = [float(v) for v in values]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summary_table(rows: Sequence[Dict[str, object]], keys: Sequence[str]) -> str:
    """Per group of `keys`: number of cases, geometric mean / min / max speedup [and over torch.compile]."""
    compiled = any("speedup_vs_compile" in r for r in rows)
    out = []
    for key, group in _groups(rows, keys).items():
        s = [r["speedup"] for r in group]
        row = dict(zip(keys, key), cases=len(group), speedup_geomean=_geomean(s), speedup_min=min(s),
                   speedup_max=max(s))
        if compiled:
            row["vs_compile_geomean"] = _geomean(r["speedup_vs_compile"] for r in group if "speedup_vs_compile" in r)
        out.append(row)
    columns = list(keys) + ["cases", "speedup_geomean", "speedup_min", "speedup_max"]
    return markdown_table(out, columns + (["vs_compile_geomean"] if compiled else []))


def speedup_chart(rows: Sequence[Dict[str, object]], path: Path, title: str, label_keys: Sequence[str],
                  panel_keys: Sequence[str] = (), column_key: Optional[str] = None,
                  series_key: Optional[str] = None) -> None:
    """Horizontal bars of the rows' speedup (pycnn over eager: baseline median / pycnn median) from a line
    at 1.0 on a log axis; rows with speedup_vs_compile also get a black tick at the speedup over
    torch.compile. One subplot per value of `panel_keys` (subplot rows, sharing their labels) and of
    `column_key` (subplot columns); one bar per label and value of `series_key`, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    panels = _groups(rows, panel_keys)
    columns = list(_groups(rows, [column_key] if column_key else []))
    series = [k[0] for k in _groups(rows, [series_key])] if series_key else [None]
    labels = {p: list(_groups(g, label_keys)) for p, g in panels.items()}
    heights = [max(1, len(v)) for v in labels.values()]
    compiled = any("speedup_vs_compile" in r for r in rows)
    values = [float(r["speedup"]) for r in rows] + [float(r["speedup_vs_compile"]) for r in rows
                                                   if "speedup_vs_compile" in r]
    lo, hi = min(values + [1.0]) / 1.3, max(values + [1.0]) * 1.3
    per_label = 0.12 + 0.1 * len(series)
    fig, axes = plt.subplots(len(panels), len(columns), squeeze=False, sharey="row",
                             figsize=(2.6 + 4.8 * len(columns), per_label * sum(heights) + 0.55 * len(panels) + 1.0),
                             gridspec_kw={"height_ratios": heights})
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    bar = 0.8 / max(1, len(series))
    for i, (pkey, prow) in enumerate(panels.items()):
        index = {lab: n for n, lab in enumerate(labels[pkey])}
        for j, ckey in enumerate(columns):
            ax = axes[i][j]
            cell = [r for r in prow if not column_key or r.get(column_key) == ckey[0]]
            for si, ser in enumerate(series):
                sel = [r for r in cell if not series_key or r.get(series_key) == ser]
                ys = [index[tuple(r.get(k) for k in label_keys)] - 0.4 + bar * (si + 0.5) for r in sel]
                sp = [float(r["speedup"]) for r in sel]
                ax.barh(ys, [v - 1 for v in sp], left=1, height=bar * 0.9, color=colors[si % len(colors)],
                        label=str(ser) if ser is not None else "speedup")
                if compiled:
                    pts = [(float(r["speedup_vs_compile"]), y) for r, y in zip(sel, ys) if "speedup_vs_compile" in r]
                    if pts:
                        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="|", color="black",
                                   s=40 * bar, linewidths=1.2, zorder=3,
                                   label="vs torch.compile" if si == 0 else None)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlim(lo, hi)
            ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if lo <= t <= hi]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{t:g}x" for t in ticks], fontsize=7)
            ax.grid(axis="x", linewidth=0.3)
            name = " ".join(str(v) for v in pkey + ckey if v is not None)
            ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_yticks(range(len(index)), [" ".join(str(v) for v in lab) for lab in index], fontsize=6)
                ax.set_ylim(len(index) - 0.5, -0.5)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=7, ncol=len(names))
    fig.suptitle(title + "\nspeedup of pycnn (baseline median / pycnn median), log scale", fontsize=9, x=0.02,
                 ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(out_dir: Path, name: str, env: Dict[str, object], rows: List[Dict[str, object]],
                  columns: Sequence[str], label_keys: Sequence[str], panel_keys: Sequence[str] = (),
                  column_key: Optional[str] = None, series_key: Optional[str] = None) -> List[Path]:
    """Writes NAME.json, NAME.md and NAME.png under out_dir; returns their paths. With panel_keys the
    markdown starts with a summary per panel (and column_key), then one table per panel; the chart has
    one subplot per panel and column (see speedup_chart)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps({"environment": env, "results": rows}, indent=1, default=str) + "\n")
    threads = f", {env['threads']} threads" if env.get("device") == "cpu" else ""
    header = (f"# {name}\n\n{env['device_name']} ({env['device']}{threads}), torch {env['torch']}, "
              f"pycnn {env['pycnn']}, {env['date']}\n\n`{env['command']}`\n\n")
    if panel_keys:
        keys = list(panel_keys) + ([column_key] if column_key else [])
        body = "## Summary\n\n" + summary_table(rows, keys)
        for pkey, group in _groups(rows, panel_keys).items():
            body += f"\n## {' '.join(map(str, pkey))}\n\n" + markdown_table(group, [c for c in columns
                                                                                 if c not in panel_keys])
    else:
        body = markdown_table(rows, columns)
    paths[1].write_text(header + body)
    title = f"{name}: {env['device_name']}{threads}, torch {env['torch']}"
    speedup_chart(rows, paths[2], title, label_keys, panel_keys, column_key, series_key)
    return paths
