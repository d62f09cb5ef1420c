"""Self-describing checkpoints: pycnn.save / pycnn.load (safetensors with the .arch source, network name and
overrides in the metadata), and their errors; `import pycnn` gives pycnn.weights; `pycnn --version`."""
import json
import os
import sys

import pytest
import torch

import pycnn
from pycnn.checkpoint import CheckpointError
from random_bn import randomized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """use std
network tiny(input = 3x16x16, classes = 10, width = 8) {
    stem = conv(width, k=3, s=2) bn relu
    stage s1 = 2 x xblock(16, group_width=8) stride 2
    head = avgpool flatten linear(classes)
}
"""


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(TINY)
    return path


def test_round_trip_without_the_arch_file(tiny_file, tmp_path):
    torch.manual_seed(0)
    model = pycnn.compile(str(tiny_file), classes=7, width=16, kernels="pycnn").eval()
    randomized(model)
    ckpt = tmp_path / "m.safetensors"
    pycnn.save(model, ckpt)
    tiny_file.unlink()  # the checkpoint carries the network: the file is not needed any more
    loaded = pycnn.load(ckpt, kernels="pycnn")
    assert loaded.ir.name == "tiny" and loaded.ir.params["classes"] == 7 and loaded.ir.params["width"] == 16
    assert not loaded.training and loaded.backend == "fused"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_metadata_holds_source_network_and_overrides(tiny_file, tmp_path):
    from safetensors import safe_open
    model = pycnn.compile(str(tiny_file), input=(3, 32, 32), classes=5)
    pycnn.save(model, tmp_path / "m.safetensors", extra_metadata={"note": "epoch 3"})
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["arch"] == TINY and meta["network"] == "tiny" and meta["note"] == "epoch 3"
    assert json.loads(meta["overrides"]) == {"input": [3, 32, 32], "classes": 5}
    assert pycnn.load(tmp_path / "m.safetensors").ir.input_shape == (3, 32, 32)


def test_shipped_network_and_reference_backend(tmp_path):
    model = pycnn.compile(os.path.join(ROOT, "archs", "resnext.arch"), input=(3, 32, 32), classes=3)
    pycnn.save(model, tmp_path / "r.safetensors")
    ref = pycnn.load(tmp_path / "r.safetensors", backend="reference")  # `use resnet` found in the shipped archs
    assert ref.backend == "reference" and ref.ir.name == "resnext50_32x4d"
    assert sum(p.numel() for p in ref.parameters()) == model.ir.total_params


def test_features_only_backbone_round_trip(tmp_path):
    backbone = pycnn.create_model("mobilenet_v2", features_only=True, out_indices=(0, 2), input=(3, 32, 32))
    pycnn.save(backbone, tmp_path / "b.safetensors")
    loaded = pycnn.load(tmp_path / "b.safetensors")
    assert loaded.feature_info.channels() == [16, 32] and loaded.out_indices == (0, 2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(loaded(x), backbone.eval()(x)):
            torch.testing.assert_close(a, b)


def test_pickle_foreign_and_broken_files_are_refused(tiny_file, tmp_path):
    model = pycnn.compile(str(tiny_file))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="pickle checkpoint.*never unpickles"):
        pycnn.load(tmp_path / "m.pt")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="no pycnn metadata"):
        pycnn.load(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        pycnn.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        pycnn.load(tmp_path / "missing.safetensors")


def test_tensors_that_do_not_fit_the_network(tiny_file, tmp_path):
    from safetensors.torch import load_file, save_file
    from pycnn.checkpoint import read_metadata
    model = pycnn.compile(str(tiny_file))
    pycnn.save(model, tmp_path / "m.safetensors")
    meta = read_metadata(tmp_path / "m.safetensors")
    tensors = load_file(str(tmp_path / "m.safetensors"))
    tensors["head.fc1.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit network 'tiny'"):
        pycnn.load(tmp_path / "bad.safetensors")


def test_save_refuses_what_is_not_a_pycnn_model(tmp_path):
    with pytest.raises(CheckpointError, match="takes a model built by pycnn"):
        pycnn.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_weights_is_available_after_import_pycnn(monkeypatch):
    monkeypatch.delitem(sys.modules, "pycnn.weights", raising=False)
    monkeypatch.delattr(pycnn, "weights", raising=False)
    assert pycnn.weights.from_torchvision.__name__ == "from_torchvision"  # imported on first use
    assert "pycnn.weights" in sys.modules
    with pytest.raises(AttributeError, match="no attribute 'weigths'"):
        pycnn.weigths


def test_version_flag(capsys):
    from pycnn.cli import main
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"pycnn {pycnn.__version__}"


def test_safetensors_headers_of_any_length_are_not_taken_for_pickles(tmp_path):
    """The header length's first byte can be 0x80 (a pickle's first byte) or "P" (a zip's): still safetensors."""
    from safetensors.torch import save_file

    from pycnn.checkpoint import CheckpointError, read_metadata
    seen = set()
    for pad in range(300):
        path = tmp_path / f"p{pad}.safetensors"
        save_file({"w": torch.zeros(1)}, str(path), metadata={"pad": "x" * pad})
        first = path.read_bytes()[:1]
        if first not in (b"\x80", b"P"):
            continue
        seen.add(first)
        with pytest.raises(CheckpointError, match="not written by pycnn.save"):
            read_metadata(path)
    assert seen == {b"\x80", b"P"}
