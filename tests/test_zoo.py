"""The model zoo by name (list_models, create_model), pretrained weights from local files and caches (never
downloaded here: state dicts of randomly initialized torchvision/timm models stand in for the real ones), and
timm's feature interface: features_only with feature_info, forward_features, forward_head, reset_classifier."""
import os

import pytest
import torch

import pycnn
from pycnn.zoo import PretrainedError, UnknownModelError

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_list_models_covers_every_shipped_network():
    names = pycnn.list_models()
    assert len(names) == len(set(names)) and names == sorted(names)
    for name in ("resnet50", "mobilenet_v2", "efficientnet_b7", "regnety_400mf", "regnet_y_400mf", "vgg16_bn",
                 "nf_resnet50", "lenet", "regnetx32", "resnext50_32x4d"):
        assert name in names
    assert "xblock" not in names  # blocks of archs/std are not networks
    assert pycnn.list_models("regnety_*gf") == ["regnety_12gf", "regnety_16gf", "regnety_1_6gf", "regnety_32gf",
                                               "regnety_3_2gf", "regnety_4_0gf", "regnety_6_4gf", "regnety_8gf"]
    assert pycnn.list_models(["vgg1?", "lenet"]) == ["lenet", "vgg11", "vgg16", "vgg19"]


def test_zoo_finds_the_archs_installed_inside_the_package(tmp_path, monkeypatch):
    import importlib
    import shutil

    from pycnn.zoo import model_file
    elaborate = importlib.import_module("pycnn.dsl.elaborate")
    shutil.copytree(elaborate.library_dirs()[-1], tmp_path / "pycnn" / "archs")  # a wheel's layout
    monkeypatch.setattr(elaborate, "library_dirs", lambda: [tmp_path / "pycnn" / "archs", tmp_path / "archs"])
    names = pycnn.list_models()
    assert "resnet50" in names and len(names) > 70
    assert str(model_file("resnet50")).startswith(str(tmp_path / "pycnn" / "archs"))


def test_list_models_of_a_user_folder(tmp_path):
    (tmp_path / "mine.arch").write_text("network my_net(input = 3x8x8, classes = 2) {\n"
                                        "    head = conv(4, k=1) gap flatten linear(classes)\n}\n"
                                        "network my_net_wide = my_net()\n")
    assert pycnn.list_models("my_*", paths=[tmp_path]) == ["my_net", "my_net_wide"]
    model = pycnn.create_model("my_net_wide", paths=[tmp_path], classes=3)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        pycnn.list_models(paths=[tmp_path / "missing"])


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet5'; did you mean resnet50"):
        pycnn.create_model("resnet5")
    with pytest.raises(UnknownModelError, match="list_models"):
        pycnn.create_model("zzzz")


def test_create_model_with_overrides():
    model = pycnn.create_model("regnetx32", classes=4, input=(1, 32, 32))
    assert model.ir.name == "regnetx32" and model.ir.overrides == {"classes": 4, "input": (1, 32, 32)}
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def _random_torchvision(name):
    torch.manual_seed(0)
    return torchvision.models.get_model(name).eval()


def test_pretrained_torchvision_from_the_torch_hub_cache(tmp_path, monkeypatch):
    tv = _random_torchvision("resnet18")
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tv.state_dict(), cache / os.path.basename(weights.url))  # where torch.hub keeps the download
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = pycnn.create_model("resnet18", pretrained="torchvision", input=(3, 32, 32), download=False).eval()
    assert torch.equal(model.stem.conv1.weight, tv.conv1.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-4, atol=1e-4)


def test_pretrained_missing_from_cache_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedError, match="not in the cache .* downloads are off"):
        pycnn.create_model("resnet18", pretrained="torchvision", download=False)
    with pytest.raises(PretrainedError, match="torchvision has no model 'resnet18_d2l'"):
        pycnn.create_model("resnet18_d2l", pretrained="torchvision")


def test_pretrained_timm_missing_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PretrainedError, match="timm weights for 'resnet50d' are not in the local cache"):
        pycnn.create_model("resnet50d", pretrained="timm", download=False)
    with pytest.raises(PretrainedError, match="timm has no model 'resnet50e'; did you mean resnet50"):
        pycnn.create_model("resnet50d", pretrained="timm:resnet50e")


