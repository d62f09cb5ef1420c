"""`pycnn.train` (pycnn.training.loop.train): trains a compiled network on a dataset with a Recipe, into a run folder.

Run folder (never overwritten without overwrite=True):
    network.arch            the .arch source the network was compiled from
    options.json            command, network, overrides, dataset, backend, kernels, every recipe option
    metrics.csv / .json     per epoch: train loss/acc, val loss/acc, lr, img/s, seconds
    last.safetensors        weights after the last completed epoch (+ last-ema.safetensors with --ema)
    last-optimizer.safetensors, state.json   optimizer state, epoch, early-stopping state: what resume needs
    best.safetensors        the weights (EMA weights with --ema) of the best validation accuracy
    curves.png              loss and accuracy per epoch
    result.json             best validation accuracy and epoch, test accuracy/loss of the best weights

Determinism: the data order, augmentation and mixing of epoch e come from generators seeded with (seed, e),
and dropout's global RNG is reseeded each epoch, so a run resumed at an epoch boundary computes the same
numbers as one never interrupted (on the CPU, same threads).
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .data import Batches, DataError, check_adaptable, load, split_validation
from .recipe import (EMA, EarlyStopping, Recipe, adaptive_clip_, agc_params, augment, learning_rate, make_optimizer,
                     mix, soft_cross_entropy)

METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "img_per_s", "seconds"]


class TrainError(Exception):
    """A run that cannot start or continue (bad options, run folder conflicts); one line for the user."""


@dataclass
class RunResult:
    run_dir: Path
    metrics: List[dict]
    best_val_acc: float
    best_epoch: int
    test_acc: float
    test_loss: float
    stopped_early: bool = False
    interrupted: bool = False
    notes: List[str] = field(default_factory=list)


def _dist():
    """(rank, world size) under torchrun, initializing the process group once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _read_source(arch) -> tuple:
    """(text, file) of an .arch path or text."""
    if isinstance(arch, os.PathLike) or (isinstance(arch, str) and "\n" not in arch and "{" not in arch):
        path = Path(arch)
        if not path.is_file():
            raise TrainError(f"no such .arch file: {path}")
        return path.read_text(), str(path)
    return arch, None


def build_model(source: str, file: Optional[str], network: Optional[str], overrides: dict, backend: str,
                kernels: Optional[str]):
    import pycnn
    return pycnn.compile(source, network, file=file, backend=backend, kernels=kernels, **overrides)


@torch.no_grad()
def evaluate(model, split, batches: Batches, batch_size: int, device, channels_last: bool = False,
             amp: str = "none", classes: Optional[int] = None):
    """(loss, accuracy, confusion matrix (true x predicted) or None, images per second) of a split."""
    model.eval()
    total_loss, correct, n = 0.0, 0, len(split)
    confusion = torch.zeros(classes, classes, dtype=torch.int64) if classes else None
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        x = batches(split.images[i:i + batch_size]).to(device)
        y = split.labels[i:i + batch_size].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(amp, device):
            logits = model(x)
        total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        pred = logits.argmax(1)
        correct += int((pred == y).sum())
        if confusion is not None:
            confusion += torch.bincount((y * classes + pred).cpu(), minlength=classes * classes).view(classes, classes)
    seconds = time.perf_counter() - start
    return total_loss / max(1, n), correct / max(1, n), confusion, n / max(seconds, 1e-9)


