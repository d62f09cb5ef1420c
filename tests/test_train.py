"""pycnn.train and the `pycnn train` / `pycnn eval` commands on digits with a tiny network: the run folder,
resume reproducing an uninterrupted run, fused vs reference accuracy, early stopping, one-line errors."""
import json

import pytest
import torch

import pycnn
from pycnn.cli import main
from pycnn.training import checkpoint as ckpt

TINY = """use std
network tiny(input = 1x8x8, classes = 10) {
    stem = conv(16, k=3) bn relu
    stage s1 = 1 x xblock(32, group_width=8) stride 2
    head = avgpool flatten linear(classes)
}
"""
OTHER = TINY.replace("xblock(32", "xblock(16")
FAST = dict(batch_size=32, kernels="pycnn", threads=1, progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.arch"
    path.write_text(TINY)
    return path


def without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in ("img_per_s", "seconds")} for m in metrics]


def test_run_folder_and_resume_reproduce_an_uninterrupted_run(arch, tmp_path, one_thread):
    full = pycnn.train(arch, out=tmp_path / "full", epochs=2, mixup=0.2, crop="pad", flip=True, ema=0.9, **FAST)
    for name in ("network.arch", "options.json", "metrics.csv", "metrics.json", "last.safetensors",
                 "last-ema.safetensors", "last-optimizer.safetensors", "best.safetensors", "state.json",
                 "curves.png", "result.json"):
        assert (full.run_dir / name).is_file(), name
    options = json.loads((full.run_dir / "options.json").read_text())
    assert options["recipe"]["mixup"] == 0.2 and options["overrides"]["classes"] == 10
    assert len((full.run_dir / "metrics.csv").read_text().splitlines()) == 3
    result = json.loads((full.run_dir / "result.json").read_text())
    assert result["test_acc"] == full.test_acc and result["epochs_run"] == 2

    cut = pycnn.train(arch, out=tmp_path / "cut", epochs=2, mixup=0.2, crop="pad", flip=True, ema=0.9,
                      stop_after=1, **FAST)
    assert cut.interrupted and len(cut.metrics) == 1 and (cut.run_dir / "interrupted.safetensors").is_file()
    resumed = pycnn.train(None, resume=tmp_path / "cut", **FAST)
    assert without_timing(resumed.metrics) == without_timing(full.metrics)
    assert resumed.test_acc == full.test_acc and resumed.best_epoch == full.best_epoch


def test_ctrl_c_saves_and_resume_continues(arch, tmp_path, one_thread):
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt  # as if Ctrl-C arrived while epoch 1 was reported
    r = pycnn.train(arch, out=tmp_path / "run", epochs=2, **{**FAST, "log": log})
    assert r.interrupted and "continues after epoch 1" in lines[-1]
    assert ckpt.load_weights(tmp_path / "run" / "interrupted.safetensors")[1]["network"] == "tiny"
    done = pycnn.train(None, resume=tmp_path / "run", **FAST)
    assert [m["epoch"] for m in done.metrics] == [1, 2] and not done.interrupted


@pytest.mark.slow
def test_fused_and_reference_reach_the_same_accuracy(tmp_path, one_thread):
    """The issue's check: same network (the course's RegNetX, at 16x16), digits, 3 epochs: test accuracies within
    1 point (the 359 test images: 1 image = 0.28 points), as the mean over seeds 1-3. One seed alone is not a
    comparison: the two backends round differently in float32 and the runs part ways chaotically (on an Intel
    Xeon, seed 1 gave fused 0.975 against reference 0.961, seed 2 0.958 against 0.972: 5 images either way; the
    means 0.9675 and 0.9656)."""
    accs = {"fused": [], "reference": []}
    for seed in (1, 2, 3):
        for backend in accs:
            r = pycnn.train("archs/regnetx32.arch", input=(1, 16, 16), backend=backend,
                            out=tmp_path / f"{backend}-{seed}", epochs=3, seed=seed, lr=0.02, **FAST)
            accs[backend].append(r.test_acc)
    mean = {backend: sum(a) / len(a) for backend, a in accs.items()}
    assert min(accs["fused"]) > 0.8 and abs(mean["fused"] - mean["reference"]) <= 0.01, accs


def test_early_stopping_stops_at_the_right_epoch(arch, tmp_path, monkeypatch, one_thread):
    """A constructed validation curve: best loss at epoch 2, patience 2 -> the run ends after epoch 4."""
    from pycnn.training import loop
    curve = iter([0.9, 0.5, 0.6, 0.7, 0.4, 0.3])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: (next(curve), 0.5, None, 1.0))
    r = pycnn.train(arch, out=tmp_path / "run", epochs=6, patience=2, **FAST)
    assert r.stopped_early and [m["epoch"] for m in r.metrics] == [1, 2, 3, 4]
    assert [m["val_loss"] for m in r.metrics] == [0.9, 0.5, 0.6, 0.7]


