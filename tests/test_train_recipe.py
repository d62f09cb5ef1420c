"""pycnn.training.recipe: mixed targets of mixup/cutmix, early stopping on a constructed validation curve,
learning-rate schedules, weight-decay groups, adaptive gradient clipping, EMA."""
import math

import pytest
import torch
from torch import nn

from pycnn.training.recipe import (EMA, EarlyStopping, Recipe, adaptive_clip_, agc_params, augment, cutmix_box,
                                   learning_rate, mix, param_groups)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mixup_targets_match_the_mixed_images():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 4, 4).clone()
    y = torch.tensor([0, 1, 2, 3])
    mixed, target = mix(x, y, 5, Recipe(mixup=0.4), gen())
    # image i is lam * x_i + (1 - lam) * x_{3-i}; its target puts lam on y_i and 1 - lam on y_{3-i}
    lam = float(target[0, 0])
    assert 0 < lam < 1 and torch.allclose(target.sum(1), torch.ones(4))
    for i in range(4):
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[3 - i])
        assert math.isclose(float(target[i, y[i]]), lam, abs_tol=1e-6)
        assert math.isclose(float(target[i, y[3 - i]]), 1 - lam, abs_tol=1e-6)


def test_cutmix_targets_are_the_pasted_area():
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 1
    y = torch.tensor([0, 1])
    for seed in range(20):
        mixed, target = mix(x, y, 2, Recipe(cutmix=1.0), gen(seed))
        pasted = float(mixed[0].mean())  # fraction of image 0 that now holds image 1's pixels
        assert math.isclose(float(target[0, 1]), pasted, abs_tol=1e-6)
        assert math.isclose(float(target[0, 0]), 1 - pasted, abs_tol=1e-6)
    top, bottom, left, right = cutmix_box(8, 8, 0.75, gen())
    assert 0 <= top <= bottom <= 8 and 0 <= left <= right <= 8


def test_label_smoothing_and_no_mixing():
    x, y = torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 2])
    same, target = mix(x, y, 4, Recipe(), gen(), smoothing=0.1)
    assert same is x
    assert torch.allclose(target[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))


def test_early_stopping_on_a_constructed_curve():
    # best at epoch 3 (0.5); with patience 2, epochs 4 and 5 are no better -> stop after epoch 5
    curve = [1.0, 0.7, 0.5, 0.6, 0.55, 0.4, 0.3]
    stopper, stopped_at = EarlyStopping(patience=2), None
    for epoch, loss in enumerate(curve, 1):
        if stopper.step(epoch, loss):
            stopped_at = epoch
            break
    assert stopped_at == 5 and stopper.best_epoch == 3 and stopper.best == 0.5
    never = EarlyStopping(patience=None)
    assert not any(never.step(e, l) for e, l in enumerate(curve, 1))


def test_schedules_with_warmup():
    r = Recipe(epochs=10, lr=1.0, warmup_epochs=1, schedule="cosine")
    assert learning_rate(r, 0, 10) == pytest.approx(0.1) and learning_rate(r, 9, 10) == pytest.approx(1.0)
    assert learning_rate(r, 10, 10) == pytest.approx(1.0)
    assert learning_rate(r, 55, 10) == pytest.approx(0.5)
    assert learning_rate(r, 99, 10) < 0.001
    step = Recipe(epochs=10, lr=1.0, schedule="step", step_size=3, step_gamma=0.1)
    assert [round(learning_rate(step, e * 10, 10), 6) for e in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.1, 0.01, 0.001]
    assert learning_rate(Recipe(schedule="constant", lr=0.3), 500, 10) == 0.3


def test_no_weight_decay_on_norm_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1, False)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert no_decay["weight_decay"] == 0 and len(no_decay["params"]) == 4
    assert len(param_groups(model, 0.1, True)) == 1


def test_adaptive_gradient_clipping():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0]).view(2, 1, 1, 1))
    conv.weight.grad = torch.tensor([0.5, 0.001]).view(2, 1, 1, 1)
    adaptive_clip_([conv.weight], 0.01)
    # unit 0: ||G||/||W|| = 0.5 > 0.01 -> scaled to 0.01; unit 1: 0.001 stays
    assert torch.allclose(conv.weight.grad.flatten(), torch.tensor([0.01, 0.001]))
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(2, 3))
    assert {id(p) for p in agc_params(model)} == {id(model[0].weight), id(model[0].bias)}


def test_ema_and_augment_shapes():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.state["weight"], torch.full((1, 2), 2.0))
    x = torch.randn(5, 3, 8, 8)
    for r in (Recipe(crop="pad", flip=True), Recipe(crop="resized")):
        assert augment(x, r, gen()).shape == x.shape
    shifted = augment(x, Recipe(crop="pad", crop_padding=2), gen())
    assert not torch.equal(shifted, x)
    assert torch.equal(augment(x, Recipe(crop="pad", crop_padding=0), gen()), x)
