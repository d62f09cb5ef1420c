"""`pycnn eval`: a run folder's best weights (or any pycnn checkpoint) on a dataset's test split: accuracy,
loss, confusion matrix (PNG), images per second."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import checkpoint as ckpt
from .data import Batches, check_adaptable, load
from .loop import TrainError, build_model, evaluate


@dataclass
class EvalResult:
    network: str
    data: str
    accuracy: float
    loss: float
    images_per_s: float
    confusion: torch.Tensor
    confusion_png: Optional[Path]


def checkpoint_of(path) -> Path:
    """The checkpoint a path names: a run folder's best.safetensors, or the file itself."""
    path = Path(path)
    if path.is_dir():
        if not (path / "best.safetensors").is_file():
            raise TrainError(f"{path} holds no best.safetensors (not a finished pycnn run folder)")
        return path / "best.safetensors"
    return path


def evaluate_checkpoint(path, data: str = "digits", data_dir: Optional[str] = None, batch_size: int = 256,
                        backend: str = "fused", kernels: Optional[str] = None, device: Optional[str] = None,
                        confusion_png=None) -> EvalResult:
    file = checkpoint_of(path)
    weights, meta = ckpt.load_weights(file)
    from pycnn.checkpoint import FORMAT
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise ckpt.CheckpointError(f"{file} is not a pycnn checkpoint (no network source in its metadata)")
    dataset = load(data, data_dir)
    overrides = ckpt.overrides_of(meta)
    if overrides.get("classes") != dataset.classes:
        raise TrainError(f"{file} classifies {overrides.get('classes')} classes, {data} has {dataset.classes}")
    model = build_model(meta["arch"], meta.get("file") or None, meta["network"], overrides, backend, kernels)
    ckpt.load_state_into(model, weights, file)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    input_shape = tuple(model.ir.input_shape)
    check_adaptable(dataset.shape[0], input_shape)
    # normalization as in training: the statistics the checkpoint recorded (else the whole training split's)
    run_dir = file.parent
    batches = Batches(input_shape, dataset.train)
    if "normalize" in meta:
        norm = json.loads(meta["normalize"])
        if len(norm["mean"]) == dataset.shape[0]:
            batches.mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
            batches.std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    loss, acc, confusion, ips = evaluate(model, dataset.test, batches, batch_size, dev, classes=dataset.classes)
    png = Path(confusion_png) if confusion_png else (run_dir / f"confusion-{data.replace(':', '_').replace('/', '_')}.png")
    plot_confusion(png, confusion, f"{meta['network']} on {data}: accuracy {acc:.4f}")
    return EvalResult(meta["network"], data, acc, loss, ips, confusion, png)


def plot_confusion(path: Path, confusion: torch.Tensor, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = confusion.shape[0]
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.45 * n), min(12, 2 + 0.45 * n)))
    ax.imshow(confusion.numpy(), cmap="Blues")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