def test_eval_command(arch, tmp_path, capsys, one_thread):
    r = pycnn.train(arch, out=tmp_path / "run", epochs=1, **FAST)
    assert main(["eval", str(r.run_dir), "--kernels", "pycnn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tiny on digits: accuracy {r.test_acc:.4f}") and "img/s" in out
    assert (r.run_dir / "confusion-digits.png").is_file()
    import shutil
    shutil.copy(r.run_dir / "best.safetensors", tmp_path / "copy.safetensors")  # a checkpoint alone, elsewhere
    assert main(["eval", str(tmp_path / "copy.safetensors"), "--confusion", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.startswith(f"tiny on digits: accuracy {r.test_acc:.4f}")
    assert (tmp_path / "c.png").is_file()


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_bad_inputs_get_one_line_errors(arch, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    pycnn.train(arch, out=run, epochs=1, **FAST)
    before = (run / "best.safetensors").read_bytes()
    base = ["train", str(arch), "--epochs", "1", "--kernels", "pycnn"]
    one_line_error(capsys, base + ["--out", str(run)], "exists: pass --overwrite")
    assert (run / "best.safetensors").read_bytes() == before  # nothing lost
    one_line_error(capsys, base + ["--data", "imagenet", "--out", str(tmp_path / "x")], "unknown dataset 'imagenet'")
    one_line_error(capsys, base + ["--data", "mnist", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                   "no ")
    other = tmp_path / "other.arch"
    other.write_text(OTHER)
    one_line_error(capsys, ["train", str(other), "--resume", str(run)], "was trained on another network")
    one_line_error(capsys, ["train", "--resume", str(tmp_path / "nothing")], "not a pycnn run folder")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(before[:200])
    one_line_error(capsys, ["eval", str(corrupt)], "cannot read checkpoint")
    (run / "last.safetensors").write_bytes(b"\x00" * 64)
    one_line_error(capsys, ["train", "--resume", str(run)], "cannot read checkpoint")
    from test_train_data import write_cifar
    write_cifar(tmp_path / "data", "cifar10")
    one_line_error(capsys, base + ["--input", "2x8x8", "--data", "cifar10", "--data-dir", str(tmp_path / "data"),
                                   "--out", str(tmp_path / "y")], "takes 2-channel input; the dataset has 3 channels")
    assert not (tmp_path / "y").exists()


def test_checkpoint_does_not_fit_another_network(arch, tmp_path, one_thread):
    r = pycnn.train(arch, out=tmp_path / "run", epochs=1, **FAST)
    weights, meta = ckpt.load_weights(r.run_dir / "best.safetensors")
    other = pycnn.compile(OTHER, classes=10)
    with pytest.raises(ckpt.CheckpointError, match="does not fit the network"):
        ckpt.load_state_into(other, weights, "best.safetensors")
    model = pycnn.compile(meta["arch"], meta["network"], **ckpt.overrides_of(meta))
    ckpt.load_state_into(model, weights, "best.safetensors")
    assert torch.equal(model.state_dict()["head.fc1.weight"], weights["head.fc1.weight"])
    loaded = pycnn.load(r.run_dir / "best.safetensors")  # a run's checkpoint is a pycnn.save checkpoint
    assert torch.equal(loaded.state_dict()["head.fc1.weight"], weights["head.fc1.weight"])


@pytest.mark.slow
def test_ddp_two_processes_gloo(arch, tmp_path):
    """torchrun -m pycnn train: two CPU processes (gloo) split each epoch; rank 0 writes the run folder."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "pycnn", "train", str(arch), "--out", str(tmp_path / "run"), "--epochs",
                          "2", "--batch-size", "32", "--kernels", "pycnn", "--threads", "1"],
                         cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("best val acc") == 1  # one line: rank 0's
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics) == 2 and metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test_acc"] > 0.3


@pytest.mark.parametrize("command", ["train", "eval", "explore"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith(f"usage: pycnn {command}")


def test_every_recipe_option_trains(arch, tmp_path, one_thread):
    import math
    r = pycnn.train(arch, out=tmp_path / "run", epochs=2, optimizer="adamw", lr=3e-3, schedule="step", step_size=1,
                    warmup_epochs=0.5, amp="bf16", channels_last=True, agc=0.01, clip_grad=1.0, cutmix=1.0, mixup=0.2,
                    crop="resized", flip=True, label_smoothing=0.1, decay_norm_and_bias=True, **FAST)
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in r.metrics)
    assert r.metrics[1]["lr"] == pytest.approx(3e-4)
    with pytest.raises(pycnn.training.TrainError, match="fp16 needs CUDA"):
        pycnn.train(arch, out=tmp_path / "fp16", epochs=1, amp="fp16", device="cpu", **FAST)
    assert not (tmp_path / "fp16").exists()


@pytest.mark.parametrize("flags,cached", [([], True), (["--no-cpu-cache"], False)])
def test_train_command_runs_with_the_cpu_cache_and_puts_it_back(arch, tmp_path, monkeypatch, flags, cached):
    from pycnn import allocator
    from pycnn.training import loop
    seen = []

    def fake_train(*args, **kwargs):
        seen.append((allocator.cpu_cache_stats()["enabled"], allocator.network_cache()))
        raise KeyboardInterrupt  # stands in for the run; the allocator must come back all the same

    monkeypatch.setattr(loop, "train", fake_train)
    with pytest.raises(KeyboardInterrupt):
        main(["train", str(arch), "--out", str(tmp_path / "run")] + flags)
    assert seen == [(cached, cached)]  # --no-cpu-cache: the evaluations' forwards without their scope too
    assert not allocator.cpu_cache_stats()["enabled"] and allocator.network_cache()
