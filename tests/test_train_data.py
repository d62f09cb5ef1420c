"""pycnn.training.data: every loader on files in its real on-disk format, written here (nothing downloaded);
bad datasets get one-line errors; the batches are resized, channel-adapted and normalized."""
import pickle
import struct

import numpy as np
import pytest
import torch

from pycnn.training.data import Batches, DataError, load, read_cifar_batch, split_validation


def write_idx(path, array):
    """An idx file as MNIST ships it: magic (0, 0, type 0x08 = ubyte, dims), big-endian sizes, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root, folder, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar(root, name, n=8):
    rng = np.random.default_rng(1)
    if name == "cifar10":
        base, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
    else:
        base, files, key = root / "cifar-100-python", ["train", "test"], b"fine_labels"
    base.mkdir(parents=True)
    for file in files:
        batch = {b"batch_label": file.encode(), key: [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0] * n
        with open(base / file, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the python-2 era pickles of the real files
    return base


def test_digits_fixed_split():
    d = load("digits")
    assert d.classes == 10 and d.shape == (1, 8, 8)
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == 1797 // 5
    assert d.train.images.dtype == torch.uint8 and int(d.train.images.max()) == 255
    assert torch.equal(load("digits").test.labels, d.test.labels)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    d = load(name, str(tmp_path))
    assert d.shape == (1, 28, 28) and len(d.train) == 12 and len(d.test) == 6 and d.classes == 10
    assert d.train.labels.tolist() == [i % 10 for i in range(12)]


def test_mnist_missing_and_truncated(tmp_path):
    with pytest.raises(DataError, match="no .*MNIST/raw"):
        load("mnist", str(tmp_path))
    with pytest.raises(DataError, match="needs --data-dir"):
        load("mnist")
    write_mnist(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read the idx files"):
        load("mnist", str(tmp_path))


@pytest.mark.parametrize("name,train,classes", [("cifar10", 40, 10), ("cifar100", 8, 100)])
def test_cifar_pickled_batches(tmp_path, name, train, classes):
    write_cifar(tmp_path, name)
    d = load(name, str(tmp_path))
    assert d.shape == (3, 32, 32) and len(d.train) == train and len(d.test) == 8 and d.classes == classes


def test_cifar_refuses_code_in_pickles(tmp_path):
    base = write_cifar(tmp_path, "cifar10")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    with open(base / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        read_cifar_batch(base / "test_batch")
    with pytest.raises(DataError, match="cannot read .*test_batch"):
        load("cifar10", str(tmp_path))


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(2)
    for part, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                size = (12, 10) if i else (10, 10)  # differing sizes are brought to one
                Image.fromarray(rng.integers(0, 256, size[::-1] + (3,)).astype(np.uint8)).save(
                    tmp_path / part / cls / f"{i}.png")
    d = load(f"imagefolder:{tmp_path}")
    assert d.classes == 2 and len(d.train) == 6 and len(d.test) == 4 and d.shape[0] == 3
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="no .*train"):
        load(f"imagefolder:{tmp_path / 'nothing'}")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load("imagenet")


def test_batches_resize_adapt_normalize():
    d = load("digits")
    train, val = split_validation(d.train, 0.1, 0)
    assert len(val) == round(len(d.train) * 0.1) and len(train) + len(val) == len(d.train)
    b = Batches((3, 16, 16), train)
    assert b.adapt_note((1, 8, 8)) == "data: resized 8x8 -> 16x16, channels 1 -> 3 (repeated)"
    x = b(train.images[:64])
    assert x.shape == (64, 3, 16, 16) and torch.equal(x[:, 0], x[:, 2])
    full = Batches((1, 8, 8), train)(train.images)
    assert abs(float(full.mean())) < 1e-4 and abs(float(full.std()) - 1) < 0.05
    assert Batches((1, 8, 8), train).adapt_note((1, 8, 8)) is None
    rgb = Batches((1, 8, 8), d.train)
    assert rgb(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape == (2, 1, 8, 8)
