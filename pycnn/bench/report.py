"""Benchmark results as files: JSON (every run, with its environment), a markdown table, a PNG chart."""

from __future__ import annotations

import datetime
import json
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


def speedup_chart(rows: Sequence[Dict[str, object]], path: Path, title: str, label_keys: Sequence[str]) -> None:
    """Horizontal bars of rows' speedup (pycnn over the baseline), a line at 1.0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [" ".join(str(r[k]) for k in label_keys) for r in rows]
    values = [float(r["speedup"]) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    ax.barh(range(len(rows)), values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of pycnn (baseline median / pycnn median)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(out_dir: Path, name: str, env: Dict[str, object], rows: List[Dict[str, object]],
                  columns: Sequence[str], label_keys: Sequence[str]) -> List[Path]:
    """Writes NAME.json, NAME.md and NAME.png under out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps({"environment": env, "results": rows}, indent=1, default=str) + "\n")
    header = (f"# {name}\n\n{env['device_name']} ({env['device']}), torch {env['torch']}, pycnn {env['pycnn']}, "
              f"{env['date']}\n\n`{env['command']}`\n\n")
    paths[1].write_text(header + markdown_table(rows, columns))
    title = f"{name}: {env['device_name']}, torch {env['torch']}"
    speedup_chart(rows, paths[2], title, label_keys)
    return paths