def test_pretrained_from_files_with_torchvision_timm_or_pycnn_names(tmp_path):
    tv = _random_torchvision("mobilenet_v2")
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = pycnn.create_model("mobilenet_v2", pretrained=str(tmp_path / "tv.pth"), classes=10)
    assert torch.equal(model.stem.conv1.weight, tv.features[0][0].weight)
    assert model.head.fc1.out_features == 10 and model.ir.params["classes"] == 10  # classifier reset
    torch.manual_seed(1)
    tm = timm.create_model("resnet50d")
    from safetensors.torch import save_file
    save_file(tm.state_dict(), str(tmp_path / "timm.safetensors"))
    model = pycnn.create_model("resnet50d", pretrained=tmp_path / "timm.safetensors")
    assert torch.equal(model.stem.conv1.weight, tm.conv1[0].weight)
    pycnn.save(model, tmp_path / "mine.safetensors")
    again = pycnn.create_model("resnet50d", pretrained=tmp_path / "mine.safetensors")
    assert torch.equal(again.stem.conv1.weight, tm.conv1[0].weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pretrained_weights_that_do_not_fit(tmp_path):
    torch.save(_random_torchvision("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(pycnn.weights.WeightMismatchError, match="mismatch"):
        pycnn.create_model("resnet34", pretrained=str(tmp_path / "r18.pth"))
    pycnn.save(pycnn.create_model("resnet18", classes=5), tmp_path / "five.safetensors")
    with pytest.raises(PretrainedError, match="do not fit network 'resnet18'.*size mismatch for head.fc1"):
        pycnn.create_model("resnet18", pretrained=tmp_path / "five.safetensors", classes=6)
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
    with pytest.raises(PretrainedError, match="weights_only=True"):
        pycnn.create_model("resnet18", pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(PretrainedError, match="nor an existing file"):
        pycnn.create_model("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_features_only_matches_timm():
    model = pycnn.create_model("mobilenet_v2", features_only=True, input=(3, 64, 64), kernels="pycnn").eval()
    ref = timm.create_model("mobilenetv2_100", features_only=True)
    assert model.feature_info.channels() == ref.feature_info.channels() == [16, 24, 32, 96, 320]
    assert model.feature_info.reduction() == ref.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.feature_info.module_name() == ["s1", "s2", "s3", "s5", "s7"]
    assert not any(k.startswith("head.") for k in model.state_dict())  # no classifier in a backbone
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 32, 32), (2, 24, 16, 16), (2, 32, 8, 8), (2, 96, 4, 4),
                                              (2, 320, 2, 2)]


def test_features_only_out_indices_and_weights(tmp_path):
    full = pycnn.create_model("resnet18", input=(3, 32, 32))
    pycnn.save(full, tmp_path / "r18.safetensors")
    model = pycnn.create_model("resnet18", features_only=True, out_indices=(1, -1), input=(3, 32, 32),
                               pretrained=tmp_path / "r18.safetensors").eval()
    assert model.feature_info.channels() == [128, 512] and model.feature_info.reduction() == [8, 32]
    assert [len(model.feature_info), model.out_indices] == [4, (1, 3)]
    assert torch.equal(model.s1.b1.conv1.weight, full.s1.b1.conv1.weight)
    assert [t.shape[1] for t in model(torch.randn(1, 3, 32, 32))] == [128, 512]
    with pytest.raises(ValueError, match="has 4 feature levels"):
        pycnn.create_model("resnet18", features_only=True, out_indices=(4,))
    with pytest.raises(ValueError, match="out_indices is for features_only"):
        pycnn.create_model("resnet18", out_indices=(1,))


def test_forward_features_head_and_reset_classifier(tmp_path):
    model = pycnn.create_model("resnet18", input=(3, 32, 32), kernels="pycnn").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 512, 1, 1)
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, 512)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.ir.params["classes"] == 7
    assert pycnn.summary(model, show=False).rows[-1][2] == (7,)
    pycnn.save(model, tmp_path / "m.safetensors")
    assert pycnn.load(tmp_path / "m.safetensors").head.fc1.out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    with pytest.raises(pycnn.checkpoint.CheckpointError, match="changed after compiling"):
        pycnn.save(model, tmp_path / "n.safetensors")
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="no linear classifier"):
        pycnn.create_model("nin").reset_classifier(3)
