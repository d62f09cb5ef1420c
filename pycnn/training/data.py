"""Datasets for `pycnn train`: whole splits held in memory as uint8 image tensors (N, C, H, W) and int64 labels.

Specs: `digits` (scikit-learn's bundled 8x8 digits; no download), `mnist`, `fashion-mnist` (torchvision's
classes over the idx files under --data-dir), `cifar10`, `cifar100` (the pickled batches of the python
version, read by a restricted unpickler that builds nothing but numpy arrays, lists, dicts and strings),
`imagefolder:DIR` (DIR/train/<class>/* and DIR/val/<class>/*). Each gives a train and a test split; the
validation split is carved out of train by `split_validation`.

`Batches` turns a split into batches at the network's input: resized (bilinear), channels adapted (grey to
RGB by repetition, RGB to grey by the mean), normalized with the training split's per-channel statistics.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder:DIR")


class DataError(Exception):
    """A dataset that cannot be loaded; the message is one line for the user."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: int

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def load(spec: str, data_dir: Optional[str] = None, download: bool = False) -> Dataset:
    """The dataset named by `spec` (see DATASETS); raises DataError with a one-line message."""
    name = spec.lower()
    if name == "digits":
        return _digits()
    if name.startswith("imagefolder:"):
        return _imagefolder(spec.split(":", 1)[1])
    if name in ("mnist", "fashion-mnist"):
        return _mnist(name, _data_dir(data_dir, name), download)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, _data_dir(data_dir, name), download)
    raise DataError(f"unknown dataset {spec!r}: expected one of {', '.join(DATASETS)}")


def _data_dir(data_dir: Optional[str], name: str) -> Path:
    if not data_dir:
        raise DataError(f"dataset {name} needs --data-dir (add --download to fetch it there)")
    return Path(data_dir)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    images = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    # scikit-learn ships no test split: a fixed 20% (seed 0), the same on every machine
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    whole = Split(images, labels)
    return Dataset("digits", whole.subset(order[n_test:]), whole.subset(order[:n_test]), 10)


def _mnist(name: str, root: Path, download: bool) -> Dataset:
    from torchvision import datasets
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    if not download and not (root / cls.__name__ / "raw").is_dir():
        raise DataError(f"{name}: no {root / cls.__name__ / 'raw'} with the idx files (add --download to fetch them)")
    try:
        splits = [cls(str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError, ValueError) as e:
        raise DataError(f"{name}: cannot read the idx files under {root / cls.__name__ / 'raw'}: {e}") from None
    train, test = (Split(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in splits)
    return Dataset(name, train, test, 10)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches without running arbitrary code: only numpy's array reconstruction."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> dict:
    """One pickled CIFAR batch as a dict with str keys."""
    with open(path, "rb") as f:
        d = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    if not isinstance(d, dict):
        raise pickle.UnpicklingError("not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


CIFAR = {  # folder, train files, test file, label key, classes
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", 100),
}


def _cifar(name: str, root: Path, download: bool) -> Dataset:
    folder, train_files, test_file, key, classes = CIFAR[name]
    if download:
        from torchvision import datasets
        (datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)(str(root), train=True, download=True)
    base = root / folder
    if not base.is_dir():
        raise DataError(f"{name}: no {base} with the pickled batches (add --download to fetch them)")

    def split(files):
        images, labels = [], []
        for file in files:
            try:
                d = read_cifar_batch(base / file)
                images.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(d[key], dtype=np.int64))
            except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
                raise DataError(f"{name}: cannot read {base / file}: {e}") from None
        return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))

    return Dataset(name, split(train_files), split([test_file]), classes)


def _imagefolder(directory: str) -> Dataset:
    from torchvision import datasets
    root = Path(directory)
    splits = []
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataError(f"imagefolder: no {root / part} (expected {root}/train/<class>/... and {root}/val/<class>/...)")
        try:
            folder = datasets.ImageFolder(str(root / part))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"imagefolder: {e}") from None
        splits.append(folder)
    if splits[0].classes != splits[1].classes:
        raise DataError(f"imagefolder: train/ and val/ have different class folders")
    out = []
    for folder in splits:
        images = []
        for path, _ in folder.samples:
            with _open_image(path) as img:
                images.append(torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1))
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) > 1:  # differing sizes: bring all to the most common one; the batches resize again anyway
            h, w = max(sizes, key=lambda s: sum(tuple(i.shape) == s for i in images))[1:]
            images = [i if i.shape[1:] == (h, w) else
                      F.interpolate(i[None].float(), size=(h, w), mode="bilinear", antialias=True,
                                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8) for i in images]
        out.append(Split(torch.stack(images), torch.tensor(folder.targets, dtype=torch.int64)))
    return Dataset(f"imagefolder:{directory}", out[0], out[1], len(splits[0].classes))


def _open_image(path):
    from PIL import Image
    return Image.open(path)


def split_validation(train: Split, fraction: float, seed: int) -> Tuple[Split, Optional[Split]]:
    """(train, validation): `fraction` of the training split held out, chosen with `seed`."""
    if fraction <= 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(train) * fraction)))
    return train.subset(order[n_val:]), train.subset(order[:n_val])


class Batches:
    """Float batches at the network's input (C, H, W): resized, channels adapted, normalized."""

    def __init__(self, input_shape, stats_from: Split):
        self.channels, self.height, self.width = input_shape
        x = stats_from.images.float() / 255
        self.mean = x.mean((0, 2, 3)).view(1, -1, 1, 1)
        self.std = x.std((0, 2, 3)).clamp_min(1e-3).view(1, -1, 1, 1)

    def adapt_note(self, source_shape) -> Optional[str]:
        """One line describing what is done to the images, or None when they already fit."""
        c, h, w = source_shape
        notes = []
        if (h, w) != (self.height, self.width):
            notes.append(f"resized {h}x{w} -> {self.height}x{self.width}")
        if c != self.channels:
            notes.append(f"channels {c} -> {self.channels} ({'repeated' if c == 1 else 'averaged'})")
        return ("data: " + ", ".join(notes)) if notes else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - self.mean) / self.std
        if x.shape[-2:] != (self.height, self.width):
            shrink = x.shape[-2] > self.height or x.shape[-1] > self.width
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False,
                              antialias=shrink)
        c = x.shape[1]
        if c != self.channels:
            if c == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise DataError(f"cannot adapt {c}-channel images to a {self.channels}-channel network input")
        return x.contiguous()


def check_adaptable(source_channels: int, input_shape) -> None:
    """DataError unless images with `source_channels` channels can be fed to a network taking `input_shape`."""
    if len(input_shape) != 3:
        raise DataError(f"the network takes input of shape {'x'.join(map(str, input_shape))}; image datasets need "
                        f"CxHxW (pass --input, e.g. 1x32x32)")
    c = input_shape[0]
    if source_channels != c and source_channels != 1 and c != 1:
        raise DataError(f"the network takes {c}-channel input; the dataset has {source_channels} channels "
                        f"(pass --input {source_channels}x{input_shape[1]}x{input_shape[2]})")