def _autocast(amp: str, device):
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Progress:
    """A rich progress bar on a terminal (epoch, batch, loss, img/s, ETA); nothing when piped."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn)
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.0f} img/s"),
                                    TimeRemainingColumn(), transient=True)
                self.bar.start()
            except ImportError:
                self.bar = None
        self.task = None

    def epoch(self, epoch: int, epochs: int, steps: int):
        if self.bar:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {epoch}/{epochs}", total=steps, loss=0.0, ips=0.0)

    def step(self, loss: float, ips: float):
        if self.bar:
            self.bar.update(self.task, advance=1, loss=loss, ips=ips)

    def close(self):
        if self.bar:
            self.bar.stop()


def train(arch, network: Optional[str] = None, *, data: str = "digits", data_dir: Optional[str] = None,
          download: bool = False, out=None, recipe: Optional[Recipe] = None, backend: str = "fused",
          kernels: Optional[str] = None, input=None, resume=None, overwrite: bool = False,
          device: Optional[str] = None, threads: Optional[int] = None, command: Optional[List[str]] = None,
          log: Callable[[str], None] = print, progress: bool = True, stop_after: Optional[int] = None,
          network_overrides: Optional[dict] = None, **recipe_options) -> RunResult:
    """Train the network of `arch` (an .arch path or text) on `data` and return its RunResult.

    `recipe` (or recipe options as keywords: epochs=3, lr=0.05, mixup=0.2, ...) says how; `out` is the run
    folder (default runs/<network>-<data>); `resume` continues a run folder from its last completed epoch.
    `input` overrides the network's input shape (C, H, W); the dataset's class count overrides `classes`.
    `network_overrides` sets other network parameters (a design-space sample's widths and depths).
    `stop_after` ends the run after that many epochs as if interrupted (tests of resume)."""
    rank, world = _dist()
    say = log if rank == 0 else (lambda *_: None)
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)

    state = None
    if resume is not None:
        run_dir = Path(resume)
        options_path = run_dir / "options.json"
        if not options_path.is_file():
            raise TrainError(f"{run_dir} is not a pycnn run folder (no options.json)")
        try:
            saved = json.loads(options_path.read_text())
            source = (run_dir / "network.arch").read_text()
        except (OSError, ValueError) as e:
            raise TrainError(f"{run_dir}: unreadable run folder ({e})") from None
        if arch is not None:
            text, _ = _read_source(arch)
            if text != source or (network and network != saved["network"]):
                raise TrainError(f"{run_dir} was trained on another network ({saved['network']} of "
                                 f"{saved['file'] or 'its network.arch'}); resume it without a network or with the same one")
        file, network = saved["file"] or None, saved["network"]
        data, data_dir, backend, kernels = saved["data"], data_dir or saved["data_dir"], saved["backend"], saved["kernels"]
        recipe = Recipe.from_dict(saved["recipe"])
        if "epochs" in recipe_options:  # the one option a resume may change: train longer
            recipe.epochs = int(recipe_options["epochs"])
        overrides = ckpt.overrides_of({"overrides": json.dumps(saved["overrides"])})
        try:
            state = json.loads((run_dir / "state.json").read_text())
        except (OSError, ValueError):
            raise TrainError(f"{run_dir} has no readable state.json: no completed epoch to resume from") from None
    else:
        if arch is None:
            raise TrainError("give an .arch file to train (or --resume RUN_DIR)")
        source, file = _read_source(arch)
        recipe = recipe or Recipe()
        if recipe_options:
            recipe = Recipe.from_dict({**recipe.to_dict(), **recipe_options})
        overrides = dict(network_overrides or {})
        if input is not None:
            overrides["input"] = tuple(input)
    try:
        recipe.check()
    except ValueError as e:
        raise TrainError(str(e)) from None
    if recipe.amp == "fp16" and dev.type != "cuda":
        raise TrainError("--amp fp16 needs CUDA; use --amp bf16 on the CPU")

    dataset = load(data, data_dir, download and rank == 0)
    overrides["classes"] = dataset.classes
    import pycnn
    torch.manual_seed(recipe.seed)
    try:
        model = build_model(source, file, network, overrides, backend, kernels)
    except pycnn.ArchError as e:
        raise TrainError(str(e)) from None
    network_name = model.ir.name
    input_shape = tuple(model.ir.input_shape)
    check_adaptable(dataset.shape[0], input_shape)

    if resume is None:
        run_dir = Path(out) if out else Path("runs") / f"{network_name}-{data.replace(':', '_').replace('/', '_')}"
        if rank == 0:
            if run_dir.exists() and any(run_dir.iterdir()):
                if not overwrite:
                    raise TrainError(f"run folder {run_dir} exists: pass --overwrite to replace it, --resume to continue it, "
                                     f"or --out another folder")
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "network.arch").write_text(source)
            options = {"command": command, "network": network_name, "file": file, "data": data, "data_dir": data_dir,
                       "backend": backend, "kernels": kernels,
                       "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
                       "recipe": recipe.to_dict()}
            (run_dir / "options.json").write_text(json.dumps(options, indent=2) + "\n")

    train_split, val_split = split_validation(dataset.train, recipe.val_split, recipe.seed)
    batches = Batches(input_shape, train_split)
    notes = []
    note = batches.adapt_note(dataset.shape)
    if note:
        notes.append(note)
        say(note)
    if val_split is None:
        val_split = dataset.test
        say("validation: the test split (--val-split 0)")
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    ema = EMA(model, recipe.ema) if recipe.ema else None
    stopper = EarlyStopping(recipe.patience)
    import pycnn.checkpoint
    meta = pycnn.checkpoint.metadata(model)  # what pycnn.save writes: pycnn.load rebuilds the model from the file
    meta["normalize"] = json.dumps({"mean": batches.mean.flatten().tolist(), "std": batches.std.flatten().tolist()})
    scaler = torch.amp.GradScaler("cuda") if recipe.amp == "fp16" else None
    metrics: List[dict] = []
    best_acc, best_epoch, start_epoch = -1.0, 0, 1
    if state is not None:
        weights, _ = ckpt.load_weights(run_dir / "last.safetensors")
        ckpt.load_state_into(model, weights, run_dir / "last.safetensors")
        ckpt.load_optimizer(run_dir / "last-optimizer.safetensors", optimizer)
        if ema is not None:
            ema.state = {k: v.to(dev) for k, v in ckpt.load_weights(run_dir / "last-ema.safetensors")[0].items()}
        start_epoch = state["epoch"] + 1
        best_acc, best_epoch = state["best_acc"], state["best_epoch"]
        stopper = EarlyStopping(recipe.patience, **state["early_stopping"])
        metrics = json.loads((run_dir / "metrics.json").read_text())[:state["epoch"]]
        say(f"resuming {run_dir} at epoch {start_epoch}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    agc = agc_params(model) if recipe.agc else None

    n_train = len(train_split)
    per_rank = recipe.batch_size
    steps_per_epoch = max(1, math.ceil(n_train / (per_rank * world)))
    bar = _Progress(progress and rank == 0)
    interrupted = stopped = False
    epoch = start_epoch
    say(f"training {network_name} ({sum(p.numel() for p in model.parameters()):,} parameters, input "
        f"{'x'.join(map(str, input_shape))}, backend {backend}) on {data}: {n_train} train / {len(val_split)} val / "
        f"{len(dataset.test)} test images, {recipe.epochs} epochs, into {run_dir}")
    try:
        for epoch in range(start_epoch, recipe.epochs + 1):
            if stop_after is not None and epoch > stop_after:
                raise KeyboardInterrupt
            gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
            torch.manual_seed(recipe.seed * 1_000_003 + epoch)
            order = torch.randperm(n_train, generator=gen)
            net.train()
            bar.epoch(epoch, recipe.epochs, steps_per_epoch)
            seen, loss_sum, correct, start = 0, 0.0, 0, time.perf_counter()
            for step in range(steps_per_epoch):
                lr = learning_rate(recipe, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = order[step * per_rank * world:(step + 1) * per_rank * world][rank::world]
                if len(index) < 2:  # BatchNorm needs two samples
                    continue
                x = augment(batches(train_split.images[index]), recipe, gen)
                y = train_split.labels[index]
                x, target = mix(x, y, dataset.classes, recipe, gen, recipe.label_smoothing)
                x, target, y = x.to(dev), target.to(dev), y.to(dev)
                if recipe.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(recipe.amp, dev):
                    logits = net(x)
                loss = soft_cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if recipe.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
                if agc:
                    adaptive_clip_(agc, recipe.agc)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update(model)
                seen += len(index)
                loss_sum += float(loss.detach()) * len(index)
                correct += int((logits.argmax(1) == y).sum())
                bar.step(loss_sum / seen, seen * world / max(time.perf_counter() - start, 1e-9))
            if world > 1:
                import torch.distributed as dist
                totals = torch.tensor([seen, loss_sum, correct], dtype=torch.float64)
                dist.all_reduce(totals)
                seen, loss_sum, correct = int(totals[0]), float(totals[1]), int(totals[2])
            seconds = time.perf_counter() - start
            eval_model = model
            if ema is not None:
                eval_model = _with_state(model, ema.state)
            val_loss, val_acc, _, _ = evaluate(eval_model, val_split, batches, 256, dev, recipe.channels_last, recipe.amp)
            row = dict(epoch=epoch, train_loss=loss_sum / max(1, seen), train_acc=correct / max(1, seen),
                       val_loss=val_loss, val_acc=val_acc, lr=lr, img_per_s=seen / max(seconds, 1e-9),
                       seconds=seconds)
            metrics.append(row)
            stop = stopper.step(epoch, val_loss)
            improved = val_acc > best_acc
            if improved:
                best_acc, best_epoch = val_acc, epoch
            if rank == 0:
                if improved:
                    ckpt.save_weights(run_dir / "best.safetensors", eval_model.state_dict(), {**meta, "epoch": epoch})
                ckpt.save_weights(run_dir / "last.safetensors", model.state_dict(), {**meta, "epoch": epoch})
                if ema is not None:
                    ckpt.save_weights(run_dir / "last-ema.safetensors", ema.state, {**meta, "epoch": epoch})
                ckpt.save_optimizer(run_dir / "last-optimizer.safetensors", optimizer)
                _write_json(run_dir / "state.json", {"epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch,
                                                     "early_stopping": {"best": stopper.best,
                                                                        "best_epoch": stopper.best_epoch,
                                                                        "bad_epochs": stopper.bad_epochs}})
                write_metrics(run_dir, metrics)
            say(f"epoch {epoch}/{recipe.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.4g}  {row['img_per_s']:.0f} img/s  {seconds:.1f} s")
            if stop:
                stopped = True
                say(f"early stopping: no better validation loss for {recipe.patience} epochs "
                    f"(best {stopper.best:.4f} at epoch {stopper.best_epoch})")
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted:
        completed = metrics[-1]["epoch"] if metrics else start_epoch - 1
        if rank == 0:
            ckpt.save_weights(run_dir / "interrupted.safetensors", model.state_dict(), {**meta, "epoch": epoch})
            write_metrics(run_dir, metrics)
            plot_curves(run_dir / "curves.png", metrics, network_name)
        say(f"interrupted in epoch {epoch}: weights saved to {run_dir / 'interrupted.safetensors'}; "
            f"`pycnn train --resume {run_dir}` continues after epoch {completed}")
        return RunResult(run_dir, metrics, best_acc, best_epoch, math.nan, math.nan, False, True, notes)

    test_loss = test_acc = math.nan
    if rank == 0:
        best_weights, _ = ckpt.load_weights(run_dir / "best.safetensors")
        ckpt.load_state_into(model, best_weights, run_dir / "best.safetensors")
        test_loss, test_acc, _, _ = evaluate(model, dataset.test, batches, 256, dev, recipe.channels_last, recipe.amp)
        write_metrics(run_dir, metrics)
        plot_curves(run_dir / "curves.png", metrics, network_name)
        _write_json(run_dir / "result.json", {"network": network_name, "data": data, "best_val_acc": best_acc,
                                              "best_epoch": best_epoch, "test_acc": test_acc,
                                              "test_loss": test_loss, "epochs_run": len(metrics),
                                              "stopped_early": stopped,
                                              "seconds": sum(m["seconds"] for m in metrics)})
    say(f"best val acc {best_acc:.4f} (epoch {best_epoch}); test acc {test_acc:.4f}, loss {test_loss:.4f} "
        f"with those weights; run folder {run_dir}")
    return RunResult(run_dir, metrics, best_acc, best_epoch, test_acc, test_loss, stopped, False, notes)


def _with_state(model, state):
    import copy
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def write_metrics(run_dir: Path, metrics: List[dict]) -> None:
    _write_json(run_dir / "metrics.json", metrics)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS)
        w.writeheader()
        for row in metrics:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_curves(path: Path, metrics: List[dict], title: str) -> None:
    """Loss (train, val) and validation accuracy per epoch, as d2l plots them."""
    if not metrics:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [m["epoch"] for m in metrics]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [m["train_loss"] for m in metrics], label="train loss")
    a.plot(epochs, [m["val_loss"] for m in metrics], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(epochs, [m["train_acc"] for m in metrics], label="train acc")
    b.plot(epochs, [m["val_acc"] for m in metrics], label="val acc")
    b.set_xlabel("epoch")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
